"""`manage.py check_services` against the real services, with and without a worker."""

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.health.models import ServiceHeartbeat
from apps.health.services import heartbeat_record
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.worker


def check() -> str:
    out = io.StringIO()
    call_command("check_services", stdout=out)
    return out.getvalue()


def test_everything_up_with_a_worker_and_a_recent_heartbeat(start_worker):
    heartbeat_record()
    start_worker()

    def all_up() -> str | None:
        try:
            return check()
        except CommandError:
            return None  # the worker is still starting

    table = wait_for(all_up, timeout=30, interval=0.5, message="services never all up")
    lines = table.splitlines()
    assert lines[0].split() == ["SERVICE", "STATUS", "DETAIL"]
    assert {line.split()[0] for line in lines[1:]} == {
        "database",
        "cache",
        "broker",
        "workers",
        "beat",
    }
    assert all(line.split()[1] == "up" for line in lines[1:])
    beat = next(line for line in lines if line.startswith("beat "))
    assert re.fullmatch(r"beat +up +last heartbeat [0-9.]+ s ago", beat), beat


def test_no_worker_and_no_heartbeat_is_a_failure(transactional_db):
    out = io.StringIO()
    with pytest.raises(CommandError, match="Down: workers, beat"):
        call_command("check_services", stdout=out)
    assert "DOWN" in out.getvalue()
    assert "database  up" in out.getvalue()
    assert re.search(r"^beat +DOWN +no heartbeat yet$", out.getvalue(), re.M)


def test_a_stale_heartbeat_is_down_with_its_age(transactional_db):
    ServiceHeartbeat.objects.create(name="beat", beat_at=timezone.now() - timedelta(minutes=10))
    out = io.StringIO()
    with pytest.raises(CommandError, match="beat"):
        call_command("check_services", stdout=out)
    beat = re.search(r"^beat +DOWN +last heartbeat ([0-9.]+) s ago$", out.getvalue(), re.M)
    assert beat, out.getvalue()
    assert 600 <= float(beat[1]) < 660
