"""Tasks end to end: the API, a real Celery worker, Redis and PostgreSQL."""

import os
import signal
import time

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult
from kombu import Connection

from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_submit
from tests.integration.conftest import wait_for
from tests.tasktypes import effect_key

pytestmark = pytest.mark.worker

TASKS = "/api/v1/tasks/"


def poll(client, task_id, until, *, timeout=30.0, interval=0.05):
    """Poll the task through the API until ``until(task)``; return every state seen."""
    seen = []

    def reached():
        task = client.get(f"{TASKS}{task_id}/").json()
        seen.append(task)
        return until(task)

    try:
        wait_for(reached, timeout=timeout, interval=interval)
    except AssertionError:
        raise AssertionError(f"task {task_id} never got there; last seen: {seen[-1:]}") from None
    return seen


def finished(task):
    return task["status"] in {"succeeded", "failed", "cancelled"}


def queue_length(queue: str) -> int:
    from django.conf import settings

    with Connection(settings.CELERY_BROKER_URL) as conn:
        return conn.default_channel.client.llen(queue)


def test_sleep_reports_climbing_progress_then_succeeds(start_worker, api_client):
    start_worker()
    response = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 2, "steps": 4}}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    task_id = response.json()["id"]

    seen = poll(api_client, task_id, finished)
    statuses = [task["status"] for task in seen]
    assert "running" in statuses
    percents = [
        t["progress"]["percent"] for t in seen if t["status"] == "running" and t["progress"]
    ]
    assert len(set(percents)) >= 2, percents
    assert percents == sorted(percents)
    final = seen[-1]
    assert final["status"] == "succeeded", final
    assert final["progress"]["percent"] == 100.0
    assert final["result"] == {"slept_seconds": 2, "steps": 4}
    assert final["started_at"]
    assert final["finished_at"]
    celery_task_id = Task.objects.get(pk=task_id).celery_task_id
    # Celery stores its result once the task's body has returned, just after the task's
    # own row says succeeded: a moment later.
    result = TaskResult.objects.filter(task_id=celery_task_id, status="SUCCESS")
    wait_for(result.exists, timeout=5, message="Celery's result row")


def test_failure_then_retry(start_worker, api_client):
    start_worker()
    body = {"type": "diagnostics.sleep", "params": {"seconds": 0, "fail": True}}
    task_id = api_client.post(TASKS, body, format="json").json()["id"]
    failed = poll(api_client, task_id, finished)[-1]
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "Failed on purpose, as asked (fail: true)."
    assert failed["error"]["type"] == "DiagnosticFailure"

    retried = api_client.post(f"{TASKS}{task_id}/retry/").json()
    assert retried["attempt"] == 2
    again = poll(api_client, task_id, finished)[-1]
    assert again["status"] == "failed"
    assert again["attempt"] == 2

    flaky_id = api_client.post(TASKS, {"type": "test.flaky"}, format="json").json()["id"]
    assert poll(api_client, flaky_id, finished)[-1]["status"] == "failed"
    api_client.post(f"{TASKS}{flaky_id}/retry/")
    succeeded = poll(api_client, flaky_id, finished)[-1]
    assert succeeded["status"] == "succeeded"
    assert succeeded["attempt"] == 2
    assert succeeded["result"] == {"attempt": 2}


def test_cancel_a_running_task_stops_it_within_3_seconds(start_worker, api_client):
    start_worker()
    body = {"type": "diagnostics.sleep", "params": {"seconds": 30, "steps": 3}}
    task_id = api_client.post(TASKS, body, format="json").json()["id"]
    poll(api_client, task_id, lambda task: task["status"] == "running")

    cancelled_at = time.monotonic()
    response = api_client.post(f"{TASKS}{task_id}/cancel/")
    assert response.status_code == 202
    final = poll(api_client, task_id, finished)[-1]
    assert final["status"] == "cancelled"
    assert time.monotonic() - cancelled_at < 3.0

    done = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 0}}, format="json"
    )
    poll(api_client, done.json()["id"], finished)
    conflict = api_client.post(f"{TASKS}{done.json()['id']}/cancel/")
    assert conflict.status_code == 409


