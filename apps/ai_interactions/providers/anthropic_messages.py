"""Anthropic's Messages API through the official SDK."""

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2

from apps.ai_interactions.providers.base import Generation, Message, ProviderCallError, StreamChunk
from apps.ai_interactions.providers.retry import (
    error_detail,
    retry_after_seconds,
    status_error_type,
)

# Anthropic requires a limit on every call; OpenAI-style callers often give none.
DEFAULT_MAX_TOKENS = 1024
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
# Error types Anthropic can send in an ``error`` event after the stream has started.
_STREAM_ERROR_TYPES = {
    "rate_limit_error": ("rate_limited", True),
    "overloaded_error": ("server_error", True),
    "api_error": ("server_error", True),
    "timeout_error": ("timeout", True),
}


@functools.lru_cache(maxsize=16)
def _client(base_url: str, api_key: str, pid: int) -> anthropic.Anthropic:
    # One client (one connection pool) per server, key and process: a client per call pays
    # a new connection and TLS handshake every time, and a pool must not cross a fork.
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


class AnthropicProvider:
    """Calls ``POST {base_url}/v1/messages`` once per call; retries live outside.

    System messages become the ``system`` parameter (joined by blank lines). Of the
    caller's params, ``max_tokens`` (default 1024), ``temperature``, ``top_p``, ``top_k``
    and ``stop`` (as ``stop_sequences``) are sent; OpenAI-only fields are dropped, since
    Anthropic rejects fields it does not know.
    """

    def __init__(self, *, name: str = "anthropic", base_url: str, api_key: str) -> None:
        self.name = name
        self.base_url = base_url
        self._api_key = api_key

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        with self._translated_errors():
            message = self._sdk().messages.create(
                model=model, timeout=timeout, **_request_fields(messages, params)
            )
        text = "".join(block.text for block in message.content if block.type == "text")
        return Generation(
            text=text,
            finish_reason=_finish_reason(message.stop_reason),
            input_tokens=_input_tokens(message.usage),
            output_tokens=message.usage.output_tokens or 0,
        )

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        stop_reason = None
        input_tokens = output_tokens = 0
        with self._translated_errors():
            events = self._sdk().messages.create(
                model=model, timeout=timeout, stream=True, **_request_fields(messages, params)
            )
            with events:
                for event in events:
                    if event.type == "message_start":
                        input_tokens = _input_tokens(event.message.usage)
                        output_tokens = event.message.usage.output_tokens or 0
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            yield StreamChunk(delta=event.delta.text)
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        # message_delta counts are cumulative; input is repeated only sometimes.
                        output_tokens = event.usage.output_tokens or output_tokens
                        if event.usage.input_tokens is not None:
                            input_tokens = _input_tokens(event.usage)
        yield StreamChunk(
            finish_reason=_finish_reason(stop_reason),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def _sdk(self) -> anthropic.Anthropic:
        if not self._api_key:
            raise ProviderCallError(
                f"no API key is configured for {self.name}", error_type="authentication_error"
            )
        return _client(self.base_url, self._api_key, os.getpid())

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (anthropic.AnthropicError, httpx2.TransportError) as error:
            raise self._call_error(error) from error

    def _call_error(self, error: Exception) -> ProviderCallError:
        # The SDK wraps transport errors of the request, not those while reading a stream.
        if isinstance(error, anthropic.APITimeoutError | httpx2.TimeoutException):
            return ProviderCallError(
                f"{self.name} did not answer in time", error_type="timeout", retryable=True
            )
        if isinstance(error, anthropic.APIConnectionError | httpx2.TransportError):
            return ProviderCallError(
                f"could not reach {self.name}", error_type="connection_error", retryable=True
            )
        if isinstance(error, anthropic.APIStatusError):
            status = error.status_code
            detail = error_detail(error.body, secret=self._api_key)
            if status < 400:
                # An ``error`` event after the 200 status line, e.g. overloaded mid-stream.
                error_type, retryable = _STREAM_ERROR_TYPES.get(
                    error.type or "", ("server_error", True)
                )
                return ProviderCallError(
                    f"{self.name} failed mid-answer: {detail or error.type}",
                    error_type=error_type,
                    retryable=retryable,
                )
            error_type, retryable = status_error_type(status)
            return ProviderCallError(
                f"{self.name} answered {status}" + (f": {detail}" if detail else ""),
                error_type=error_type,
                status=status,
                retryable=retryable,
                retry_after=retry_after_seconds(error.response.headers) if retryable else None,
            )
        return ProviderCallError(
            f"{self.name} call failed: {error_detail(str(error), secret=self._api_key)}",
            error_type="provider_error",
        )


def _request_fields(messages: list[Message], params: dict[str, Any]) -> dict[str, Any]:
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
    fields: dict[str, Any] = {
        "messages": [
            {"role": m["role"], "content": m["content"]}
            for m in messages
            if m.get("role") != "system"
        ],
        "max_tokens": int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
    }
    if system:
        fields["system"] = system
    stop = params.get("stop")
    if stop:
        fields["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    # This SDK has no typed sampling arguments; the API still takes them as body fields.
    sampling = {key: params[key] for key in ("temperature", "top_p", "top_k") if key in params}
    if sampling:
        fields["extra_body"] = sampling
    return fields


def _finish_reason(stop_reason: str | None) -> str:
    if stop_reason is None:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def _input_tokens(usage: Any) -> int:
    # Anthropic reports cached prompt tokens apart; the prompt's size is their sum.
    return (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )
