"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM)."""

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool, connection_from_url
from urllib3.util import parse_url

from apps.ai_interactions.providers.base import (
    Generation,
    Message,
    ProviderCallError,
    RemoteProvider,
    StreamChunk,
)
from apps.ai_interactions.providers.retry import (
    DETAIL_LIMIT,
    REFUSAL_DETAIL_LIMIT,
    error_detail,
    retry_after_seconds,
    status_error_type,
)

# The provider sets these itself; a caller's value for them is ignored.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})
# A chunk's fields that ContextOS sets (or reads) itself; the others are passed on.
_CHUNK_OWN_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage"})
# Local servers (Ollama, llama.cpp) want no key; some refuse a request without one.
_PLACEHOLDER_KEY = "unused"


@functools.lru_cache(maxsize=16)
def _pool(
    base_url: str, api_key: str, headers: tuple[tuple[str, str], ...], pid: int
) -> tuple[HTTPConnectionPool, str, dict[str, str]]:
    """The kept-alive connections to the server of ``base_url`` for a key and process (a
    pool must not cross a fork), the path every request's starts with, and the headers of
    every request.

    The server's own pool, not a ``PoolManager``: a call is one POST to one server, and
    the manager's work per request (the URL parsed, its pools looked up under a lock, the
    headers copied) was 70 us of each call's CPU here, before the 50 ms wait as after it.
    """
    return (
        connection_from_url(base_url, maxsize=32),
        (parse_url(base_url).path or "").rstrip("/"),
        {
            "Authorization": f"Bearer {api_key or _PLACEHOLDER_KEY}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "ContextOS",
            **dict(headers),
        },
    )


