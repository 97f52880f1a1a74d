"""What the gateway's protocol adapters (``openai_api``, ``anthropic_api``) share: a parsed
request's call of the AI services, and the server-sent events answer."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.http import HttpResponseBase, StreamingHttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import APIKeyAuthentication, request_api_key
from apps.accounts.key_cache import KeyConfirmation, KeyUnconfirmed
from apps.ai_interactions.catalog import UnknownModel
from apps.ai_interactions.models import AIInteraction, InteractionMode
from apps.ai_interactions.providers.base import Message
from apps.ai_interactions.services import Chunks, interaction_create, interaction_stream
from apps.governance.admission import confirm_key
from contextos.exceptions import NotFound, ValidationFailed
from contextos.serializers import NULL_CHARACTER_MESSAGE, has_null_character
from contextos.streams import HeldStream, open_streams


class _JSONAlways(DefaultContentNegotiation):
    """The gateway answers JSON (or events) whatever ``Accept`` says, as its protocols do."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class GatewayView(APIView):
    """A view of the gateway's protocols (``/v1/``): an API key is the one way in (its paths
    skip the pages' middleware, sessions included: :mod:`contextos.middleware`), and the
    answer is JSON.

    A view whose every answer passes through its call's admission sets ``key_on_trust``: a
    key this process has read before is taken as it was and confirmed in the admission's
    round trip (:mod:`apps.accounts.key_cache`), or alone when the request ends before it
    (refused, invalid). A key that cannot be confirmed has taken nothing: the request is
    served again, its key read afresh, and answered as that key decides (401 if revoked).
    """

    authentication_classes = [APIKeyAuthentication]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONAlways
    key_on_trust = False

    def handle_exception(self, exc: Exception) -> Response:
        if not isinstance(exc, KeyUnconfirmed):
            return super().handle_exception(exc)
        try:  # nothing was taken: the call is made again on the key as it is now
            self._authenticated_again()
            handler = getattr(self, self.request.method.lower(), self.http_method_not_allowed)
            return handler(self.request, *self.args, **self.kwargs)
        except Exception as again:
            return super().handle_exception(again)

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        confirmation = getattr(getattr(request, "_auth", None), "confirmation", None)
        if confirmation is not None and not confirmation.confirmed:
            # Refused before its admission: the refusal stands if the key as it is now
            # lets the request in; else that key's refusal (401, 429) is the answer.
            try:
                self._key_let_in(confirmation)
            except Exception as refusal:
                response = super().handle_exception(refusal)
        return super().finalize_response(request, response, *args, **kwargs)

    def _key_let_in(self, confirmation: KeyConfirmation) -> None:
        """Confirm the request's key alone, or authenticate the request again; raises what
        refuses it."""
        try:
            confirm_key(confirmation)
        except KeyUnconfirmed:
            self._authenticated_again()

    def _authenticated_again(self) -> None:
        """Authenticate the request anew, its key read afresh, and check it in again."""
        self.key_on_trust = False
        del self.request._user, self.request._auth
        self.initial(self.request, *self.args, **self.kwargs)


@contextmanager
def known_model() -> Iterator[None]:
    """A model name the catalog does not know is a 404 ``model_not_found`` on the gateway."""
    try:
        yield
    except UnknownModel as error:
        raise NotFound(error.message, code="model_not_found") from error


def checked_body(body: Any) -> dict[str, Any]:
    """A request body that is a JSON object whose every string PostgreSQL can store (a
    gateway records what it is sent, and passes it on)."""
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    if has_null_character(body):
        raise ValidationFailed(NULL_CHARACTER_MESSAGE)
    return body


@dataclass(frozen=True)
class GatewayCall:
    """A gateway chat request in the services' terms (OpenAI's shapes), whichever
    protocol it came in."""

    messages: list[Message]
    model: str | None
    params: dict[str, Any]
    stream: bool
    use_cache: bool
    metadata: dict[str, Any]

    def service_arguments(self, request: Request) -> dict[str, Any]:
        return {
            "owner": request.user,
            "api_key": request_api_key(request),
            "messages": self.messages,
            "model_name": self.model,
            "params": self.params,
            "use_cache": self.use_cache,
            "metadata": with_header_tags(self.metadata, request),
        }


def with_header_tags(metadata: dict[str, Any], request: Request) -> dict[str, Any]:
    """The call's metadata with the tags of ``x-contextos-tags`` (comma-separated) added
    to those of ``metadata.tags``, for attribution in usage reports."""
    header = request.headers.get("X-Contextos-Tags", "")
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if not tags:
        return metadata
    given = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
    return {**metadata, "tags": [*given, *tags]}


def gateway_answer(request: Request, call: GatewayCall) -> AIInteraction:
    """Answer a gateway chat call whole; the interaction, its ``completion`` set."""
    with known_model():
        return interaction_create(**call.service_arguments(request), mode=InteractionMode.GATEWAY)


def gateway_stream(request: Request, call: GatewayCall) -> tuple[AIInteraction, Chunks]:
    """Start a streamed gateway chat call (see ``interaction_stream``)."""
    connections.close_all()  # none is held while the provider answers
    with known_model():
        return interaction_stream(**call.service_arguments(request))


def gateway_streamed(
    request: Request,
    call: GatewayCall,
    events: Callable[[AIInteraction, Chunks], Iterator[bytes]],
) -> StreamingHttpResponse:
    """A streamed gateway chat call's answer: ``events`` (the adapter's server-sent events)
    of its chunks, with its ``x-ratelimit-*`` headers.

    The stream holds one of this process's stream places (``WEB_MAX_STREAMS``; 429 when
    none is free) from before the provider is asked until the response is closed, however
    it ends; closing it also closes the call, which gives back its key's parallel place.
    """
    place = open_streams.take()
    try:
        interaction, chunks = gateway_stream(request, call)
    except BaseException:
        place.release()
        raise
    content = HeldStream(events(interaction, chunks), closers=(chunks.close, place.release))
    return with_rate_limits(event_stream(content), interaction)


def with_rate_limits(response: Any, interaction: AIInteraction) -> Any:
    """``response`` with OpenAI's ``x-ratelimit-*`` headers of the limits the call counted
    against (none when no RPM or TPM limit applies)."""
    for name, value in (interaction.rate_limit_headers or {}).items():
        response[name] = value
    return response


def event_stream(events: Iterator[bytes]) -> StreamingHttpResponse:
    """A ``text/event-stream`` answer, sent as written (no proxy buffering)."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
