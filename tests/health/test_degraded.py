"""Readiness names the failing dependency and answers within 3 s, down or hung."""

import time

import pytest
from celery import current_app
from django.conf import settings
from django.test import override_settings
from django.urls import reverse


def redis_cache_at(port: int) -> dict:
    cache = {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}
    return {"default": cache}


def timed_ready(client):
    started = time.monotonic()
    response = client.get(reverse("health:ready"))
    return response, time.monotonic() - started


@pytest.mark.django_db
@pytest.mark.parametrize("failure", ["closed_port", "blackhole_port"])
def test_ready_is_503_naming_the_cache_when_redis_is_down_or_hung(anon_client, failure, request):
    port = request.getfixturevalue(failure)
    with override_settings(CACHES=redis_cache_at(port)):
        response, elapsed = timed_ready(anon_client)
    assert elapsed < 3.0
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cache"]["status"] == "error"
    assert body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_ready_is_503_naming_the_broker_when_it_is_down(anon_client, closed_port, monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment before its settings.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{closed_port}/0")
    # ...and its connection pool holds connections to the broker it started with.
    monkeypatch.setattr(current_app, "_pool", None)
    response, elapsed = timed_ready(anon_client)
    assert elapsed < 3.0
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "error"
    assert response.json()["checks"]["cache"]["status"] == "ok"


@pytest.mark.django_db
def test_cache_outage_is_logged_not_silent(closed_port, caplog):
    from django.core.cache import cache

    with override_settings(CACHES=redis_cache_at(closed_port)):
        assert cache.get("anything") is None  # degrades to a miss...
    assert any(record.name == "contextos.cache" for record in caplog.records)  # ...loudly
