"""The tasks API without a worker: validation, ownership, idempotency, cancel and retry rules."""

import pytest
from django.urls import reverse

from apps.tasks.models import Task, TaskAttempt, TaskStatus
from apps.tasks.services import task_submit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TASKS = "/api/v1/tasks/"
# A well-formed id that no row has: fixed, so that every xdist worker collects the same test ids.
UNKNOWN_UUID = "3f2b8c1e-9d4a-4e6b-8f0a-5c7d1e2a9b64"
SLEEP = {"type": "diagnostics.sleep", "params": {"seconds": 1, "steps": 2}}


def submit(client, body=None, **headers):
    return client.post(TASKS, body or SLEEP, format="json", **headers)


def test_submit_answers_202_with_a_queued_task(
    api_client, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(api_client)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {
        "id",
        "type",
        "params",
        "status",
        "progress",
        "result",
        "error",
        "attempt",
        "created_at",
        "started_at",
        "finished_at",
    }
    assert body["status"] == "queued"
    assert body["attempt"] == 1
    assert body["params"] == {"seconds": 1, "steps": 2, "fail": False}  # defaults filled
    task = Task.objects.get(pk=body["id"])
    assert task.owner == user
    assert len(callbacks) == 1  # the message goes out only after commit


def test_types_lists_the_builtins_with_their_schema(api_client):
    response = api_client.get(reverse("tasks:types"))
    assert response.status_code == 200
    types = {entry["type"]: entry for entry in response.json()}
    sleep = types["diagnostics.sleep"]
    assert sleep["description"]
    assert sleep["params_schema"]["properties"]["steps"]["maximum"] == 1000
    assert "test.staff_only" not in types


def test_staff_see_and_may_submit_staff_only_types(staff_client, api_client):
    types = {entry["type"] for entry in staff_client.get(reverse("tasks:types")).json()}
    assert "test.staff_only" in types
    assert submit(staff_client, {"type": "test.staff_only"}).status_code == 202
    response = submit(api_client, {"type": "test.staff_only"})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "diagnostics.sleep", "params": {"seconds": 601}}, "seconds"),
        ({"type": "diagnostics.sleep", "params": {"steps": 0}}, "steps"),
        ({"type": "diagnostics.sleep", "params": {"steps": "many"}}, "steps"),
        ({"type": "diagnostics.sleep", "params": {"colour": "red"}}, "colour"),
    ],
)
def test_invalid_params_name_the_field(api_client, body, field):
    response = submit(api_client, body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "validation_error"
    assert field in error["details"]["params"]
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "no.such.type"}, "type"),
        ({"type": "tasks.execute"}, "type"),  # a Celery task, not a task type
        ({"type": "ai.generate"}, "type"),  # internal: started by ContextOS only
        ({"params": {}}, "type"),
        ({"type": "diagnostics.sleep", "params": [1]}, "params"),
        ({"type": "diagnostics.sleep", "priority": 1}, "priority"),
    ],
)
def test_bad_submissions_are_400(api_client, body, field):
    response = submit(api_client, body)
    assert response.status_code == 400
    assert field in response.json()["details"]


