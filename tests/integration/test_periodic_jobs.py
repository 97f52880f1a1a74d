"""Periodic jobs delivered to a real worker: the stuck-task reaper and result cleanup."""

import json
import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.conf import settings
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.tasks.models import Task, TaskStatus
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.worker


def abandoned_task(user) -> Task:
    """A task left running long ago by a worker that is gone with its message (not idempotent)."""
    long_ago = timezone.now() - timedelta(
        seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_STUCK_MARGIN_SECONDS + 60
    )
    return Task.objects.create(
        owner=user,
        type="test.flaky",
        status=TaskStatus.RUNNING,
        started_at=long_ago,
        celery_task_id=str(uuid.uuid4()),
    )


def deliver(task_name: str):
    """Send ``task_name`` as beat does; wait for and return its decoded result."""
    sent = current_app.send_task(task_name)
    row = wait_for(
        lambda: TaskResult.objects.filter(task_id=sent.id, status="SUCCESS").first(),
        timeout=60,
        interval=0.2,
        message=f"{task_name} did not run",
    )
    return json.loads(row.result)


def test_the_reaper_fails_an_abandoned_task_once_per_interval(start_worker, user):
    task = abandoned_task(user)
    start_worker()

    assert deliver("tasks.recover_stuck") == {
        "requeued": 0,
        "failed": 1,
        "redispatched": 0,
        "republished": 0,
    }
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.finished_at is not None
    assert task.error == {
        "message": (
            "The worker running this task stopped before it finished "
            "(it was lost or ran past its time limit)."
        ),
        "type": "WorkerLost",
    }

    # A second beat sending the same job within five minutes changes nothing.
    another = abandoned_task(user)
    assert deliver("tasks.recover_stuck") == "skipped"
    assert Task.objects.get(pk=another.pk).status == TaskStatus.RUNNING


def test_result_cleanup_deletes_results_past_their_expiry(start_worker):
    expired = TaskResult.objects.create(task_id="expired", status="SUCCESS")
    TaskResult.objects.filter(pk=expired.pk).update(
        date_done=timezone.now() - timedelta(seconds=settings.CELERY_RESULT_EXPIRES + 60)
    )
    recent = TaskResult.objects.create(task_id="recent", status="SUCCESS")
    start_worker()

    assert deliver("tasks.cleanup_results") == {"results": 1}
    assert not TaskResult.objects.filter(pk=expired.pk).exists()
    assert TaskResult.objects.filter(pk=recent.pk).exists()


def test_maintenance_jobs_run_while_user_tasks_hold_every_worker_slot(
    transactional_db, api_client, settings, tmp_path
):
    """scripts/start-worker serves the maintenance queue with a process of its own."""
    from django.db import connection

    from apps.health.models import ServiceHeartbeat
    from tests.integration.conftest import BIN, ROOT, process_env, spawn, stop

    settings.CELERY_MAINTENANCE_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-maintenance"
    worker = spawn(
        [str(ROOT / "scripts" / "start-worker")],
        env=process_env(
            PATH=f"{BIN}:/usr/bin:/bin",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
            CELERY_QUEUES=settings.CELERY_TASK_DEFAULT_QUEUE,
            CELERY_MAINTENANCE_QUEUE=settings.CELERY_MAINTENANCE_QUEUE,
            CELERY_CONCURRENCY="1",
            CELERY_HOSTNAME=f"{settings.CELERY_TASK_DEFAULT_QUEUE}@%h",
            DATA_DIR=str(tmp_path),
            LOG_FORMAT="json",
        ),
        log=tmp_path / "start-worker.log",
    )
    try:
        body = {"type": "diagnostics.sleep", "params": {"seconds": 60, "steps": 60}}
        task_id = api_client.post("/api/v1/tasks/", body, format="json").json()["id"]
        wait_for(
            lambda: Task.objects.get(pk=task_id).status == TaskStatus.RUNNING,
            timeout=60,
            message="the user task never started",
        )

        result = deliver("health.beat_heartbeat")  # as beat sends it

        assert ServiceHeartbeat.objects.filter(name="beat").exists(), result
        assert Task.objects.get(pk=task_id).status == TaskStatus.RUNNING  # the slot is still held
    finally:
        output = stop(worker, timeout=20)
    assert "maintenance-" in output
