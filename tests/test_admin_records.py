"""Detail pages are read-only, with the actions a record allows as buttons; lists fit and
sum the filtered set; tasks and their interactions link both ways."""

import re
from decimal import Decimal

import pytest
from django_celery_results.models import TaskResult

from apps.governance.models import AuditEntry
from apps.tasks.models import Task, TaskStatus
from contextos.admin import duration, money
from tests.factories import InteractionFactory, TaskFactory

pytestmark = pytest.mark.django_db

TASKS = "/admin/tasks/task/"
INTERACTIONS = "/admin/ai_interactions/aiinteraction/"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in run\n    boom()\n'


def buttons(page: str) -> list[str]:
    return re.findall(r'name="record_action" value="(\w+)"', page)


def status_on(page: str) -> str:
    return re.search(r'id="record-live".*?data-status="(\w+)"', page, re.S).group(1)


def test_a_failed_task_page_is_read_only_with_its_traceback_and_a_retry_button(admin_client, user):
    task = TaskFactory(
        owner=user,
        status=TaskStatus.FAILED,
        error={"message": "it broke", "type": "RuntimeError"},
        error_traceback=TRACEBACK,
    )
    page = admin_client.get(f"{TASKS}{task.pk}/change/").content.decode()

    assert 'name="_save"' not in page
    assert buttons(page) == ["retry"]
    assert status_on(page) == "failed"
    assert "data-live-refresh" not in page  # finished: nothing to refresh
    # Indentation kept: the traceback is preformatted text.
    assert '<pre class="preformatted">Traceback' in page
    assert "\n    boom()" in page

    response = admin_client.post(f"{TASKS}{task.pk}/act/", {"record_action": "retry"}, follow=True)

    assert response.redirect_chain[-1][0] == f"{TASKS}{task.pk}/change/"
    assert [str(m) for m in response.context["messages"]] == [f"Task {task.pk} queued again."]
    task.refresh_from_db()
    assert (task.status, task.attempt) == ("queued", 2)
    page = response.content.decode()
    assert status_on(page) == "queued"
    assert 'data-live-refresh="1000"' in page
    assert buttons(page) == ["cancel"]
    entry = AuditEntry.objects.get(action="task.retry", target_id=str(task.pk))
    assert entry.actor.username == "admin"


def test_a_running_task_shows_its_progress_refreshes_and_can_be_cancelled(admin_client, user):
    task = TaskFactory(
        owner=user, status=TaskStatus.RUNNING, progress={"percent": 40, "message": "step 2 of 5"}
    )
    page = admin_client.get(f"{TASKS}{task.pk}/change/").content.decode()

    assert '<progress max="100" value="40">' in page
    assert "step 2 of 5" in page
    assert 'data-live-refresh="1000"' in page
    assert buttons(page) == ["cancel"]

    response = admin_client.post(f"{TASKS}{task.pk}/act/", {"record_action": "cancel"}, follow=True)

    task.refresh_from_db()
    assert task.cancel_requested_at is not None
    # Still running until its worker stops it: the page says running and offers no second
    # cancel; it goes on refreshing.
    page = response.content.decode()
    assert status_on(page) == "running"
    assert buttons(page) == []
    assert 'data-live-refresh="1000"' in page


def test_an_action_the_record_does_not_allow_is_refused_with_a_message(admin_client, user):
    task = TaskFactory(owner=user, status=TaskStatus.SUCCEEDED)
    response = admin_client.post(f"{TASKS}{task.pk}/act/", {"record_action": "retry"}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "“retry” is not possible for this record now."
    ]
    task.refresh_from_db()
    assert task.status == "succeeded"
    assert admin_client.get(f"{TASKS}{task.pk}/act/").status_code == 405
    # The read-only page cannot be posted to.
    assert admin_client.post(f"{TASKS}{task.pk}/change/", {}).status_code == 403


