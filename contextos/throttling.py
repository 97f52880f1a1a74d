"""Rate limiting backed by the shared cache: requests per API key, failed authentications per
client address."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from django.http import HttpRequest
    from rest_framework.request import Request
    from rest_framework.views import APIView


def client_address(request: HttpRequest | Request) -> str:
    """The client's address: ``REMOTE_ADDR``, the peer gunicorn saw (or the address a
    PROXY-protocol front end reported), never ``X-Forwarded-For``, which any client can write.

    Behind a reverse proxy every request then comes from the proxy's address, as for the
    admin login lockout.
    """
    return request.META.get("REMOTE_ADDR") or "unknown"


class Window(NamedTuple):
    """A key's current rate-limit window: its counter (unprefixed), the counter's
    lifetime, the requests it allows and the seconds until it ends."""

    counter: str
    lifetime: int
    limit: int
    ends_in: float


class APIKeyRateThrottle(SimpleRateThrottle):
    """A fixed-window counter per API key (or user, or client address) at ``API_RATE_LIMIT``.

    One atomic ``add``/``incr`` per request instead of DRF's stored history,
    so the cost does not grow with the rate. When the cache is down the
    request is let through: throttling must not turn an outage into errors.
    """

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.API_RATE_LIMIT

    def get_cache_key(self, request: Request, view: APIView) -> str:
        digest = getattr(request.auth, "key_hash", None)
        if digest is not None:
            ident = f"key:{digest}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"

    def get_ident(self, request: Request) -> str:
        return client_address(request)

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        if getattr(request.auth, "confirmation", None) is not None:
            return True  # a key taken on trust: counted as it is confirmed (key_cache)
        now = time.time()
        window = int(now // self.duration)
        self.now = now
        self.window_ends_at = (window + 1) * self.duration
        key = f"{self.get_cache_key(request, view)}:{window}"
        counted = getattr(request.auth, "throttle_count", None)  # taken while authenticating
        count = counted[1] if counted and counted[0] == key else self._count(key)
        return count is None or count <= self.num_requests

    def _count(self, key: str) -> int | None:
        """This request's number in its window: one round trip on Redis."""
        client = getattr(self.cache, "client", None)
        if client is not None and hasattr(client, "get_client"):
            try:
                pipe = client.get_client(write=True).pipeline(transaction=False)
                full_key = self.cache.make_and_validate_key(key)
                pipe.incr(full_key)
                pipe.expire(full_key, self.duration + 1, nx=True)
                return pipe.execute()[0]
            except Exception:
                logger.warning("Rate limiting skipped: the cache is unavailable")
                return None
        if self.cache.add(key, 1, timeout=self.duration + 1):
            return 1
        try:
            return self.cache.incr(key)
        except ValueError:  # expired between add and incr
            return None

    @staticmethod
    def window_of_key(digest: str, now: float) -> Window | None:
        """A key's current window, for counting the request in the round trip that reads
        the key, or confirms it (:mod:`apps.accounts.key_cache`)."""
        rate = settings.API_RATE_LIMIT
        if not rate:
            return None
        limit, duration = SimpleRateThrottle.parse_rate(None, rate)
        window = int(now // duration)
        return Window(
            counter=f"throttle:{APIKeyRateThrottle.scope}:key:{digest}:{window}",
            lifetime=duration + 1,
            limit=limit,
            ends_in=(window + 1) * duration - now,
        )

    def wait(self) -> float:
        return max(self.window_ends_at - self.now, 1.0)


class FailedAuthenticationThrottle(APIKeyRateThrottle):
    """Failed authentications per client address at ``AUTH_FAILURE_RATE``, in the same
    fixed windows: only a failure is counted, so a valid key never touches the counter."""

    scope = "auth_failure"

    def get_rate(self) -> str | None:
        return settings.AUTH_FAILURE_RATE or None

    def get_cache_key(self, request: Request, view: APIView | None) -> str:
        return f"throttle:{self.scope}:addr:{client_address(request)}"


def failed_authentication_refusal(request: Request) -> Throttled | None:
    """Count a failed authentication of ``request`` against its client address; past
    ``AUTH_FAILURE_RATE``, the 429 to answer instead of the 401 (None: the 401 stands).

    The exception handler calls it once per refused request, after the key was looked up:
    an address past the rate still has its keys read, so that the valid ones it sends keep
    working. When the cache is down nothing is counted and the 401 stands, as the per-key
    rate lets requests through then.
    """
    throttle = FailedAuthenticationThrottle()
    if throttle.allow_request(request, None):
        return None
    return Throttled(
        wait=throttle.wait(),
        detail="Too many failed authentications from this address.",
        code="too_many_failed_authentications",
    )
