"""A dependency that is down is logged once per interval, not once per request."""

import logging
import sys
import time

import pytest

from contextos.logging import OncePerInterval

ECHO = "/api/v1/_test/echo/"


def record(message: str = "Exception ignored", error: type[Exception] = ConnectionError):
    try:
        raise error("down")
    except error:
        exc_info = sys.exc_info()
    return logging.LogRecord("contextos.cache", logging.ERROR, __file__, 1, message, (), exc_info)


def test_one_record_of_a_kind_per_interval_then_the_count_of_those_dropped():
    once = OncePerInterval(seconds=0.2)
    assert [once.filter(record()) for _ in range(5)] == [True, False, False, False, False]
    assert once.filter(record(error=TimeoutError))  # another kind
    time.sleep(0.25)
    shown = record()
    assert once.filter(shown)
    assert shown.getMessage() == "Exception ignored [and 4 more like it in 0.2 s]"


@pytest.mark.django_db
@pytest.mark.urls("tests.kernel.urls")
def test_requests_during_a_redis_outage_log_its_error_once(
    api_client, settings, closed_port, caplog
):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{closed_port}/0"}
    }
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            assert api_client.get(ECHO).status_code == 200  # the cache is optional
    cache_errors = [r for r in caplog.records if r.name == "contextos.cache"]
    # Each request reads the cache at least twice (its key, its throttle count).
    assert len(cache_errors) == 1
