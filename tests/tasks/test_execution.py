"""A worker's run of a task, in process: the handler gets the task's owner from its context."""

import pytest

from apps.tasks.execution import execute
from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_submit

pytestmark = pytest.mark.django_db


def test_the_handler_gets_the_owner(user, django_assert_num_queries):
    task, _ = task_submit(owner=user, type_name="test.owner", params={})
    # The claim, the owner (asked for by the handler), then the finishing write.
    with django_assert_num_queries(3):
        outcome = execute(task_id=task.pk, celery_task_id=task.celery_task_id, worker="w@h:1")
    assert outcome.status == TaskStatus.SUCCEEDED
    assert Task.objects.get(pk=task.pk).result == user.get_username()


def test_a_task_taken_over_from_a_lost_worker_gets_its_owner_too(user):
    task, _ = task_submit(owner=user, type_name="test.owner", params={})
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING, worker="lost@h:1")
    outcome = execute(task_id=task.pk, celery_task_id=task.celery_task_id, worker="w@h:2")
    assert outcome.status == TaskStatus.SUCCEEDED
    assert Task.objects.get(pk=task.pk).result == user.get_username()
