"""Recovery of tasks whose worker or message was lost."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from kombu import Connection

from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_recover, task_submit


def stuck(user, type_name: str) -> Task:
    task, _ = task_submit(owner=user, type_name=type_name, params={})
    long_ago = timezone.now() - timedelta(
        seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_STUCK_MARGIN_SECONDS + 60
    )
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.RUNNING, started_at=long_ago, worker="worker@gone:123"
    )
    return task


@pytest.mark.django_db
def test_stuck_tasks_are_requeued_when_idempotent_and_failed_otherwise(user):
    idempotent = stuck(user, "diagnostics.sleep")
    other = stuck(user, "test.flaky")
    recent, _ = task_submit(owner=user, type_name="test.flaky", params={})
    Task.objects.filter(pk=recent.pk).update(status=TaskStatus.RUNNING, started_at=timezone.now())

    assert task_recover() == {"requeued": 1, "failed": 1, "redispatched": 0, "republished": 0}

    idempotent_after = Task.objects.get(pk=idempotent.pk)
    assert idempotent_after.status == TaskStatus.QUEUED
    assert idempotent_after.celery_task_id != idempotent.celery_task_id  # old message is void
    other_after = Task.objects.get(pk=other.pk)
    assert other_after.status == TaskStatus.FAILED
    assert other_after.error["type"] == "WorkerLost"
    assert Task.objects.get(pk=recent.pk).status == TaskStatus.RUNNING
    assert task_recover() == {"requeued": 0, "failed": 0, "redispatched": 0, "republished": 0}


@pytest.mark.django_db(transaction=True)
def test_tasks_whose_publish_failed_are_published_again(user):
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)
        task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={})
        assert conn.default_channel.client.llen(queue) == 1
        a_while_ago = timezone.now() - timedelta(seconds=settings.TASK_REDISPATCH_AFTER_SECONDS + 1)
        Task.objects.filter(pk=task.pk).update(dispatch_pending=True, updated_at=a_while_ago)

        assert task_recover()["redispatched"] == 1
        assert conn.default_channel.client.llen(queue) == 2
        assert not Task.objects.get(pk=task.pk).dispatch_pending
        assert task_recover()["redispatched"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_task_queued_unchanged_for_long_is_published_once_more(user):
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)
        lost, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={})
        task_submit(owner=user, type_name="diagnostics.sleep", params={})  # a recent one
        conn.default_channel.queue_purge(queue)  # both messages lost
        long_ago = timezone.now() - timedelta(
            seconds=settings.TASK_REPUBLISH_QUEUED_AFTER_SECONDS + 1
        )
        Task.objects.filter(pk=lost.pk).update(updated_at=long_ago)

        assert task_recover()["republished"] == 1
        assert conn.default_channel.client.llen(queue) == 1
        after = Task.objects.get(pk=lost.pk)
        assert after.celery_task_id == lost.celery_task_id  # either copy may run it, once
        assert after.status == TaskStatus.QUEUED
        assert task_recover()["republished"] == 0  # not again before another period