def test_idempotency_key_returns_the_first_task(api_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = submit(api_client, HTTP_IDEMPOTENCY_KEY="order-42")
        again = submit(api_client, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Task.objects.count() == 1
    assert len(callbacks) == 1

    other = {"type": "diagnostics.sleep", "params": {"seconds": 2}}
    conflict = submit(api_client, other, HTTP_IDEMPOTENCY_KEY="order-42")
    assert conflict.status_code == 409
    assert conflict.json()["details"]["task_id"] == first.json()["id"]


def test_idempotency_keys_are_per_user(api_client, staff_client):
    first = submit(api_client, HTTP_IDEMPOTENCY_KEY="same")
    second = submit(staff_client, HTTP_IDEMPOTENCY_KEY="same")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"])
def test_malformed_idempotency_key_is_400(api_client, key):
    response = submit(api_client, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["details"]


def test_owners_see_only_their_tasks_and_staff_see_all(api_client, client_for, staff_client, user):
    mine = submit(api_client).json()["id"]
    stranger = UserFactory()
    theirs, _ = task_submit(owner=stranger, type_name="diagnostics.sleep", params={})

    listed = [t["id"] for t in api_client.get(TASKS).json()["results"]]
    assert listed == [mine]
    for method, path in [
        ("get", f"{TASKS}{theirs.pk}/"),
        ("post", f"{TASKS}{theirs.pk}/cancel/"),
        ("post", f"{TASKS}{theirs.pk}/retry/"),
    ]:
        response = getattr(api_client, method)(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert Task.objects.get(pk=theirs.pk).status == TaskStatus.QUEUED

    staff_listed = {t["id"] for t in staff_client.get(TASKS).json()["results"]}
    assert {mine, str(theirs.pk)} <= staff_listed
    assert staff_client.get(f"{TASKS}{theirs.pk}/").status_code == 200


@pytest.mark.parametrize("task_id", ["not-a-uuid", "12345", "a.b", UNKNOWN_UUID])
@pytest.mark.parametrize(
    ("method", "route"),
    [("get", "tasks:task-detail"), ("post", "tasks:task-cancel"), ("post", "tasks:task-retry")],
)
def test_unknown_or_malformed_ids_are_no_such_task(api_client, task_id, method, route):
    response = getattr(api_client, method)(reverse(route, kwargs={"pk": task_id}))
    assert response.status_code == 404, response.content
    body = response.json()
    assert (body["error"], body["code"], body["details"]) == ("No such task.", "not_found", {})


def test_list_filters_and_paginates(api_client, user):
    for _ in range(3):
        submit(api_client)
    flaky = submit(api_client, {"type": "test.flaky"}).json()["id"]
    Task.objects.filter(pk=flaky).update(status=TaskStatus.FAILED)

    by_type = api_client.get(TASKS, {"type": "test.flaky"}).json()["results"]
    assert [t["id"] for t in by_type] == [flaky]
    by_status = api_client.get(TASKS, {"status": "queued"}).json()["results"]
    assert len(by_status) == 3

    page = api_client.get(TASKS, {"page_size": 2}).json()
    assert len(page["results"]) == 2
    assert page["next"]
    rest = api_client.get(page["next"]).json()
    assert len(rest["results"]) == 2
    assert rest["next"] is None

    bad = api_client.get(TASKS, {"status": "sleeping"})
    assert bad.status_code == 400
    assert "status" in bad.json()["details"]


def test_list_query_count_does_not_grow(api_client, user, django_assert_max_num_queries):
    for _ in range(2):
        task_submit(owner=user, type_name="diagnostics.sleep", params={})
    with django_assert_max_num_queries(4) as few:
        assert len(api_client.get(TASKS).json()["results"]) == 2
    for _ in range(30):
        task_submit(owner=user, type_name="diagnostics.sleep", params={})
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(api_client.get(TASKS).json()["results"]) == 32


def test_cancel_a_queued_task_means_it_never_runs(api_client):
    task_id = submit(api_client).json()["id"]
    response = api_client.post(f"{TASKS}{task_id}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"]
    # It is finished now: cancelling again is a conflict; it can be retried.
    again = api_client.post(f"{TASKS}{task_id}/cancel/")
    assert again.status_code == 409
    assert again.json()["error"] == "The task is already cancelled."
    assert again.json()["code"] == "task_finished"
    retried = api_client.post(f"{TASKS}{task_id}/retry/")
    assert retried.status_code == 202
    assert retried.json()["status"] == "queued"
    assert retried.json()["attempt"] == 2


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (TaskStatus.SUCCEEDED, "The task has already finished (succeeded)."),
        (TaskStatus.FAILED, "The task has already finished (failed)."),
        (TaskStatus.CANCELLED, "The task is already cancelled."),
    ],
)
def test_cancel_a_finished_task_is_409(api_client, status, message):
    task_id = submit(api_client).json()["id"]
    Task.objects.filter(pk=task_id).update(status=status)
    response = api_client.post(reverse("tasks:task-cancel", kwargs={"pk": task_id}))
    assert response.status_code == 409
    body = response.json()
    assert (body["error"], body["code"]) == (message, "task_finished")
    assert body["details"] == {"status": status}


@pytest.mark.parametrize("status", [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED])
def test_retry_is_only_for_failed_or_cancelled(api_client, status):
    task_id = submit(api_client).json()["id"]
    Task.objects.filter(pk=task_id).update(status=status)
    response = api_client.post(f"{TASKS}{task_id}/retry/")
    assert response.status_code == 409
    assert response.json()["code"] == "task_not_retryable"


def test_retry_keeps_the_failed_attempt(api_client, staff_client):
    task_id = submit(api_client).json()["id"]
    error = {"message": "boom", "type": "RuntimeError"}
    Task.objects.filter(pk=task_id).update(
        status=TaskStatus.FAILED, error=error, error_traceback="Traceback: boom"
    )
    failed = api_client.get(f"{TASKS}{task_id}/").json()
    assert failed["error"] == error  # no traceback for the owner...
    assert staff_client.get(f"{TASKS}{task_id}/").json()["error"]["traceback"]  # ...staff only

    response = api_client.post(f"{TASKS}{task_id}/retry/")
    assert response.status_code == 202
    assert response.json()["attempt"] == 2
    assert response.json()["error"] is None
    attempt = TaskAttempt.objects.get(task_id=task_id)
    assert (attempt.number, attempt.status, attempt.error) == (1, "failed", error)


def test_tasks_need_a_key(anon_client):
    assert anon_client.get(TASKS).status_code == 401
    assert submit(anon_client).status_code == 401
    assert anon_client.get(reverse("tasks:types")).status_code == 401
