"""Liveness and readiness as an unauthenticated client sees them."""

import pytest
from django.urls import reverse


@pytest.mark.django_db
def test_live_answers_ok_without_authentication(anon_client):
    response = anon_client.get(reverse("health:live"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_reports_every_dependency_when_all_are_up(anon_client):
    response = anon_client.get(reverse("health:ready"))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["latency_ms"] >= 0


@pytest.mark.django_db
def test_ready_probes_at_most_once_per_cache_period(anon_client, monkeypatch, settings):
    from apps.health import checks, selectors

    probes = []
    monkeypatch.setitem(checks.READINESS_CHECKS, "counted", lambda: probes.append(1))
    monkeypatch.setattr(selectors, "_last_readiness", None)

    settings.HEALTH_READY_CACHE_SECONDS = 30
    answers = [anon_client.get(reverse("health:ready")) for _ in range(5)]
    assert [response.status_code for response in answers] == [200] * 5
    assert len(probes) == 1

    settings.HEALTH_READY_CACHE_SECONDS = 0
    for _ in range(3):
        anon_client.get(reverse("health:ready"))
    assert len(probes) == 4
