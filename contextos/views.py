"""JSON error pages: Django's 400/403/404/500 handlers and the ``/api/`` catch-all."""

from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from contextos.exceptions import INTERNAL_ERROR_MESSAGE, plain_error_response

# Detail routes match UUIDs only; anything else falls through to a JSON 404.
UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


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