def test_a_task_that_ignores_cancellation_is_terminated(start_worker, api_client, settings):
    settings.TASK_CANCEL_GRACE_SECONDS = 1
    start_worker(concurrency=2)
    body = {"type": "test.stubborn", "params": {"seconds": 30}}
    task_id = api_client.post(TASKS, body, format="json").json()["id"]
    poll(api_client, task_id, lambda task: task["status"] == "running")
    api_client.post(f"{TASKS}{task_id}/cancel/")
    final = poll(api_client, task_id, finished, timeout=15)[-1]
    assert final["status"] == "cancelled"


def test_transient_errors_retry_automatically(start_worker, api_client):
    start_worker()
    task_id = api_client.post(TASKS, {"type": "test.transient"}, format="json").json()["id"]
    final = poll(api_client, task_id, finished)[-1]
    assert final["status"] == "succeeded", final
    assert final["result"] == {"runs": 3}
    assert final["attempt"] == 1


def test_worker_killed_mid_task_the_task_completes_exactly_once(start_worker, api_client):
    from django.core.cache import cache

    fast_recovery = {
        "CELERY_VISIBILITY_TIMEOUT": "6",
        "CELERY_TASK_TIME_LIMIT": "5",
        "CELERY_TASK_SOFT_TIME_LIMIT": "4",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
    }
    first = start_worker(**fast_recovery)
    body = {"type": "test.effect", "params": {"seconds": 3}}
    task_id = api_client.post(TASKS, body, format="json").json()["id"]
    poll(api_client, task_id, lambda t: t["status"] == "running" and t["progress"])

    os.killpg(first.process.pid, signal.SIGKILL)  # the whole worker, children included
    first.process.wait()
    assert Task.objects.get(pk=task_id).status == TaskStatus.RUNNING

    start_worker(purge=False, **fast_recovery)
    final = poll(api_client, task_id, finished, timeout=60, interval=0.2)[-1]
    assert final["status"] == "succeeded", final
    assert final["result"] == {"effects": 1}
    assert cache.get(effect_key(task_id)) == 1
    celery_task_id = Task.objects.get(pk=task_id).celery_task_id
    result = TaskResult.objects.filter(task_id=celery_task_id, status="SUCCESS")
    wait_for(result.exists, timeout=5, message="Celery's result row")  # see above
    assert result.count() == 1


def test_no_message_is_published_for_a_rolled_back_submission(start_worker, user):
    from django.conf import settings

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)

    class Abort(Exception):
        pass

    def submit_then_roll_back():
        with transaction.atomic():
            task_submit(owner=user, type_name="diagnostics.sleep", params={})
            raise Abort

    with pytest.raises(Abort):
        submit_then_roll_back()
    assert not Task.objects.exists()
    assert queue_length(queue) == 0

    task_submit(owner=user, type_name="diagnostics.sleep", params={})  # committed: published
    assert queue_length(queue) == 1


def test_idempotent_submissions_publish_one_message(transactional_db, api_client):
    from django.conf import settings

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)
    body = {"type": "diagnostics.sleep", "params": {}}
    ids = {
        api_client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1").json()["id"]
        for _ in range(3)
    }
    assert len(ids) == 1
    assert queue_length(queue) == 1


def test_a_worker_publishes_tasks_left_unpublished_when_it_connects(start_worker, user):
    task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={})
    # As if the broker had been down when the task was accepted: no message, row marked.
    Task.objects.filter(pk=task.pk).update(dispatch_pending=True)
    start_worker()  # empties the queue first
    wait_for(
        lambda: Task.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED,
        timeout=30,
        interval=0.2,
        message="the task left unpublished never ran",
    )
    assert not Task.objects.get(pk=task.pk).dispatch_pending
