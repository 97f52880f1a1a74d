"""The detailed health report is for staff only and covers workers, queues, beat, migrations."""

import tomllib
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

import contextos
from apps.health.models import ServiceHeartbeat
from apps.health.services import heartbeat_record

pytestmark = pytest.mark.django_db


def test_requires_a_key(anon_client):
    response = anon_client.get(reverse("health:detail"))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_refuses_non_staff(api_client):
    response = api_client.get(reverse("health:detail"))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.django_db(transaction=True)  # the report reads from its own threads
def test_staff_sees_the_whole_report(staff_client):
    heartbeat_record()
    response = staff_client.get(reverse("health:detail"))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert body["version"] == contextos.__version__
    assert body["migrations"]["status"] == "ok"
    assert body["migrations"]["pending"] == []
    assert body["beat"]["status"] == "ok"
    assert 0 <= body["beat"]["age_seconds"] < 60
    assert body["queues"]["status"] == "ok"
    assert settings.MONITORED_QUEUES[0] in body["queues"]["depths"]
    assert body["workers"]["status"] == "ok"
    assert body["workers"]["online"] == len(body["workers"]["names"])


@pytest.mark.django_db(transaction=True)
def test_one_version_in_the_report_the_schema_and_the_package(staff_client, anon_client):
    report = staff_client.get(reverse("health:detail")).json()
    schema = anon_client.get(reverse("schema"), {"format": "json"})
    assert schema.status_code == 200
    pyproject = tomllib.loads((settings.BASE_DIR / "pyproject.toml").read_text())
    assert schema.json()["info"]["version"] == report["version"] == pyproject["project"]["version"]


@pytest.mark.django_db(transaction=True)
def test_the_report_shows_the_age_of_a_stale_heartbeat(staff_client):
    ServiceHeartbeat.objects.create(name="beat", beat_at=timezone.now() - timedelta(minutes=10))
    beat = staff_client.get(reverse("health:detail")).json()["beat"]
    assert beat["status"] == "ok"
    assert 600 <= beat["age_seconds"] < 660
    assert beat["last_heartbeat_at"]


@pytest.mark.django_db(transaction=True)
def test_the_report_says_when_beat_never_sent_a_heartbeat(staff_client):
    beat = staff_client.get(reverse("health:detail")).json()["beat"]
    assert (beat["last_heartbeat_at"], beat["age_seconds"]) == (None, None)


def test_staff_session_login_works_too(client, staff_user):
    client.force_login(staff_user)
    response = client.get(reverse("health:detail"))
    assert response.status_code == 200
