"""OpenAI-compatible views: parse the request, call the AI services, answer in OpenAI's shape.

Same API keys, cache and recording as the REST API; errors in OpenAI's shape. Every
field of the request reaches the provider as sent (tools, response_format, n, unknown
ones), and the provider's whole answer comes back.
"""

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import request_api_key
from apps.ai_interactions.catalog import model_list_for
from apps.ai_interactions.gateway import (
    GatewayCall,
    GatewayView,
    checked_body,
    gateway_answer,
    gateway_streamed,
    known_model,
    with_header_tags,
    with_rate_limits,
)
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.openai_api.serializers import (
    ChatCompletionRequestSchema,
    ChatCompletionSchema,
    EmbeddingListSchema,
    EmbeddingRequestSchema,
    ModelListSchema,
    OpenAIErrorSchema,
    ServerSentEventSchema,
)
from apps.ai_interactions.providers.base import (
    Message,
    ProviderCallError,
    StreamChunk,
)
from apps.ai_interactions.serializers import (
    CONTENT_SHAPE,
    ROLES,
    GatewayParamsSerializer,
    invalid_role_message,
    one_of,
    response_format_problem,
    tool_choice_problem,
    tools_problem,
)
from apps.ai_interactions.services import (
    Chunks,
    embedding_create,
)
from contextos.exceptions import ValidationFailed
from contextos.schema import error_responses
from contextos.timing import stage

logger = logging.getLogger(__name__)

