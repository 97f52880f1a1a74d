"""The OpenAI-compatible gateway: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Same API keys, cache and recording as the REST API; errors in OpenAI's shape.
Fields of the request that ContextOS does not act on are ignored, never an error.
"""

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import APIKey
from apps.ai_interactions import metrics
from apps.ai_interactions.answer_cache import cached_answer, remember_answer
from apps.ai_interactions.catalog import model_get, model_list, provider_for
from apps.ai_interactions.models import AIInteraction, InteractionMode, InteractionStatus
from apps.ai_interactions.providers.base import Message, ProviderCallError, StreamChunk
from apps.ai_interactions.serializers import (
    GenerationParamsSerializer,
    invalid_role_message,
    one_of,
)
from apps.ai_interactions.services import (
    call_provider,
    check_prompt_size,
    interaction_build,
    interaction_create,
    record_answer,
    record_failure,
)
from contextos.exceptions import ValidationFailed
from contextos.serializers import NULL_CHARACTER_MESSAGE, has_null_character

logger = logging.getLogger(__name__)

ACTED_ON_PARAMS = ("temperature", "top_p", "stop", "max_tokens")
ROLES = {"system", "user", "assistant", "developer", "tool"}


def _text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "".join(text for text in texts if isinstance(text, str))
    if content is None:
        return ""
    raise ValidationFailed("Message content must be a string or a list of parts.")


@dataclass(frozen=True)
class ChatRequest:
    """What ContextOS acts on in an OpenAI Chat Completions request."""

    messages: list[Message]
    model: str | None
    params: dict[str, Any]
    stream: bool
    include_usage: bool


def _parse(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ValidationFailed("'messages' must be a non-empty list.")
    messages: list[Message] = []
    for message in raw_messages:
        if not isinstance(message, dict):
            raise ValidationFailed("Each message must be an object with a 'role'.")
        role = message.get("role")
        if not isinstance(role, str):
            raise ValidationFailed(f"Each message needs a 'role': use {one_of(sorted(ROLES))}.")
        if role not in ROLES:
            raise ValidationFailed(invalid_role_message(role, sorted(ROLES)))
        role = "system" if role == "developer" else role
        content = _text(message.get("content"))
        if has_null_character(content):
            raise ValidationFailed(f"Message content: {NULL_CHARACTER_MESSAGE}")
        messages.append({"role": role, "content": content})
    params = {name: body[name] for name in ACTED_ON_PARAMS if body.get(name) is not None}
    if body.get("max_completion_tokens") is not None:
        params.setdefault("max_tokens", body["max_completion_tokens"])
    # The parameters ContextOS acts on reach the provider only with valid values.
    checked = GenerationParamsSerializer(data=params)
    if not checked.is_valid():
        name, problems = next(iter(checked.errors.items()))
        raise ValidationFailed(f"Invalid '{name}': {problems[0]}", details=checked.errors)
    options = body.get("stream_options")
    model = body.get("model")
    return ChatRequest(
        messages=messages,
        model=model if isinstance(model, str) else None,
        params=dict(checked.validated_data),
        stream=bool(body.get("stream")),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
    )


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def _completion(interaction: AIInteraction) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{interaction.pk.hex}",
        "object": "chat.completion",
        "created": int(interaction.created_at.timestamp()),
        "model": interaction.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": interaction.response},
                "finish_reason": interaction.finish_reason or "stop",
            }
        ],
        "usage": _usage(interaction.input_tokens, interaction.output_tokens),
    }


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class _ChatMessageSchema(serializers.Serializer):
    role = serializers.ChoiceField(choices=sorted(ROLES))
    content = serializers.CharField()


class _StreamOptionsSchema(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False)


class ChatCompletionRequestSchema(serializers.Serializer):
    """The fields ContextOS acts on; any other OpenAI field is accepted and ignored."""

    model = serializers.CharField(required=False)
    messages = _ChatMessageSchema(many=True)
    stream = serializers.BooleanField(required=False)
    stream_options = _StreamOptionsSchema(required=False)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    max_completion_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=1_000_000
    )
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    stop = serializers.JSONField(required=False, help_text="A string or up to 4 strings.")


class _ChoiceSchema(serializers.Serializer):
    index = serializers.IntegerField()
    message = _ChatMessageSchema()
    finish_reason = serializers.CharField()