def test_list_actions_say_what_happened(admin_client, user):
    queued = TaskFactory(owner=user, status=TaskStatus.QUEUED)
    running = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    response = admin_client.post(
        TASKS,
        {"action": "cancel_tasks", "_selected_action": [queued.pk, running.pk]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert "Cancelled 1 queued task(s)." in shown
    assert any(m.startswith("Asked 1 running task(s) to stop") for m in shown)


def test_tasks_and_their_interactions_link_both_ways(admin_client, user):
    task = TaskFactory(owner=user, type="ai.batch", status=TaskStatus.SUCCEEDED)
    mine = [InteractionFactory(owner=user, task=task) for _ in range(3)]
    other = InteractionFactory(owner=user)

    page = admin_client.get(f"{TASKS}{task.pk}/change/").content.decode()
    for interaction in mine:
        assert f"{INTERACTIONS}{interaction.pk}/change/" in page
    assert f"{INTERACTIONS}?task={task.pk}" in page

    listed = admin_client.get(f"{INTERACTIONS}?task={task.pk}")
    assert listed.status_code == 200
    assert {row.pk for row in listed.context["cl"].result_list} == {i.pk for i in mine}
    assert other.pk not in {row.pk for row in listed.context["cl"].result_list}

    detail = admin_client.get(f"{INTERACTIONS}{mine[0].pk}/change/").content.decode()
    assert f"{TASKS}{task.pk}/change/" in detail
    # A malformed id lists nothing rather than failing.
    assert admin_client.get(f"{INTERACTIONS}?task=not-a-uuid").status_code == 200


def test_the_interaction_list_sums_the_filtered_set(admin_client, user):
    for cost in ("0.0012", "0.0030"):
        InteractionFactory(
            owner=user, input_tokens=1000, output_tokens=2000, cost_usd=Decimal(cost)
        )
    InteractionFactory(
        owner=user,
        status="failed",
        input_tokens=7,
        output_tokens=0,
        cost_usd=Decimal(0),
        error={"message": "The provider answered 503"},
    )

    everything = admin_client.get(INTERACTIONS).context["cl"].totals
    assert everything == [
        ("requests", "3"),
        ("input tokens", "2,007"),
        ("output tokens", "4,000"),
        ("cost", "$0.0042"),
    ]
    failed = admin_client.get(INTERACTIONS + "?status__exact=failed")
    assert failed.context["cl"].totals[0] == ("requests", "1")
    page = failed.content.decode()
    assert 'class="list-totals"' in page
    assert "The provider answered 503" in page
    assert "icon-no" not in page  # a cache miss is not a red cross


def test_the_celery_result_page_links_its_task_and_cannot_be_saved(admin_client, user):
    task = TaskFactory(owner=user, status=TaskStatus.FAILED)
    result = TaskResult.objects.create(
        task_id=task.celery_task_id,
        task_name="diagnostics.sleep",
        status="FAILURE",
        traceback=TRACEBACK,
        result='{"exc_type": "RuntimeError"}',
    )
    listed = admin_client.get("/admin/django_celery_results/taskresult/").content.decode()
    assert f"{TASKS}{task.pk}/change/" in listed
    page = admin_client.get(
        f"/admin/django_celery_results/taskresult/{result.pk}/change/"
    ).content.decode()
    assert 'name="_save"' not in page
    assert f"{TASKS}{task.pk}/change/" in page
    assert "&quot;exc_type&quot;: &quot;RuntimeError&quot;" in page
    assert "\n    boom()" in page


def test_a_new_task_without_interactions_or_result_renders(admin_client, user):
    task = TaskFactory(owner=user)
    assert admin_client.get(f"{TASKS}{task.pk}/change/").status_code == 200
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (None, "—"),
        (Decimal(0), "$0.00"),
        (Decimal("12.345"), "$12.35"),
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0.0042"), "$0.0042"),
        (Decimal("0.00012345678"), "$0.00012"),
        (Decimal("0.5"), "$0.50"),
    ],
)
def test_money_is_dollars_for_people(amount, shown):
    assert money(amount) == shown


def test_durations_read_as_time():
    assert [duration(v) for v in (None, 850, 3200, 245_000, 7_800_000, 1_312_200_000)] == [
        "—",
        "850 ms",
        "3.2 s",
        "4 min 05 s",
        "2 h 10 min",
        "15 d 4 h",
    ]
