"""Which provider failures are retried, and the backoff loop that retries them."""

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from apps.ai_interactions.providers.base import Attempt, ProviderCallError

T = TypeVar("T")

# A provider that asks for a longer pause than this is treated as having given no hint.
_MAX_RETRY_AFTER_HINT = 3600.0


def call_with_retries(
    call: Callable[[], T],
    *,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
    retry_if: Callable[[ProviderCallError], bool] | None = None,
) -> tuple[T, list[Attempt]]:
    """Run ``call`` until it succeeds, retrying retryable ``ProviderCallError``s.

    Between attempts it waits the provider's ``retry_after`` when given, else an
    exponential backoff with full jitter (``uniform(0, min(max_delay, base_delay * 2**(n-1)))``
    after attempt ``n``); every wait is capped at ``max_delay``. A non-retryable error is
    raised at once. Returns the result and one ``Attempt`` per call; when it gives up,
    the raised error's ``attempts`` holds them all. ``retry_if`` can decline a retryable
    error (a router moving on to another deployment). Any other exception is a bug and
    propagates untouched.
    """
    attempts: list[Attempt] = []
    number = 0
    while True:
        number += 1
        started = time.monotonic()
        try:
            result = call()
        except ProviderCallError as error:
            attempts.append(
                Attempt(
                    number=number,
                    outcome=error.error_type,
                    status=error.status,
                    latency_ms=_elapsed_ms(started),
                    retry_after_s=error.retry_after,
                )
            )
            retry = error.retryable and (retry_if is None or retry_if(error))
            if not retry or number >= max_attempts:
                error.attempts = list(attempts)
                raise
            sleep(_delay_before_retry(error, number, base_delay=base_delay, max_delay=max_delay))
        else:
            attempts.append(Attempt(number=number, outcome="ok", latency_ms=_elapsed_ms(started)))
            return result, attempts


def _delay_before_retry(
    error: ProviderCallError, number: int, *, base_delay: float, max_delay: float
) -> float:
    if error.retry_after is not None:
        return min(max_delay, max(0.0, error.retry_after))
    ceiling = min(max_delay, base_delay * 2 ** (number - 1))
    # Jitter spreads retries from many workers; it is not a security boundary.
    return random.uniform(0, ceiling)  # noqa: S311


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def status_error_type(status: int) -> tuple[str, bool]:
    """The ``error_type`` of an HTTP error status, and whether calling again may help."""
    if status == 429:
        return "rate_limited", True
    if status >= 500:
        return "server_error", True
    if status == 400:
        return "bad_request", False
    if status in (401, 403):
        return "authentication_error", False
    if status == 404:
        return "not_found", False
    return "client_error", False


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The pause a response asks for: ``retry-after-ms``, or ``Retry-After`` (seconds or a date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    seconds = _parse_seconds(lowered.get("retry-after-ms"), divisor=1000)
    if seconds is None:
        seconds = _parse_seconds(lowered.get("retry-after"), divisor=1)
    if seconds is None and lowered.get("retry-after"):
        try:
            when = email.utils.parsedate_to_datetime(lowered["retry-after"])
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
    if seconds is None or seconds > _MAX_RETRY_AFTER_HINT:
        return None
    return seconds


def _parse_seconds(value: str | None, *, divisor: int) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value) / divisor
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


# How much of a provider's error message is kept: a few lines for a failure, and
# a refused request's whole explanation (a schema error names every bad field).
DETAIL_LIMIT = 200
REFUSAL_DETAIL_LIMIT = 4000


def error_detail(body: object, *, secret: str = "", limit: int = DETAIL_LIMIT) -> str:
    """A short, key-free text for an error body: its ``error.message`` or ``message`` if any."""
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message") or detail
    text = " ".join(str(detail or "").split())
    if secret:
        text = text.replace(secret, "***")
    return text[:limit]
