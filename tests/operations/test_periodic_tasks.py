"""`manage.py setup_periodic_tasks`: the declared jobs, upserted by name, staff edits kept."""

import io
from datetime import timedelta

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from apps.operations.schedule import PERIODIC_JOBS
from contextos.beat import DatabaseScheduler

pytestmark = pytest.mark.django_db

NAMES = [job.name for job in PERIODIC_JOBS]


def setup(*args: str) -> list[list[str]]:
    """Run the command; its table as rows of (name, action, schedule..., enabled)."""
    out = io.StringIO()
    call_command("setup_periodic_tasks", *args, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["PERIODIC", "TASK", "ACTION", "SCHEDULE", "ENABLED"]
    return [line.split() for line in lines[1:]]


def actions(rows: list[list[str]]) -> dict[str, str]:
    return {row[0]: row[1] for row in rows}


def snapshot() -> list[dict]:
    return list(PeriodicTask.objects.order_by("name").values())


def test_creates_the_declared_jobs():
    assert actions(setup()) == dict.fromkeys(NAMES, "created")
    rows = {row.name: row for row in PeriodicTask.objects.all()}
    assert set(rows) == set(NAMES)
    heartbeat = rows["health.beat-heartbeat"]
    assert heartbeat.task == "health.beat_heartbeat"
    assert (heartbeat.interval.every, heartbeat.interval.period) == (1, IntervalSchedule.MINUTES)
    reaper = rows["tasks.recover-stuck"]
    assert (reaper.interval.every, reaper.interval.period) == (5, IntervalSchedule.MINUTES)
    assert rows["ai_interactions.rollup-usage"].task == "ai_interactions.rollup_usage"
    assert rows["ai_interactions.rollup-usage"].crontab.hour == "*"
    for daily in ("operations.purge-by-retention", "tasks.cleanup-results"):
        assert rows[daily].crontab.hour == "3"
        assert rows[daily].crontab.day_of_week == "*"
    assert all(row.enabled and row.description for row in rows.values())


@pytest.mark.parametrize("job", PERIODIC_JOBS, ids=NAMES)
def test_each_job_expires_within_its_interval_and_locks_for_less(job):
    assert 0 < job.expire_seconds <= job.every.total_seconds()
    current_app.loader.import_default_modules()  # as a worker does: every app's tasks.py
    task = current_app.tasks[job.task]
    assert job.every.total_seconds() * 0.8 <= task.lock_seconds < job.every.total_seconds()


def test_running_it_again_changes_nothing_and_keeps_the_last_run():
    setup()
    ran_at = timezone.now() - timedelta(seconds=30)
    for row in PeriodicTask.objects.all():
        row.last_run_at = ran_at
        row.total_run_count = 7
        row.save()
    before, last_update = snapshot(), PeriodicTasks.last_change()
    schedules = (IntervalSchedule.objects.count(), CrontabSchedule.objects.count())

    assert actions(setup()) == dict.fromkeys(NAMES, "kept")
    assert actions(setup("--reset")) == dict.fromkeys(NAMES, "kept")

    assert snapshot() == before
    assert all((row["last_run_at"], row["total_run_count"]) == (ran_at, 7) for row in snapshot())
    assert PeriodicTasks.last_change() == last_update  # beat is not told to reload
    assert (IntervalSchedule.objects.count(), CrontabSchedule.objects.count()) == schedules


def test_staff_edits_survive_a_rerun_and_reset_restores_the_declared_values():
    setup()
    heartbeat = PeriodicTask.objects.get(name="health.beat-heartbeat")
    heartbeat.enabled = False
    heartbeat.save()
    reaper = PeriodicTask.objects.get(name="tasks.recover-stuck")
    reaper.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.MINUTES)
    reaper.last_run_at = ran_at = timezone.now() - timedelta(minutes=1)
    reaper.save()

    rows = setup()
    assert actions(rows) == dict.fromkeys(NAMES, "kept")
    assert rows[0] == ["health.beat-heartbeat", "kept", "every", "minute", "no"]
    assert rows[1] == ["tasks.recover-stuck", "kept", "every", "2", "minutes", "yes"]
    assert not PeriodicTask.objects.get(name="health.beat-heartbeat").enabled
    assert PeriodicTask.objects.get(name="tasks.recover-stuck").interval.every == 2

    rows = setup("--reset")
    assert actions(rows) == dict.fromkeys(NAMES, "kept") | {
        "health.beat-heartbeat": "reset",
        "tasks.recover-stuck": "reset",
    }
    assert rows[0] == ["health.beat-heartbeat", "reset", "every", "minute", "yes"]
    assert rows[1] == ["tasks.recover-stuck", "reset", "every", "5", "minutes", "yes"]
    assert PeriodicTask.objects.get(name="health.beat-heartbeat").enabled
    reaper = PeriodicTask.objects.get(name="tasks.recover-stuck")
    assert reaper.interval.every == 5
    assert reaper.last_run_at == ran_at


def test_a_renamed_task_is_updated_without_touching_staff_edits():
    setup()
    PeriodicTask.objects.filter(name="tasks.cleanup-results").update(
        task="tasks.old_name", enabled=False
    )
    assert actions(setup())["tasks.cleanup-results"] == "updated"
    row = PeriodicTask.objects.get(name="tasks.cleanup-results")
    assert (row.task, row.enabled) == ("tasks.cleanup_results", False)


def test_celery_default_result_cleanup_is_removed():
    PeriodicTask.objects.create(
        name="celery.backend_cleanup",
        task="celery.backend_cleanup",
        crontab=CrontabSchedule.objects.create(minute="0", hour="4"),
    )
    assert actions(setup())["celery.backend_cleanup"] == "removed"
    assert not PeriodicTask.objects.filter(name="celery.backend_cleanup").exists()
    assert "celery.backend_cleanup" not in actions(setup())


@pytest.mark.django_db(transaction=True)  # the scheduler manages its own connections
def test_beat_schedules_the_declared_jobs_and_not_celery_unbatched_cleanup():
    setup()
    PeriodicTask.objects.filter(name="tasks.cleanup-results").update(enabled=False)
    scheduler = DatabaseScheduler(app=current_app)
    # Daily jobs are loaded only within two hours of their time (django-celery-beat).
    assert {"health.beat-heartbeat", "tasks.recover-stuck", "ai_interactions.rollup-usage"} <= set(
        scheduler.schedule
    )
    assert set(scheduler.schedule) <= set(NAMES) - {"tasks.cleanup-results"}
    assert scheduler.schedule["health.beat-heartbeat"].options["expires"] == 60
    assert not PeriodicTask.objects.filter(name="celery.backend_cleanup").exists()


def test_every_periodic_job_goes_to_the_maintenance_queue(settings):
    from celery import current_app

    from apps.operations.schedule import PERIODIC_JOBS

    settings.CELERY_MAINTENANCE_QUEUE = "maintenance-queue-of-this-test"
    current_app.loader.import_default_modules()
    router = current_app.amqp.router
    for job in PERIODIC_JOBS:
        queue = router.route({}, job.task, (), {}, None)["queue"]
        assert queue.name == "maintenance-queue-of-this-test", job.task
    # User tasks keep the default queue.
    assert router.route({}, "tasks.execute", (), {}, None)["queue"].name != (
        "maintenance-queue-of-this-test"
    )
