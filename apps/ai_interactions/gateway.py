"""What the gateway's protocol adapters (``openai_api``, ``anthropic_api``) share: a parsed
request's call of the AI services, and the server-sent events answer."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.http import StreamingHttpResponse
from rest_framework.request import Request

from apps.accounts.authentication import request_api_key
from apps.ai_interactions.catalog import UnknownModel
from apps.ai_interactions.models import AIInteraction, InteractionMode
from apps.ai_interactions.providers.base import Message
from apps.ai_interactions.services import Chunks, interaction_create, interaction_stream
from contextos.exceptions import NotFound


@contextmanager
def known_model() -> Iterator[None]:
    """A model name the catalog does not know is a 404 ``model_not_found`` on the gateway."""
    try:
        yield
    except UnknownModel as error:
        raise NotFound(error.message, code="model_not_found") from error


def _call(
    request: Request,
    *,
    messages: list[Message],
    model: str | None,
    params: dict[str, Any],
    use_cache: bool,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "owner": request.user,
        "api_key": request_api_key(request),
        "messages": messages,
        "model_name": model,
        "params": params,
        "use_cache": use_cache,
        "metadata": metadata,
    }


def gateway_answer(request: Request, **asked: Any) -> AIInteraction:
    """Answer a gateway chat request whole (``asked``: messages, model, params, use_cache,
    metadata, in OpenAI's shapes); the interaction, its ``completion`` set."""
    with known_model():
        return interaction_create(**_call(request, **asked), mode=InteractionMode.GATEWAY)


def gateway_stream(request: Request, **asked: Any) -> tuple[AIInteraction, Chunks]:
    """Start a streamed gateway chat call (see ``interaction_stream``)."""
    connections.close_all()  # none is held while the provider answers
    with known_model():
        return interaction_stream(**_call(request, **asked))


def event_stream(events: Iterator[bytes]) -> StreamingHttpResponse:
    """A ``text/event-stream`` answer, sent as written (no proxy buffering)."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
