"""The error hierarchy and the one exception handler that renders every API error.

Every error under ``/api/`` has the body
``{"error": message, "code": code, "details": {...}, "request_id": id}``; errors of the
gateway use its clients' shapes: OpenAI's under ``/v1/``, Anthropic's on ``/v1/messages``.
"""

import logging
from typing import Any

import kombu.exceptions
import redis.exceptions
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from contextos.context import current_request_id
from contextos.throttling import failed_authentication_refusal

logger = logging.getLogger(__name__)


class AppError(Exception):
    """Base of the domain errors services raise; each maps to one HTTP status and code."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code: str = "error"
    message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details or {}
        super().__init__(self.message)


class ValidationFailed(AppError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "validation_error"
    message = "Invalid input."


class NotFound(AppError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    message = "Not found."


class PermissionDenied(AppError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"
    message = "You do not have permission to perform this action."


class Conflict(AppError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    message = "The request conflicts with the current state of the resource."


class PayloadTooLarge(AppError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    message = "The request body is too large."


class TooManyRequests(AppError):
    """A limit of the caller's own is reached (e.g. tasks queued at once); ``details.retry_after``
    (seconds) becomes the ``Retry-After`` header."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_requests"
    message = "Too many requests; try again later."


class ProviderError(AppError):
    status_code = status.HTTP_502_BAD_GATEWAY
    code = "provider_error"
    message = "The AI provider failed to answer."


