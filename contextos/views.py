"""Kernel views: `/metrics`, JSON 400/403/404/500 handlers and the `/api/` catch-all."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from contextos import metrics
from contextos.exceptions import INTERNAL_ERROR_MESSAGE, plain_error_response

# Detail routes take any path segment as the id: one that is not a UUID names no
# object, so its lookup answers the same 404 as an unknown UUID ("No such task.").
ITEM_ID_PATTERN = r"[^/]+"


def _is_admin(request: HttpRequest) -> bool:
    return request.path.startswith("/admin/")


@csrf_exempt
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    return plain_error_response(request, "No such endpoint.", "not_found", 404)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_admin(request):
        return defaults.bad_request(request, exception)
    return plain_error_response(request, "Bad request.", "bad_request", 400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_admin(request):
        return defaults.permission_denied(request, exception)
    return plain_error_response(
        request, "You do not have permission to perform this action.", "permission_denied", 403
    )


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_admin(request):
        return defaults.page_not_found(request, exception)
    return plain_error_response(request, "Not found.", "not_found", 404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_admin(request):
        return defaults.server_error(request)
    return plain_error_response(request, INTERNAL_ERROR_MESSAGE, "internal_error", 500)


def _metrics_token_presented(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.METRICS_TOKEN.encode()
    )


@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics; with ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <it>``,
    and without one only while ``METRICS_PUBLIC`` (not by default in production)."""
    if request.method not in ("GET", "HEAD"):
        response = plain_error_response(
            request, f'Method "{request.method}" not allowed.', "method_not_allowed", 405
        )
        response["Allow"] = "GET, HEAD"
        return response
    if settings.METRICS_TOKEN:
        refused = not _metrics_token_presented(request)
        message = "A valid metrics token is required."
    else:
        refused = not settings.METRICS_PUBLIC
        message = "Metrics need a token: set METRICS_TOKEN (or METRICS_PUBLIC=true)."
    if refused:
        response = plain_error_response(request, message, "not_authenticated", 401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
