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
