"""Staff act from a record's detail page and watch the outcome there: revoke a key that the
API then refuses, retry a failed task, cancel a running one (a real worker runs them).

The page is never reloaded by the test: after the action's redirect, a live page replaces
its status itself (``#record-live``) while the record is queued or running. One server,
worker and login for the three (each a subtest, reported on its own).
"""

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from kombu import Connection
from playwright.sync_api import Page, expect

from apps.accounts.services import api_key_create
from apps.tasks.models import Task
from tests.browser.conftest import (
    QUEUE,
    assert_clean,
    assert_fits,
    log_in,
    visit,
    without_async_unsafe,
)
from tests.factories import TaskFactory, UserFactory
from tests.integration.conftest import http_get, http_post_json, output_of, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.server]

# How long a live page may take to show a worker's progress (ms).
LIVE = 20_000


@pytest.fixture
def worker(start_worker):
    """A real worker on the queue the server publishes to, emptied first; two processes,
    so that a task left running by a failed check does not hold up the next one."""
    with Connection(settings.CELERY_BROKER_URL) as connection:
        connection.default_channel.queue_purge(QUEUE)
    return start_worker(queue=QUEUE, concurrency=2, purge=False, **without_async_unsafe())


def wait_until_ready(worker) -> None:
    """Wait for the worker to consume: the time a live page is given is for the task, not
    for a worker still starting."""
    wait_for(
        lambda: " ready." in output_of(worker.process),
        timeout=60,
        interval=0.3,
        message=f"the worker never got ready:\n{output_of(worker.process)[-3000:]}",
    )


def status_of(page: Page):
    return page.locator("#record-live .record-status")


def act(page: Page, button: str) -> None:
    """Press an action button; wait for the page it redirects back to, with its message.
    From then on the page is marked: a reload would lose the mark (see ``not_reloaded``)."""
    page.locator("form.record-actions").get_by_role("button", name=button, exact=True).click()
    expect(page.locator(".messagelist .success")).to_be_visible()
    page.evaluate("window.loadedOnce = true")


def not_reloaded(page: Page) -> bool:
    return page.evaluate("window.loadedOnce === true")


def change_page(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def assert_read_only(page: Page) -> None:
    expect(page.locator("input[name=_save]")).to_have_count(0)
    expect(page.locator("input[name=_continue]")).to_have_count(0)


def retry_a_failed_task(page: Page, admin, worker) -> None:
    wait_until_ready(worker)
    now = timezone.now()
    task = TaskFactory(
        owner=admin,
        params={"seconds": 4, "steps": 4, "fail": False},
        status="failed",
        error={"message": "The provider answered 503", "type": "ProviderUnavailable"},
        error_traceback=(
            "Traceback (most recent call last):\n"
            '  File "/app/apps/tasks/execution.py", line 143, in execute\n'
            "    result = task_type.run(context)\n"
            "ProviderUnavailable: The provider answered 503"
        ),
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
    )
    visit(page, change_page(task))
    assert_read_only(page)
    expect(status_of(page)).to_have_attribute("data-status", "failed")
    expect(page.locator("pre", has_text="ProviderUnavailable: The provider")).to_be_visible()
    actions = page.locator("form.record-actions")
    expect(actions.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)

    act(page, "Retry")
    expect(status_of(page)).to_have_attribute("data-status", "running", timeout=LIVE)
    expect(page.locator("#record-live progress")).to_be_visible()
    expect(status_of(page)).to_have_attribute("data-status", "succeeded", timeout=LIVE)
    assert not_reloaded(page)
    expect(actions.get_by_role("button", name="Retry", exact=True)).to_have_count(0)
    assert_fits(page)
    assert_clean(page)
    task.refresh_from_db()
    assert (task.status, task.attempt) == ("succeeded", 2)


def cancel_a_running_task(page: Page, console: str, admin) -> None:
    _, staff_key = api_key_create(user=admin, name="browser tests")
    status, _, body = http_post_json(
        f"{console}/api/v1/tasks/",
        {"type": "diagnostics.sleep", "params": {"seconds": 60, "steps": 60}},
        headers={"Authorization": f"Bearer {staff_key}"},
    )
    assert status == 202, body
    task = Task.objects.get(pk=json.loads(body)["id"])
    wait_for(
        lambda: Task.objects.filter(pk=task.pk, status="running", progress__isnull=False).exists(),
        timeout=30,
        message="the worker never started the task",
    )

    visit(page, change_page(task))
    assert_read_only(page)
    expect(status_of(page)).to_have_attribute("data-status", "running")
    expect(page.locator("#record-live progress")).to_be_visible()
    actions = page.locator("form.record-actions")
    expect(actions.get_by_role("button", name="Retry", exact=True)).to_have_count(0)

    act(page, "Cancel")
    expect(status_of(page)).to_have_attribute("data-status", "cancelled", timeout=LIVE)
    assert not_reloaded(page)
    expect(actions.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    assert_fits(page)
    assert_clean(page)
    task.refresh_from_db()
    assert task.status == "cancelled"


def revoke_a_key(page: Page, console: str) -> None:
    owner = UserFactory(username="mallory")
    api_key, raw_key = api_key_create(user=owner, name="leaked in a notebook")
    tasks = f"{console}/api/v1/tasks/"
    bearer = {"Authorization": f"Bearer {raw_key}"}
    assert http_get(tasks, headers=bearer)[0] == 200

    visit(page, change_page(api_key))
    assert_read_only(page)
    act(page, "Revoke")
    revoke = page.locator("form.record-actions").get_by_role("button", name="Revoke", exact=True)
    expect(revoke).to_have_count(0)
    assert_fits(page)
    assert_clean(page)

    status, _, body = http_get(tasks, headers=bearer)
    assert status == 401, body
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


@pytest.mark.worker
def test_staff_act_from_detail_pages_and_see_the_outcome_live(
    page, console, console_admin, worker, subtests
):
    log_in(page)
    # The key first: the worker is still starting meanwhile.
    with subtests.test(msg="revoke a key, then the API refuses it"):
        revoke_a_key(page, console)
    with subtests.test(msg="retry a failed task and watch it run to success"):
        retry_a_failed_task(page, console_admin, worker)
    with subtests.test(msg="cancel a running task and watch it stop"):
        cancel_a_running_task(page, console, console_admin)