# Fields ContextOS itself reads; every other field is passed on to the provider as sent.
OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "cache", "metadata"})
# Fields checked before they reach a provider, so that a bad value is a clear 400 here.
CHECKED_PARAMS = ("temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "n")


def _checked_content(content: Any) -> None:
    """A message's content: a string, None, or a list of parts (objects with a ``type``)."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list) or not all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        raise ValidationFailed(CONTENT_SHAPE)


def _checked_message(message: Any) -> Message:
    if not isinstance(message, dict):
        raise ValidationFailed("Each message must be an object with a 'role'.")
    role = message.get("role")
    if not isinstance(role, str):
        raise ValidationFailed(f"Each message needs a 'role': use {one_of(ROLES)}.")
    if role not in ROLES:
        raise ValidationFailed(invalid_role_message(role, ROLES))
    _checked_content(message.get("content"))
    calls = message.get("tool_calls", [])
    if not isinstance(calls, list) or not all(
        isinstance(call, dict) and isinstance(call.get("function"), dict) for call in calls
    ):
        raise ValidationFailed(
            "A message's 'tool_calls' must be a list of calls, each with a 'function' object."
        )
    return message


def _cache_wanted(body: dict[str, Any], cache_control: str) -> bool:
    cache = body.get("cache", True)
    if not isinstance(cache, bool):
        raise ValidationFailed("'cache' must be true or false.")
    return cache and "no-store" not in cache_control.lower()


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValidationFailed("'metadata' must be an object.")
    return metadata


def _checked_tools(params: dict[str, Any]) -> None:
    """``tools``, ``tool_choice`` and ``response_format`` in the shapes a provider reads
    (a shape it cannot read is the client's error, not a 500)."""
    for name, problem_of in (
        ("tools", tools_problem),
        ("tool_choice", tool_choice_problem),
        ("response_format", response_format_problem),
    ):
        if params.get(name) is not None and (problem := problem_of(params[name])):
            raise ValidationFailed(f"Invalid '{name}': {problem}")


@dataclass(frozen=True)
class ChatRequest:
    """An OpenAI Chat Completions request: the messages as sent, every other field as params."""

    call: GatewayCall
    include_usage: bool


def _parse(body: Any, cache_control: str) -> ChatRequest:
    body = checked_body(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ValidationFailed("'messages' must be a non-empty list.")
    messages = [_checked_message(message) for message in raw_messages]
    params = {name: value for name, value in body.items() if name not in OWN_FIELDS}
    to_check = {name: params[name] for name in CHECKED_PARAMS if params.get(name) is not None}
    if to_check:  # a serializer costs half a millisecond: only when there is a value to check
        checked = GatewayParamsSerializer(data=to_check)
        if not checked.is_valid():
            name, problems = next(iter(checked.errors.items()))
            raise ValidationFailed(f"Invalid '{name}': {problems[0]}", details=checked.errors)
    _checked_tools(params)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ValidationFailed("'stream_options' must be an object.")
    passed_options = {k: v for k, v in (options or {}).items() if k != "include_usage"}
    if body.get("stream") and passed_options:
        # The provider asks for usage itself; the client's other options go with it.
        params["stream_options"] = passed_options
    model = body.get("model")
    call = GatewayCall(
        messages=messages,
        model=model if isinstance(model, str) else None,
        params=params,
        stream=bool(body.get("stream")),
        use_cache=_cache_wanted(body, cache_control),
        metadata=_metadata(body),
    )
    return ChatRequest(call=call, include_usage=bool((options or {}).get("include_usage")))


def _head(interaction: AIInteraction, kind: str) -> dict[str, Any]:
    """What every completion (or chunk) of ``interaction`` starts with."""
    moment = interaction.started_at or interaction.created_at
    return {
        "id": f"chatcmpl-{interaction.pk.hex}",
        "object": kind,
        "created": int(moment.timestamp()),
        "model": interaction.model,
    }


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _error_event(message: str, error_type: str, code: str) -> bytes:
    return _sse({"error": {"message": message, "type": error_type, "code": code}})


def _events(interaction: AIInteraction, chunks: Chunks, include_usage: bool) -> Iterator[bytes]:
    """``chat.completion.chunk`` events of the service's chunks, then ``[DONE]``.

    Chunks in OpenAI's shape (tool-call deltas, several choices) are passed on as the
    provider sent them; text-only ones are written as content deltas. The interaction
    is recorded when the chunks end, before the last events, so a client that saw
    ``[DONE]`` finds it.
    """
    head = _head(interaction, "chat.completion.chunk")

    def delta(content: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": content, "finish_reason": finish_reason}
        return _sse({**head, "choices": [choice]})

    try:
        last = StreamChunk()
        extra: dict[str, Any] = {}  # the provider's chunk fields (system_fingerprint, ...)
        passed_on = False
        for number, chunk in enumerate(chunks):
            if chunk.finish_reason is not None:
                last = chunk
            extra = chunk.extra or extra
            if chunk.choices:
                passed_on = True
                yield _sse({**extra, **head, "choices": chunk.choices})
                continue
            if number == 0:
                yield delta({"role": "assistant", "content": ""})
            if chunk.delta:
                yield delta({"content": chunk.delta})
        if not passed_on:
            yield delta({}, last.finish_reason or "stop")
        if include_usage:
            usage = last.usage or {
                "prompt_tokens": interaction.input_tokens,
                "completion_tokens": interaction.output_tokens,
                "total_tokens": interaction.input_tokens + interaction.output_tokens,
            }
            yield _sse({**extra, **head, "choices": [], "usage": usage})
    except ProviderCallError as error:
        yield _error_event(error.message, "provider_error", error.error_type)
    except Exception:
        logger.exception("Streaming completion %s failed", interaction.pk)
        yield _error_event("Internal error.", "server_error", "internal_error")
    finally:
        # A client gone midway closes this generator: the service records it so.
        chunks.close()
        connections.close_all()
    yield _sse("[DONE]")


class ChatCompletionsView(GatewayView):
    key_on_trust = True

    @extend_schema(
        summary="OpenAI-compatible chat completions",
        description=(
            'With `"stream": true` the answer is `text/event-stream`: `chat.completion.chunk` '
            "events ending in `data: [DONE]`, with a `usage` chunk last when "
            "`stream_options.include_usage` is true."
        ),
        request=ChatCompletionRequestSchema,
        responses={
            (200, "application/json"): ChatCompletionSchema,
            (200, "text/event-stream"): ServerSentEventSchema,
            **error_responses(400, 401, 404, 413, 429, 502, serializer=OpenAIErrorSchema),
        },
        tags=["openai-compatible"],
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        with stage("parse"):
            chat = _parse(request.data, request.headers.get("Cache-Control", ""))
        if not chat.call.stream:
            interaction = gateway_answer(request, chat.call)
            answer = {**interaction.completion, **_head(interaction, "chat.completion")}
            return with_rate_limits(Response(answer), interaction)
        return gateway_streamed(
            request,
            chat.call,
            lambda interaction, chunks: _events(interaction, chunks, chat.include_usage),
        )


EMBEDDING_OWN_FIELDS = frozenset({"model", "cache", "metadata"})


def _checked_input(value: Any) -> None:
    """A string, a list of strings, a list of token ids, or a list of such lists; not empty."""

    def tokens(item: Any) -> bool:
        return isinstance(item, list) and bool(item) and all(type(v) is int for v in item)

    if isinstance(value, str):
        items = [value]
    elif tokens(value):
        items = []
    elif isinstance(value, list) and value and all(isinstance(i, str) or tokens(i) for i in value):
        items = [item for item in value if isinstance(item, str)]
    else:
        raise ValidationFailed(
            "'input' must be a string, a list of strings, or token arrays, and not empty."
        )
    if any(not item for item in items):
        raise ValidationFailed("'input' must not hold an empty string.")


class EmbeddingsView(GatewayView):
    key_on_trust = True

    @extend_schema(
        summary="OpenAI-compatible embeddings",
        request=EmbeddingRequestSchema,
        responses={
            200: EmbeddingListSchema,
            **error_responses(400, 401, 404, 413, 429, 502, serializer=OpenAIErrorSchema),
        },
        tags=["openai-compatible"],
    )
    def post(self, request: Request) -> Response:
        with stage("parse"):
            body = checked_body(request.data)
            _checked_input(body.get("input"))
            params = {k: v for k, v in body.items() if k not in EMBEDDING_OWN_FIELDS}
            dimensions = params.get("dimensions")
            if dimensions is not None and (
                type(dimensions) is not int or not 1 <= dimensions <= 8192
            ):
                raise ValidationFailed("'dimensions' must be a whole number from 1 to 8192.")
            if params.get("encoding_format", "float") not in ("float", "base64"):
                raise ValidationFailed("'encoding_format' must be float or base64.")
        model = body.get("model")
        with known_model():
            interaction = embedding_create(
                owner=request.user,
                api_key=request_api_key(request),
                model_name=model if isinstance(model, str) else None,
                params=params,
                use_cache=_cache_wanted(body, request.headers.get("Cache-Control", "")),
                metadata=with_header_tags(_metadata(body), request),
            )
        return with_rate_limits(
            Response({**interaction.completion, "model": interaction.model}), interaction
        )


class ModelsView(GatewayView):
    @extend_schema(
        summary="OpenAI-compatible model list",
        responses={200: ModelListSchema, **error_responses(401, serializer=OpenAIErrorSchema)},
        tags=["openai-compatible"],
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "object": "list",
                "data": [
                    {"id": model.model, "object": "model", "created": 0, "owned_by": model.provider}
                    for model in model_list_for(api_key=request_api_key(request), user=request.user)
                ],
            }
        )
