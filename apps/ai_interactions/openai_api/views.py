"""OpenAI-compatible views: parse the request, call the AI services, answer in OpenAI's shape.

Same API keys, cache and recording as the REST API; errors in OpenAI's shape.
Fields of the request that ContextOS does not act on are ignored, never an error.
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
from rest_framework.views import APIView

from apps.accounts.authentication import request_api_key
from apps.ai_interactions.catalog import model_list
from apps.ai_interactions.models import AIInteraction, InteractionMode
from apps.ai_interactions.openai_api.serializers import (
    ROLES,
    ChatCompletionRequestSchema,
    ChatCompletionSchema,
    ModelListSchema,
    OpenAIErrorSchema,
    ServerSentEventSchema,
)
from apps.ai_interactions.providers.base import Message, ProviderCallError, StreamChunk
from apps.ai_interactions.serializers import (
    GenerationParamsSerializer,
    invalid_role_message,
    one_of,
)
from apps.ai_interactions.services import interaction_create, interaction_stream
from contextos.exceptions import ValidationFailed
from contextos.schema import error_responses
from contextos.serializers import NULL_CHARACTER_MESSAGE, has_null_character

logger = logging.getLogger(__name__)

ACTED_ON_PARAMS = ("temperature", "top_p", "stop", "max_tokens")


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
            raise ValidationFailed(f"Each message needs a 'role': use {one_of(ROLES)}.")
        if role not in ROLES:
            raise ValidationFailed(invalid_role_message(role, ROLES))
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


def _error_event(message: str, error_type: str, code: str) -> bytes:
    return _sse({"error": {"message": message, "type": error_type, "code": code}})


def _events(
    interaction: AIInteraction, chunks: Iterator[StreamChunk], include_usage: bool
) -> Iterator[bytes]:
    """``chat.completion.chunk`` events of the service's chunks, then ``[DONE]``.

    The interaction is recorded when the chunks end, before the last events,
    so a client that saw ``[DONE]`` finds it. No database connection is held
    while the provider answers: they go back to the pool before the first byte.
    """
    base = {
        "id": f"chatcmpl-{interaction.pk.hex}",
        "object": "chat.completion.chunk",
        "created": int(interaction.started_at.timestamp()),
        "model": interaction.model,
    }

    def delta(content: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": content, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

    connections.close_all()
    try:
        last = StreamChunk()
        for number, chunk in enumerate(chunks):
            if number == 0:
                yield delta({"role": "assistant", "content": ""})
            if chunk.delta:
                yield delta({"content": chunk.delta})
            if chunk.finish_reason is not None:
                last = chunk
        yield delta({}, last.finish_reason or "stop")
        if include_usage:
            usage = _usage(last.input_tokens or 0, last.output_tokens or 0)
            yield _sse({**base, "choices": [], "usage": usage})
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
            **error_responses(400, 401, 413, 429, 502, serializer=OpenAIErrorSchema),
        },
        tags=["openai-compatible"],
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        chat = _parse(request.data)
        call = {
            "owner": request.user,
            "api_key": request_api_key(request),
            "messages": chat.messages,
            "model_name": chat.model,
            "params": chat.params,
        }
        if not chat.stream:
            interaction = interaction_create(**call, mode=InteractionMode.GATEWAY)
            return Response(_completion(interaction))
        interaction, chunks = interaction_stream(**call)
        response = StreamingHttpResponse(
            _events(interaction, chunks, chat.include_usage), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


class ModelsView(APIView):
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
                    for model in model_list()
                ],
            }
        )
