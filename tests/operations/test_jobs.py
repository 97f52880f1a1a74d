"""Periodic jobs run once per interval: a second delivery (a second beat) does nothing;
every job has the same reliability options."""

import logging
from datetime import timedelta

import pytest
from celery import current_app
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import interaction_create
from apps.health.models import ServiceHeartbeat
from apps.health.tasks import beat_heartbeat
from apps.operations.schedule import PERIODIC_JOBS
from apps.operations.tasks import purge_by_retention
from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_submit
from contextos.cache import cache_key
from tests.health.test_degraded import redis_cache_at

pytestmark = pytest.mark.django_db


def old_records(user) -> tuple[Task, AIInteraction]:
    """A finished task past its 30-day retention and an interaction past its 90 days."""
    task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={})
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.SUCCEEDED, created_at=timezone.now() - timedelta(days=31)
    )
    interaction = interaction_create(owner=user, messages=[{"role": "user", "content": "hi"}])
    AIInteraction.objects.filter(pk=interaction.pk).update(
        created_at=timezone.now() - timedelta(days=91)
    )
    return task, interaction


def test_a_second_delivery_within_the_interval_does_nothing(user):
    old_records(user)
    assert purge_by_retention() == {
        "tasks": {"tasks": 1, "attempts": 0},
        "interactions": {"interactions": 1, "cached answers": 1},
    }
    assert not Task.objects.exists()

    task, interaction = old_records(user)
    assert purge_by_retention() == "skipped"
    assert Task.objects.filter(pk=task.pk).exists()
    assert AIInteraction.objects.filter(pk=interaction.pk).exists()

    # The lock lasts a bit less than a day: tomorrow's run is not skipped.
    ttl = cache.ttl(cache_key("jobs", "lock", "operations.purge_by_retention"))
    assert 22 * 3600 < ttl <= 23 * 3600


def test_each_job_has_its_own_lock(user):
    assert beat_heartbeat() != "skipped"
    recorded = ServiceHeartbeat.objects.get(name="beat").beat_at
    assert beat_heartbeat() == "skipped"
    assert ServiceHeartbeat.objects.get(name="beat").beat_at == recorded
    old_records(user)
    assert purge_by_retention()["tasks"] == {"tasks": 1, "attempts": 0}


@override_settings(RETENTION_TASKS_DAYS=0, RETENTION_INTERACTIONS_DAYS=0)
def test_a_retention_of_zero_keeps_everything(user):
    task, interaction = old_records(user)
    assert purge_by_retention() == {}
    assert Task.objects.filter(pk=task.pk).exists()
    assert AIInteraction.objects.filter(pk=interaction.pk).exists()


def test_with_the_cache_down_a_job_still_runs(closed_port, caplog):
    with override_settings(CACHES=redis_cache_at(closed_port)), caplog.at_level(logging.WARNING):
        assert beat_heartbeat() != "skipped"
        assert beat_heartbeat() != "skipped"
    assert ServiceHeartbeat.objects.filter(name="beat").exists()
    assert "Lock of periodic job health.beat_heartbeat unavailable" in caplog.text


def test_every_periodic_job_is_acknowledged_late_and_ends_within_its_lock():
    current_app.loader.import_default_modules()  # every app's tasks module
    jobs = [task for task in current_app.tasks.values() if hasattr(task, "lock_seconds")]
    assert {job.name for job in jobs} == {job.task for job in PERIODIC_JOBS}
    visibility = current_app.conf.broker_transport_options["visibility_timeout"]
    for job in jobs:
        assert job.acks_late is True, job.name
        assert job.reject_on_worker_lost is True, job.name
        # A run never outlives its lock (no second run at once) nor the visibility
        # timeout (Redis would deliver it again while it runs).
        assert 0 < job.soft_time_limit < job.time_limit <= job.lock_seconds, job.name
        assert job.time_limit < visibility, job.name