class ProviderRejected(AppError):
    """The provider refused the request itself (e.g. an invalid tool schema): on ``/v1``,
    the client gets the provider's 4xx status and message."""

    code = "provider_rejected_request"
    message = "The AI provider refused the request."

    def __init__(self, message: str | None = None, *, status_code: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code


class ServiceUnavailable(AppError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"
    message = "A service this request needs is unavailable; try again shortly."


# Infrastructure outages that surface as exceptions anywhere in a request:
# they are the caller's cue to retry, never a bug (500).
_OUTAGES: tuple[tuple[tuple[type[BaseException], ...], str, str], ...] = (
    (
        (DatabaseOperationalError, DatabaseInterfaceError),
        "database_unavailable",
        "The database is unavailable; try again shortly.",
    ),
    (
        (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
        "cache_unavailable",
        "The cache is unavailable; try again shortly.",
    ),
    (
        (kombu.exceptions.OperationalError,),
        "broker_unavailable",
        "The task broker is unavailable; try again shortly.",
    ),
)

INTERNAL_ERROR_MESSAGE = "Internal server error."


def error_body(message: str, code: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": message,
        "code": code,
        "details": details or {},
        "request_id": current_request_id(),
    }


def error_json_response(
    message: str, code: str, status_code: int, details: dict[str, Any] | None = None
) -> JsonResponse:
    """The error body as a plain Django response, for code outside DRF views."""
    return JsonResponse(error_body(message, code, details), status=status_code)


def _drf_error(exc: drf_exceptions.APIException) -> tuple[str, str, dict[str, Any]]:
    detail = exc.detail
    if isinstance(exc, drf_exceptions.ValidationError):
        if isinstance(detail, dict):
            details = detail
        else:
            details = {"non_field_errors": detail if isinstance(detail, list) else [detail]}
        return ValidationFailed.message, ValidationFailed.code, details
    code = getattr(detail, "code", None) or exc.default_code
    if isinstance(exc, drf_exceptions.ParseError):
        code = "malformed_request"
    return str(detail), str(code), {}


def _outage(exc: BaseException) -> tuple[str, str] | None:
    for types, code, message in _OUTAGES:
        if isinstance(exc, types):
            return code, message
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's ``EXCEPTION_HANDLER``: every exception becomes the one error body, as JSON.

    Errors are JSON even for a browser that asked the browsable API for HTML.
    """
    request = context.get("request")
    if request is not None and isinstance(
        exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed
    ):
        # Every refused authentication passes here once; too many from one address: 429.
        exc = failed_authentication_refusal(request) or exc
    if request is not None:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    response = _error_response(exc, context)
    if request is not None and is_anthropic_path(request):
        response.data = anthropic_error_body(
            response.data["error"], response.data["code"], response.status_code
        )
    elif request is not None and is_gateway_path(request):
        response.data = openai_error_body(
            response.data["error"],
            response.data["code"],
            response.status_code,
            param=_named_param(response.data.get("details")),
        )
    return response


def _error_response(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, AppError):
        response = Response(error_body(exc.message, exc.code, exc.details), status=exc.status_code)
        retry_after = exc.details.get("retry_after") if isinstance(exc.details, dict) else None
        if isinstance(retry_after, int | float):
            response["Retry-After"] = str(max(1, int(retry_after)))
        return response

    outage = _outage(exc)
    if outage is not None:
        code, message = outage
        logger.warning("Dependency outage while serving a request: %s", exc.__class__.__name__)
        return Response(error_body(message, code), status=status.HTTP_503_SERVICE_UNAVAILABLE)

    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        logger.error("Unhandled exception in an API view", exc_info=exc)
        return Response(
            error_body(INTERNAL_ERROR_MESSAGE, "internal_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    # DRF's handler sets the headers that go with some errors
    # (WWW-Authenticate, Retry-After); the body is replaced.
    response = drf_exception_handler(exc, context)
    message, code, details = _drf_error(exc)
    response.data = error_body(message, code, details)
    return response


def _named_param(details: Any) -> str | None:
    """The request field a provider's refusal named (``details.param``), if any."""
    param = details.get("param") if isinstance(details, dict) else None
    return param if isinstance(param, str) else None


# The gateway's paths: OpenAI's and Anthropic's protocols, JSON to API keys alone.
GATEWAY_PATH_PREFIX = "/v1/"


def is_gateway_path(request: HttpRequest) -> bool:
    """Whether ``request`` is one of the gateway's (``/v1/``: OpenAI's error shape unless
    Anthropic's path, no pages' middleware), by its path below the app's own prefix
    (``SCRIPT_NAME``), as URLs are resolved."""
    return request.path_info.startswith(GATEWAY_PATH_PREFIX)


def openai_error_body(
    message: str, code: str, status_code: int, *, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape, used on the OpenAI-compatible ``/v1/`` paths; ``param`` names
    the request field at fault (a provider's refusal passes its own on)."""
    if status_code in (401, 403):
        error_type = "authentication_error" if status_code == 401 else "permission_error"
    elif code == "budget_exceeded":
        error_type = "insufficient_quota"  # OpenAI's type for a spent quota
    elif status_code == 429:
        error_type = "rate_limit_error"
    else:
        error_type = "invalid_request_error" if status_code < 500 else "server_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def is_anthropic_path(request: HttpRequest) -> bool:
    """``/v1/messages`` (and below it): Anthropic's Messages API, whose clients read
    Anthropic's error shape."""
    path = request.path_info
    return path == "/v1/messages" or path.startswith("/v1/messages/")


# Anthropic's error type for each status; other 4xx are invalid requests, other 5xx api errors.
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(message: str, code: str, status_code: int) -> dict[str, Any]:
    """Anthropic's error shape, used on ``/v1/messages``; ``code`` keeps ContextOS's own
    stable code beside Anthropic's ``type``."""
    error_type = _ANTHROPIC_ERROR_TYPES.get(status_code) or (
        "invalid_request_error" if status_code < 500 else "api_error"
    )
    return {
        "type": "error",
        "error": {"type": error_type, "message": message, "code": code},
        "request_id": current_request_id(),
    }


def openai_error_response(message: str, code: str, status_code: int) -> JsonResponse:
    return JsonResponse(openai_error_body(message, code, status_code), status=status_code)


def plain_error_response(
    request: HttpRequest, message: str, code: str, status_code: int
) -> JsonResponse:
    """An error for code outside DRF views, in the shape the request's path expects."""
    if is_anthropic_path(request):
        return JsonResponse(anthropic_error_body(message, code, status_code), status=status_code)
    if is_gateway_path(request):
        return openai_error_response(message, code, status_code)
    return error_json_response(message, code, status_code)
