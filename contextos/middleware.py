"""Request-scoped middleware: HTTP metrics, work after the response, the request id and the
request body size limit; and the pages' middleware, which the gateway's requests skip."""

import time
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from contextos import after_response, timing
from contextos.context import request_id_var, sanitize_request_id
from contextos.exceptions import is_gateway_path, plain_error_response
from contextos.metrics import observe_request

GetResponse = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class _SyncAndAsyncMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class HTTPMetricsMiddleware(_SyncAndAsyncMiddleware):
    """Count and time every response for ``/metrics`` (outermost, so 413s count too); with
    ``SERVER_TIMING`` on, say where its time went (:mod:`contextos.timing`)."""

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        timings = timing.begin() if settings.SERVER_TIMING else None
        try:
            response = self.get_response(request)
        finally:
            if timings is not None:
                timing.end()
        return self._observed(request, response, started, timings)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        timings = timing.begin() if settings.SERVER_TIMING else None
        try:
            response = await self.get_response(request)
        finally:
            if timings is not None:
                timing.end()
        return self._observed(request, response, started, timings)

    @staticmethod
    def _observed(
        request: HttpRequest,
        response: HttpResponse,
        started: float,
        timings: timing.Timings | None,
    ) -> HttpResponse:
        seconds = time.perf_counter() - started
        if timings is not None:
            response["Server-Timing"] = timings.header(seconds)
        observe_request(request, response, seconds)
        return response


class AfterResponseMiddleware(_SyncAndAsyncMiddleware):
    """Do the work the view left for after its response (:mod:`contextos.after_response`)
    once the response is out."""

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        with after_response.collected() as queued:
            response = self.get_response(request)
        return after_response.attached(response, queued)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        with after_response.collected() as queued:
            response = await self.get_response(request)
        return after_response.attached(response, queued)


class RequestIDMiddleware(_SyncAndAsyncMiddleware):
    """Accept a sane ``X-Request-ID`` or make one, expose it to logs, echo it back.


    The id stays set until ``request_finished`` so that the handler's own
    response logging (``django.request``) carries it too.
    """

    def __call__(self, request: HttpRequest):
        self._begin(request)
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    @staticmethod
    def _begin(request: HttpRequest) -> None:
        request.request_id = sanitize_request_id(request.headers.get("X-Request-ID"))
        request_id_var.set(request.request_id)


def clear_request_id(**_: object) -> None:
    request_id_var.set(None)


class RequestSizeLimitMiddleware(_SyncAndAsyncMiddleware):
    """Refuse bodies over ``MAX_REQUEST_BYTES`` (413) before anything reads them."""

    def __call__(self, request: HttpRequest):
        error = self._check(request)
        if self.is_async:
            return self._acall(request, error)
        return error or self.get_response(request)

    async def _acall(self, request: HttpRequest, error: HttpResponse | None) -> HttpResponse:
        return error or await self.get_response(request)

    @staticmethod
    def _check(request: HttpRequest) -> HttpResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            return plain_error_response(
                request, "Content-Length must be a non-negative integer.", "bad_request", 400
            )
        if length > settings.MAX_REQUEST_BYTES:
            return plain_error_response(
                request,
                f"The request body is larger than {settings.MAX_REQUEST_BYTES} bytes.",
                "payload_too_large",
                413,
            )
        return None


# --- The pages' middleware ------------------------------------------------------------
# The admin, the docs and the browsable API need sessions, logins, messages, a Content-
# Security-Policy and static files. The gateway's paths (``/v1/``) answer JSON to API keys
# alone and use none of it, and on the hot path a request paid for each of these layers
# (docs/decisions.md, seventh pass). Each class below is the library's own, through
# which a gateway request passes straight on; every other request is served by it as
# before. The host check (CommonMiddleware), CSRF, the security headers (X-Frame-Options
# included), CORS and django-axes stay on every path, where Django's deploy checks look
# for them.


class _PagesOnly:
    """Mixed in before a middleware class: a gateway request goes straight to the next."""

    get_response: GetResponse

    def __call__(self, request: HttpRequest):
        if is_gateway_path(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class PagesCSPMiddleware(_PagesOnly, CSPMiddleware):
    pass


class PagesStaticFilesMiddleware(_PagesOnly, WhiteNoiseMiddleware):
    pass


class PagesSessionMiddleware(_PagesOnly, SessionMiddleware):
    pass


class PagesAuthenticationMiddleware(_PagesOnly, AuthenticationMiddleware):
    pass


class PagesMessageMiddleware(_PagesOnly, MessageMiddleware):
    pass