class OpenAICompatibleProvider(RemoteProvider):
    """Calls ``POST {base_url}/chat/completions`` once per call; retries live outside.

    Every field of ``params`` is passed on in the request body as given (tools,
    response_format, n, a server's own extensions), and the answer comes back whole:
    the completion's JSON, or each streamed chunk's choices.

    Each call is one POST through urllib3, the server's JSON (or server-sent events, an
    error event midway included) read as it is. The OpenAI SDK's request and response
    machinery took 1.2 ms a call against a local server where urllib3 takes 0.5 ms (the
    provider stage of a gateway call in ``make bench``: 2.1 ms before, 1.0 ms after),
    for nothing a JSON POST needs.
    """

    default_name = "openai"

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        # The completion's JSON is passed on as the server wrote it.
        try:
            completion = self._post("/chat/completions", _body(model, messages, params), timeout)
            choice = completion["choices"][0]
            content = choice["message"].get("content")
            usage = completion.get("usage") or {}
            return Generation(
                text=content if isinstance(content, str) else "",
                finish_reason=choice.get("finish_reason") or "stop",
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                body=completion,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            # ValueError includes a 200 whose body is not JSON at all.
            raise ProviderCallError(
                f"{self.name} answered without a choice", error_type="invalid_response", status=200
            ) from None

    def embed(self, *, model: str, params: dict[str, Any], timeout: float) -> Generation:
        try:
            body = self._post("/embeddings", {**params, "model": model}, timeout)
            tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
            if not isinstance(body["data"], list):
                raise TypeError
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ProviderCallError(
                f"{self.name} answered without embeddings",
                error_type="invalid_response",
                status=200,
            ) from None
        return Generation(
            text="", finish_reason="stop", input_tokens=tokens, output_tokens=0, body=body
        )

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        body = _body(model, messages, params)
        body["stream"] = True
        body["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
        finish_reason = None
        input_tokens = output_tokens = 0
        usage: dict[str, Any] | None = None
        for chunk in self._events(self._request("/chat/completions", body, timeout, stream=True)):
            if not isinstance(chunk, dict):
                continue
            if chunk.get("usage"):
                usage = chunk["usage"]
                input_tokens = int(usage.get("prompt_tokens") or 0)
                output_tokens = int(usage.get("completion_tokens") or 0)
            choices = chunk.get("choices")
            if not choices:
                continue
            first = next((c for c in choices if c.get("index", 0) == 0), {})
            finish_reason = first.get("finish_reason") or finish_reason
            text = (first.get("delta") or {}).get("content")
            yield StreamChunk(
                delta=text if isinstance(text, str) else "",
                choices=choices,
                extra={k: v for k, v in chunk.items() if k not in _CHUNK_OWN_FIELDS},
            )
        yield StreamChunk(
            finish_reason=finish_reason or "stop",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage=usage,
        )

    def _post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        """POST ``body`` as JSON to the server's ``path``: its JSON answer (ValueError when
        it is not JSON), or the :class:`ProviderCallError` of a failure."""
        return json.loads(self._request(path, body, timeout).data)

    def _request(
        self, path: str, body: dict[str, Any], timeout: float, *, stream: bool = False
    ) -> urllib3.BaseHTTPResponse:
        """POST ``body`` as JSON to the server's ``path``; its 2xx response (``stream``:
        its body still to read), else the :class:`ProviderCallError` of the failure."""
        pool, prefix, headers = _pool(self.base_url, self._api_key, self._headers, os.getpid())
        with self._translated_transport_errors():
            response = pool.urlopen(
                "POST",
                prefix + path,
                body=json.dumps(body).encode(),
                headers={**headers, "Accept": "text/event-stream"} if stream else headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
                preload_content=not stream,
            )
            if 200 <= response.status < 300:
                return response
            data = response.data if not stream else response.read()
            response.release_conn()
        try:
            answer: object = json.loads(data)
        except ValueError:
            answer = data.decode(errors="replace").strip()
        raise self._status_error(response.status, answer, response.headers)

    def _events(self, response: urllib3.BaseHTTPResponse) -> Iterator[Any]:
        """The JSON data of each server-sent event of ``response``, up to ``[DONE]``; an
        error event raises (the server failed after its 200). The response is closed
        however the reading ends."""
        try:
            with self._translated_transport_errors():
                for data in _sse_data(response):
                    if data.startswith("[DONE]"):
                        _read_to_the_end(response)
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise ProviderCallError(
                            f"{self.name} sent an event that is not JSON",
                            error_type="invalid_response",
                            status=200,
                        ) from None
                    if isinstance(event, dict) and event.get("error"):
                        detail = error_detail(event["error"], secret=self._api_key)
                        raise ProviderCallError(
                            f"{self.name} failed mid-answer: {detail or 'stream interrupted'}",
                            error_type="server_error",
                            retryable=True,
                        )
                    yield event
        finally:
            response.close()

    @contextlib.contextmanager
    def _translated_transport_errors(self) -> Iterator[None]:
        try:
            yield
        except urllib3.exceptions.NewConnectionError:  # refused (a ConnectTimeoutError too)
            raise self._unreachable() from None
        except urllib3.exceptions.TimeoutError:
            raise self._timeout() from None
        except urllib3.exceptions.HTTPError:
            raise self._unreachable() from None

    def _timeout(self) -> ProviderCallError:
        return ProviderCallError(
            f"{self.name} did not answer in time", error_type="timeout", retryable=True
        )

    def _unreachable(self) -> ProviderCallError:
        return ProviderCallError(
            f"could not reach {self.name}", error_type="connection_error", retryable=True
        )

    def _status_error(
        self, status: int, body: object, headers: Mapping[str, str]
    ) -> ProviderCallError:
        """A server's error answer: its status, and its body (``{"error": {...}}``, the
        object inside it, or text)."""
        error_type, retryable = status_error_type(status)
        error = body.get("error", body) if isinstance(body, dict) else body
        fields = error if isinstance(error, dict) else {}
        if fields.get("code") == "context_length_exceeded":
            error_type = "context_length_exceeded"
        # A refusal's message tells the client what to fix: it is kept whole.
        limit = REFUSAL_DETAIL_LIMIT if 400 <= status < 500 else DETAIL_LIMIT
        detail = error_detail(error, secret=self._api_key, limit=limit)
        param = fields.get("param")
        return ProviderCallError(
            f"{self.name} answered {status}" + (f": {detail}" if detail else ""),
            error_type=error_type,
            status=status,
            retryable=retryable,
            retry_after=retry_after_seconds(headers) if retryable else None,
            param=param if isinstance(param, str) else None,
        )


# How long the end of a stream's body may take to follow its ``[DONE]``, and how much of
# it is read (the last bytes of its chunked encoding, at most a few).
_STREAM_END_SECONDS = 0.2
_STREAM_END_BYTES = 65536


def _read_to_the_end(response: urllib3.BaseHTTPResponse) -> None:
    """Read what is left of a stream's body after its ``[DONE]``: once the body has ended,
    urllib3 gives the connection back to the pool, and the next call reuses it (no new
    connection, nor TLS handshake, per stream). A server that does not end its body soon,
    or sends more, has the connection closed instead when the response is."""
    sock = getattr(response.connection, "sock", None)
    with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):
        if sock is not None:  # the next request on the connection sets its own timeout
            sock.settimeout(_STREAM_END_SECONDS)
        left = _STREAM_END_BYTES
        while left > 0 and (rest := response.read1(left)):
            left -= len(rest)


def _sse_data(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
    """The ``data`` of each server-sent event, as each arrives (its lines joined)."""
    pending = b""
    data: list[str] = []
    while chunk := response.read1(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:  # a blank line ends an event
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append((value[1:] if value.startswith(b" ") else value).decode())
    if pending.startswith(b"data:"):
        value = pending[5:]
        data.append((value[1:] if value.startswith(b" ") else value).decode())
    if data:
        yield "\n".join(data)


def _body(model: str, messages: list[Message], params: dict[str, Any]) -> dict[str, Any]:
    """The request as the caller sent it, every field passed on, for ``model``."""
    body = {key: value for key, value in params.items() if key not in _OWN_FIELDS}
    return {**body, "model": model, "messages": messages}
