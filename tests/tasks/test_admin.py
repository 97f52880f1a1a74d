"""Staff inspect and act on tasks in the admin."""

import pytest
from django_celery_results.models import TaskResult

from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_submit

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/task/"


@pytest.fixture
def failed_task(user):
    task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={"seconds": 3})
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.FAILED, error={"message": "it broke", "type": "RuntimeError"}
    )
    task.refresh_from_db()
    return task


def test_changelist_filters_and_searches(admin_client, failed_task, user):
    for query in ["", "?status__exact=failed", "?type=diagnostics.sleep", f"?q={user.username}"]:
        page = admin_client.get(CHANGELIST + query)
        assert page.status_code == 200, query
        assert str(failed_task.pk) in page.content.decode(), query
    assert (
        str(failed_task.pk)
        not in admin_client.get(CHANGELIST + "?status__exact=queued").content.decode()
    )


def test_detail_is_readable_and_links_to_the_celery_result(admin_client, failed_task):
    TaskResult.objects.create(task_id=failed_task.celery_task_id, status="SUCCESS")
    page = admin_client.get(f"{CHANGELIST}{failed_task.pk}/change/").content.decode()
    assert "&quot;seconds&quot;: 3" in page  # params, pretty-printed
    assert "it broke" in page
    assert "/admin/django_celery_results/taskresult/" in page


def test_retry_and_cancel_actions(admin_client, failed_task):
    response = admin_client.post(
        CHANGELIST, {"action": "retry_tasks", "_selected_action": [failed_task.pk]}, follow=True
    )
    assert response.status_code == 200
    failed_task.refresh_from_db()
    assert (failed_task.status, failed_task.attempt) == ("queued", 2)

    admin_client.post(CHANGELIST, {"action": "cancel_tasks", "_selected_action": [failed_task.pk]})
    failed_task.refresh_from_db()
    assert failed_task.status == "cancelled"

    # A finished task cannot be cancelled: the admin says so instead of failing.
    Task.objects.filter(pk=failed_task.pk).update(status=TaskStatus.SUCCEEDED)
    response = admin_client.post(
        CHANGELIST, {"action": "cancel_tasks", "_selected_action": [failed_task.pk]}, follow=True
    )
    assert "The task has already finished (succeeded)." in response.content.decode()
