"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM)."""

import contextlib
import functools
import inspect
import os
from collections.abc import Iterator
from typing import Any

import openai
from openai.resources.chat.completions import Completions

from apps.ai_interactions.providers.base import Generation, Message, ProviderCallError, StreamChunk
from apps.ai_interactions.providers.retry import (
    error_detail,
    retry_after_seconds,
    status_error_type,
)

# The provider sets these itself; a caller's value for them is ignored.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})
# Keyword arguments of ``create()`` that configure the SDK rather than name a body field.
_SDK_OPTIONS = frozenset({"self", "timeout", "extra_headers", "extra_query", "extra_body"})
_TYPED_FIELDS = frozenset(inspect.signature(Completions.create).parameters) - _SDK_OPTIONS
# Local servers (Ollama, llama.cpp) want no key, but the SDK refuses to start without one.
_PLACEHOLDER_KEY = "unused"


@functools.lru_cache(maxsize=16)
def _client(base_url: str, api_key: str, pid: int) -> openai.OpenAI:
    # One client (one connection pool) per server, key and process: a client per call pays
    # a new connection and TLS handshake every time, and a pool must not cross a fork.
    return openai.OpenAI(base_url=base_url, api_key=api_key or _PLACEHOLDER_KEY, max_retries=0)


class OpenAICompatibleProvider:
    """Calls ``POST {base_url}/chat/completions`` once per call; retries live outside.

    ``params`` are passed through: fields the SDK knows as keyword arguments, anything
    else (a server's own extensions) in the request body as given.
    """

    def __init__(self, *, name: str = "openai", base_url: str, api_key: str) -> None:
        self.name = name
        self.base_url = base_url
        self._api_key = api_key

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        # The SDK's own client, auth and errors, without its typed request and response
        # models: a completion's JSON is read here (a millisecond less per call, measured).
        body = {key: value for key, value in params.items() if key not in _OWN_FIELDS}
        try:
            with self._translated_errors():
                completion = self._sdk().post(
                    "/chat/completions",
                    body={**body, "model": model, "messages": messages},
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
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            # ValueError includes a 200 whose body is not JSON at all.
            raise ProviderCallError(
                f"{self.name} answered without a choice", error_type="invalid_response", status=200
            ) from None

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        stream_options = {**(params.get("stream_options") or {}), "include_usage": True}
        finish_reason = None
        input_tokens = output_tokens = 0
        with self._translated_errors():
            chunks = self._sdk().chat.completions.create(
                model=model,
                messages=messages,
                timeout=timeout,
                stream=True,
                stream_options=stream_options,
                **_request_fields(params),
            )
            with chunks:
                for chunk in chunks:
                    if chunk.usage:
                        input_tokens = chunk.usage.prompt_tokens or 0
                        output_tokens = chunk.usage.completion_tokens or 0
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    if choice.delta and choice.delta.content:
                        yield StreamChunk(delta=choice.delta.content)
        yield StreamChunk(
            finish_reason=finish_reason or "stop",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def _sdk(self) -> openai.OpenAI:
        return _client(self.base_url, self._api_key, os.getpid())

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
            detail = error_detail(error.body, secret=self._api_key)
            return ProviderCallError(
                f"{self.name} answered {status}" + (f": {detail}" if detail else ""),
                error_type=error_type,
                status=status,
                retryable=retryable,
                retry_after=retry_after_seconds(error.response.headers) if retryable else None,
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


def _request_fields(params: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    extra_body: dict[str, Any] = {}
    for key, value in params.items():
        if key in _OWN_FIELDS:
            continue
        if key in _TYPED_FIELDS:
            fields[key] = value
        else:
            extra_body[key] = value
    if extra_body:
        fields["extra_body"] = extra_body
    return fields