class _UsageSchema(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatCompletionSchema(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = _ChoiceSchema(many=True)
    usage = _UsageSchema()


class ServerSentEventSchema(serializers.Serializer):
    """One event of a streamed completion."""

    data = serializers.CharField(
        help_text="A `chat.completion.chunk` object as JSON; `[DONE]` for the last event."
    )


class _ModelSchema(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListSchema(serializers.Serializer):
    object = serializers.CharField()
    data = _ModelSchema(many=True)


class _OpenAIErrorDetailSchema(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()


class OpenAIErrorSchema(serializers.Serializer):
    error = _OpenAIErrorDetailSchema()


OPENAI_ERRORS = dict.fromkeys((400, 401, 413, 429, 502), OpenAIErrorSchema)


class ChatCompletionsView(APIView):
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
            **OPENAI_ERRORS,
        },
        tags=["openai-compatible"],
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        chat = _parse(request.data)
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        if not chat.stream:
            interaction = interaction_create(
                owner=request.user,
                api_key=api_key,
                messages=chat.messages,
                model_name=chat.model,
                params=chat.params,
                mode=InteractionMode.GATEWAY,
            )
            return Response(_completion(interaction))
        check_prompt_size(chat.messages)
        model = model_get(chat.model)
        interaction = interaction_build(
            owner=request.user,
            api_key=api_key,
            model=model,
            messages=chat.messages,
            params=chat.params,
            mode=InteractionMode.GATEWAY,
            metadata={},
            status=InteractionStatus.RUNNING,
        )
        interaction.started_at = timezone.now()
        response = StreamingHttpResponse(
            _stream(interaction, chat.include_usage), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


def _chunks_from_cache(answer: dict[str, Any]) -> Iterator[StreamChunk]:
    words = answer["text"].split(" ")
    for index, word in enumerate(words):
        yield StreamChunk(delta=word if index == 0 else f" {word}")
    yield StreamChunk(
        finish_reason=answer["finish_reason"],
        input_tokens=answer["input_tokens"],
        output_tokens=answer["output_tokens"],
    )


def _open_stream(interaction: AIInteraction) -> tuple[Iterator[StreamChunk], list[dict]]:
    """Start the provider's stream, retrying (before any output) as a sync call would."""
    model = model_get(interaction.model)
    provider = provider_for(model)

    def first() -> tuple[StreamChunk, Iterator[StreamChunk]]:
        chunks = iter(
            provider.stream(
                messages=interaction.messages,
                model=model.model,
                params=interaction.params,
                timeout=settings.AI_PROVIDER_TIMEOUT,
            )
        )
        return next(chunks, StreamChunk(finish_reason="stop")), chunks

    (head, rest), attempts = call_provider(first)

    def chained() -> Iterator[StreamChunk]:
        yield head
        yield from rest

    return chained(), attempts


def _delta(base: dict[str, Any], delta: dict[str, str], finish_reason: str | None) -> bytes:
    return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


def _stream(interaction: AIInteraction, include_usage: bool) -> Iterator[bytes]:
    """Server-sent events for one streamed completion; the interaction is saved at the end.

    No database connection is held while the provider answers: connections go
    back (to the pool) before the first byte, and the row is written once,
    after the last chunk.
    """
    started = time.perf_counter()
    base = {
        "id": f"chatcmpl-{interaction.pk.hex}",
        "object": "chat.completion.chunk",
        "created": int(interaction.started_at.timestamp()),
        "model": interaction.model,
    }
    connections.close_all()
    text: list[str] = []
    final = StreamChunk()
    hit = cached_answer(interaction.prompt_hash)
    try:
        if hit:
            chunks, attempts = _chunks_from_cache(hit), []
        else:
            chunks, attempts = _open_stream(interaction)
        yield _delta(base, {"role": "assistant", "content": ""}, None)
        for chunk in chunks:
            if chunk.delta:
                text.append(chunk.delta)
                yield _delta(base, {"content": chunk.delta}, None)
            if chunk.finish_reason is not None:
                final = chunk
        yield _delta(base, {}, final.finish_reason or "stop")
        if include_usage:
            usage = _usage(final.input_tokens or 0, final.output_tokens or 0)
            yield _sse({**base, "choices": [], "usage": usage})
        answer = {
            "text": "".join(text),
            "finish_reason": final.finish_reason or "stop",
            "input_tokens": final.input_tokens or 0,
            "output_tokens": final.output_tokens or 0,
        }
        record_answer(
            interaction,
            model=model_get(interaction.model),
            answer=answer,
            cached=bool(hit),
            started=started,
            attempts=attempts,
        )
        if not hit:
            remember_answer(interaction.prompt_hash, answer, model=interaction.model)
    except ProviderCallError as error:
        record_failure(interaction, error, started=started, final=True)
        yield _sse(
            {
                "error": {
                    "message": error.message,
                    "type": "provider_error",
                    "code": error.error_type,
                }
            }
        )
    except GeneratorExit:
        _cut_short(
            interaction, text, started, "The client closed the stream.", "client_disconnected"
        )
        _save(interaction)
        raise
    except Exception:
        logger.exception("Streaming completion %s failed", interaction.pk)
        _cut_short(interaction, text, started, "The stream failed.", "internal_error")
        yield _sse(
            {
                "error": {
                    "message": "Internal error.",
                    "type": "server_error",
                    "code": "internal_error",
                }
            }
        )
    # Recorded before the last event, so a client that saw [DONE] finds the interaction.
    _save(interaction)
    yield _sse("[DONE]")


def _save(interaction: AIInteraction) -> None:
    interaction.save(force_insert=True)
    metrics.interaction_finished(interaction)
    connections.close_all()


def _cut_short(
    interaction: AIInteraction, text: list[str], started: float, message: str, kind: str
) -> None:
    interaction.status = InteractionStatus.FAILED
    interaction.response = "".join(text)
    interaction.error = {"message": message, "type": kind, "provider_status": None}
    interaction.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    interaction.completed_at = timezone.now()


class ModelsView(APIView):
    @extend_schema(
        summary="OpenAI-compatible model list",
        responses={200: ModelListSchema, 401: OpenAIErrorSchema},
        tags=["openai-compatible"],
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "object": "list",
                "data": [
                    {"id": model.model, "object": "model", "created": 0, "owned_by": model.provider}
                    for model in model_list()
                ],
            }
        )
