"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM)."""

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import openai

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
# Local servers (Ollama, llama.cpp) want no key, but the SDK refuses to start without one.
_PLACEHOLDER_KEY = "unused"


@functools.lru_cache(maxsize=16)
def _client(
    base_url: str, api_key: str, headers: tuple[tuple[str, str], ...], pid: int
) -> openai.OpenAI:
    # One client (one connection pool) per server, key and process: a client per call pays
    # a new connection and TLS handshake every time, and a pool must not cross a fork.
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key or _PLACEHOLDER_KEY,
        max_retries=0,
        default_headers=dict(headers) or None,
    )


class OpenAICompatibleProvider(RemoteProvider):
    """Calls ``POST {base_url}/chat/completions`` once per call; retries live outside.

    Every field of ``params`` is passed on in the request body as given (tools,
    response_format, n, a server's own extensions), and the answer comes back whole:
    the completion's JSON, or each streamed chunk's choices.
    """

    default_name = "openai"

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        # The SDK's own client, auth and errors, without its typed request and response
        # models: the completion's JSON is passed on as the server wrote it.
        try:
            with self._translated_errors():
                completion = self._sdk().post(
                    "/chat/completions",
                    body=_body(model, messages, params),
                    cast_to=object,
                    options={"timeout": timeout},
                )
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
            with self._translated_errors():
                body = self._sdk().post(
                    "/embeddings",
                    body={**params, "model": model},
                    cast_to=object,
                    options={"timeout": timeout},
                )
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
        with self._translated_errors():
            chunks = self._sdk().post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.Stream[object],
                options={"timeout": timeout},
            )
            with chunks:
                for chunk in chunks:
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

    def _sdk(self) -> openai.OpenAI:
        return _client(self.base_url, self._api_key, self._headers, os.getpid())

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except openai.OpenAIError as error:
            raise self._call_error(error) from error

    def _call_error(self, error: openai.OpenAIError) -> ProviderCallError:
        if isinstance(error, openai.APITimeoutError):
            return ProviderCallError(
                f"{self.name} did not answer in time", error_type="timeout", retryable=True
            )
        if isinstance(error, openai.APIConnectionError):
            return ProviderCallError(
                f"could not reach {self.name}", error_type="connection_error", retryable=True
            )
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            error_type, retryable = status_error_type(status)
            if error.code == "context_length_exceeded":
                error_type = "context_length_exceeded"
            # A refusal's message tells the client what to fix: it is kept whole.
            limit = REFUSAL_DETAIL_LIMIT if 400 <= status < 500 else DETAIL_LIMIT
            detail = error_detail(error.body, secret=self._api_key, limit=limit)
            return ProviderCallError(
                f"{self.name} answered {status}" + (f": {detail}" if detail else ""),
                error_type=error_type,
                status=status,
                retryable=retryable,
                retry_after=retry_after_seconds(error.response.headers) if retryable else None,
                param=error.param if isinstance(error.param, str) else None,
            )
        if isinstance(error, openai.APIError):
            # An error event in the middle of a stream: the server failed after it said 200.
            detail = error_detail(error.body, secret=self._api_key) or "stream interrupted"
            return ProviderCallError(
                f"{self.name} failed mid-answer: {detail}",
                error_type="server_error",
                retryable=True,
            )
        return ProviderCallError(
            f"{self.name} call failed: {error_detail(str(error), secret=self._api_key)}",
            error_type="provider_error",
        )


def _body(model: str, messages: list[Message], params: dict[str, Any]) -> dict[str, Any]:
    """The request as the caller sent it, every field passed on, for ``model``."""
    body = {key: value for key, value in params.items() if key not in _OWN_FIELDS}
    return {**body, "model": model, "messages": messages}
