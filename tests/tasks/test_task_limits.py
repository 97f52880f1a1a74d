"""Per-user task limits: queued + running tasks, and prompts of queued + running batches."""

import pytest
from kombu import Connection

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task, TaskStatus
from tests.factories import TaskFactory, UserFactory
from tests.together import all_at_once

TASKS = "/api/v1/tasks/"
SLEEP = {"type": "diagnostics.sleep", "params": {"seconds": 1}}
LIMIT = 3


@pytest.fixture(autouse=True)
def _small_limits(settings):
    settings.TASKS_MAX_ACTIVE_PER_USER = LIMIT
    settings.TASKS_MAX_BATCH_PROMPTS_PER_USER = 5


# Each test so marked runs both ways a limited user's submission can go: in one flight
# to PostgreSQL, its own transaction (contextos.db.row_insert_in_turn), and inside a
# transaction of the caller's (the test's), the lock and the count statements of their own.
BOTH_WAYS = pytest.mark.parametrize(
    "way",
    [
        pytest.param("one flight", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("in a transaction", marks=pytest.mark.django_db),
    ],
)


@pytest.fixture(autouse=True)
def _nothing_left_queued(settings):
    yield
    with Connection(settings.CELERY_BROKER_URL) as conn:  # published in one flight's tests
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def submit(client, body=SLEEP, **headers):
    return client.post(TASKS, body, format="json", **headers)


def batch(prompts: int) -> dict:
    return {"type": "ai.batch", "params": {"prompts": [f"p{n}" for n in range(prompts)]}}


def assert_refused(response, code: str) -> dict:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "30"
    body = response.json()
    assert set(body) == {"error", "code", "details", "request_id"}
    assert body["code"] == code
    assert body["error"]
    assert body["request_id"] == response["X-Request-ID"]
    assert body["details"]["retry_after"] == 30
    return body


@BOTH_WAYS
def test_a_user_at_the_limit_is_refused_429_with_retry_after(way, api_client, user):
    for _ in range(LIMIT):
        assert submit(api_client).status_code == 202

    body = assert_refused(submit(api_client), "too_many_active_tasks")

    assert body["details"] == {"limit": LIMIT, "active": LIMIT, "retry_after": 30}
    assert Task.objects.filter(owner=user).count() == LIMIT


@pytest.mark.django_db
def test_staff_are_not_limited(staff_client, staff_user):
    for _ in range(LIMIT + 2):
        assert submit(staff_client).status_code == 202
    assert submit(staff_client, batch(6)).status_code == 202
    assert Task.objects.filter(owner=staff_user).count() == LIMIT + 3


@BOTH_WAYS
def test_only_queued_and_running_tasks_count(way, api_client, user):
    for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        TaskFactory(owner=user, status=status)
    TaskFactory(owner=user, status=TaskStatus.RUNNING)
    TaskFactory(owner=user, status=TaskStatus.QUEUED)

    assert submit(api_client).status_code == 202
    assert_refused(submit(api_client), "too_many_active_tasks")

    # A task that finishes frees its slot.
    Task.objects.filter(owner=user, status=TaskStatus.RUNNING).update(status=TaskStatus.SUCCEEDED)
    assert submit(api_client).status_code == 202


@BOTH_WAYS
def test_another_user_is_unaffected(way, api_client, client_for):
    for _ in range(LIMIT):
        submit(api_client)
    assert_refused(submit(api_client), "too_many_active_tasks")

    _, other_key = api_key_create(user=UserFactory(), name="other")
    assert submit(client_for(other_key)).status_code == 202


@BOTH_WAYS
def test_a_replay_at_the_limit_returns_the_existing_task(way, api_client):
    first = submit(api_client, HTTP_IDEMPOTENCY_KEY="nightly")
    for _ in range(LIMIT - 1):
        submit(api_client)

    replay = submit(api_client, HTTP_IDEMPOTENCY_KEY="nightly")
    assert replay.status_code == 200, replay.json()
    assert replay.json()["id"] == first.json()["id"]
    assert_refused(submit(api_client, HTTP_IDEMPOTENCY_KEY="another"), "too_many_active_tasks")


@BOTH_WAYS
def test_an_async_interaction_counts_as_a_task(way, api_client, user):
    for _ in range(LIMIT):
        submit(api_client)

    response = api_client.post(
        "/api/v1/ai/interactions/", {"prompt": "later please", "mode": "async"}, format="json"
    )

    assert_refused(response, "too_many_active_tasks")
    assert not AIInteraction.objects.filter(owner=user).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_at_the_limit_let_exactly_the_limit_through(client_for, user):
    _, raw_key = api_key_create(user=user, name="racing")
    TaskFactory(owner=user, status=TaskStatus.QUEUED)  # one slot taken before the race

    statuses = all_at_once(lambda: submit(client_for(raw_key)).status_code, times=8)

    assert sorted(statuses) == [202] * (LIMIT - 1) + [429] * (8 - LIMIT + 1)
    assert Task.objects.filter(owner=user, status=TaskStatus.QUEUED).count() == LIMIT


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_of_one_key_make_one_task(client_for, user):
    _, raw_key = api_key_create(user=user, name="replaying")

    answers = all_at_once(lambda: submit(client_for(raw_key), HTTP_IDEMPOTENCY_KEY="once"), times=6)

    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [202]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert Task.objects.filter(owner=user).count() == 1


@pytest.mark.django_db
def test_a_batch_past_the_prompt_cap_is_refused(api_client, user):
    assert submit(api_client, batch(3)).status_code == 202

    body = assert_refused(submit(api_client, batch(3)), "too_many_batch_prompts")

    assert body["details"] == {"limit": 5, "in_flight": 3, "requested": 3, "retry_after": 30}
    assert submit(api_client, batch(2)).status_code == 202  # up to the cap, included
    assert_refused(submit(api_client, batch(1)), "too_many_batch_prompts")
    # Finished batches' prompts are no longer in flight.
    Task.objects.filter(owner=user, type="ai.batch").update(status=TaskStatus.SUCCEEDED)
    assert submit(api_client, batch(5)).status_code == 202


@BOTH_WAYS
def test_a_retry_over_the_limit_is_refused(way, api_client, staff_client, user):
    failed = TaskFactory(owner=user, status=TaskStatus.FAILED)
    for _ in range(LIMIT):
        submit(api_client)
    retry = f"{TASKS}{failed.pk}/retry/"

    body = assert_refused(api_client.post(retry), "too_many_active_tasks")

    assert body["details"]["active"] == LIMIT
    failed.refresh_from_db()
    assert (failed.status, failed.attempt) == (TaskStatus.FAILED, 1)
    assert failed.attempts.count() == 0
    # Staff may retry it all the same.
    assert staff_client.post(retry).status_code == 202
    failed.refresh_from_db()
    assert (failed.status, failed.attempt) == (TaskStatus.QUEUED, 2)


@pytest.mark.django_db
def test_a_retried_batch_counts_its_prompts_again(api_client):
    first = submit(api_client, batch(3)).json()
    assert api_client.post(f"{TASKS}{first['id']}/cancel/").status_code == 202
    assert submit(api_client, batch(3)).status_code == 202

    response = api_client.post(f"{TASKS}{first['id']}/retry/")

    body = assert_refused(response, "too_many_batch_prompts")
    assert body["details"]["in_flight"] == 3
    assert Task.objects.get(pk=first["id"]).status == TaskStatus.CANCELLED
