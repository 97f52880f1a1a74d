"""Truthful statuses: a batch is failed when every prompt failed and says how many failed
otherwise; its interactions carry it; Celery's result rows agree with each task's outcome."""

import pytest
from celery import current_app
from django_celery_results.models import TaskResult

from apps.tasks.execution import execute
from apps.tasks.models import Task
from apps.tasks.services import EXECUTE_TASK
from tests.fakes.openai_server import Reply
from tests.integration.conftest import stop, wait_for
from tests.integration.test_ai_end_to_end import provider_env
from tests.integration.test_tasks_worker import finished, poll

TASKS = "/api/v1/tasks/"
INTERACTIONS = "/api/v1/ai/interactions/"
MODEL = "fake-gpt"


def submit_batch(client, prompts, model=MODEL):
    response = client.post(
        TASKS, {"type": "ai.batch", "params": {"prompts": prompts, "model": model}}, format="json"
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def run_in_this_process(task_id):
    """What a worker does with the task's message (no broker in these tests)."""
    celery_task_id = Task.objects.get(pk=task_id).celery_task_id
    execute(task_id=task_id, celery_task_id=celery_task_id, worker="tests@here:1")


@pytest.mark.django_db
def test_a_batch_whose_every_prompt_failed_is_failed(api_client, openai_model):
    openai_model.outage(60, status=500)
    task_id = submit_batch(api_client, ["one", "two", "three"])
    run_in_this_process(task_id)

    task = api_client.get(f"{TASKS}{task_id}/").json()
    assert task["status"] == "failed"
    assert task["error"] == {"message": "3 of 3 prompts failed", "type": "AllPromptsFailed"}
    assert task["progress"]["message"] == "0 of 3 prompts answered, 3 failed"
    result = task["result"]
    assert {key: result[key] for key in ("prompts", "answered", "failed", "summary")} == {
        "prompts": 3,
        "answered": 0,
        "failed": 3,
        "summary": "0 of 3 prompts answered, 3 failed",
    }
    # Staff can still follow each prompt to its recorded failure.
    assert [item["status"] for item in result["interactions"]] == ["failed"] * 3
    for item in result["interactions"]:
        interaction = api_client.get(f"{INTERACTIONS}{item['id']}/").json()
        assert interaction["status"] == "failed"
        assert interaction["error"]


@pytest.mark.django_db
def test_a_batch_with_one_failed_prompt_succeeds_and_counts_the_failure(api_client, openai_model):
    openai_model.script(Reply(), Reply(status=400), Reply())
    task_id = submit_batch(api_client, ["first", "second", "third"])
    run_in_this_process(task_id)

    task = api_client.get(f"{TASKS}{task_id}/").json()
    assert task["status"] == "succeeded"
    assert task["error"] is None
    result = task["result"]
    assert (result["prompts"], result["answered"], result["failed"]) == (3, 2, 1)
    assert result["summary"] == "2 of 3 prompts answered, 1 failed"
    assert task["progress"]["message"] == "2 of 3 prompts answered, 1 failed"
    assert [item["status"] for item in result["interactions"]] == [
        "succeeded",
        "failed",
        "succeeded",
    ]


@pytest.mark.django_db
def test_a_batch_answered_in_full_says_so(api_client):
    task_id = submit_batch(api_client, ["a", "b"], model="echo-1")
    run_in_this_process(task_id)

    result = api_client.get(f"{TASKS}{task_id}/").json()["result"]
    assert (result["prompts"], result["answered"], result["failed"]) == (2, 2, 0)
    assert result["summary"] == "2 of 2 prompts answered"


@pytest.mark.django_db
def test_each_batch_interaction_carries_its_task(api_client, openai_model):
    openai_model.script(Reply(status=400))  # a failed prompt is recorded with its task too
    task_id = submit_batch(api_client, ["failing", "answered", "also answered"])
    run_in_this_process(task_id)

    listed = api_client.get(f"{TASKS}{task_id}/").json()["result"]["interactions"]
    interactions = [api_client.get(f"{INTERACTIONS}{item['id']}/").json() for item in listed]
    assert [interaction["status"] for interaction in interactions] == [
        "failed",
        "succeeded",
        "succeeded",
    ]
    assert {interaction["task_id"] for interaction in interactions} == {task_id}


def result_row(task_id, *, until=lambda row: True):
    """The Celery result row of the task's current attempt, once the worker wrote it."""
    celery_task_id = Task.objects.get(pk=task_id).celery_task_id
    return wait_for(
        lambda: (
            (row := TaskResult.objects.filter(task_id=celery_task_id).first())
            and until(row)
            and row
        ),
        timeout=15,
        message=f"no Celery result row for task {task_id}",
    )


@pytest.mark.worker
def test_celery_result_rows_agree_with_the_tasks_on_a_real_worker(
    start_worker, api_client, openai_model
):
    worker = start_worker(**provider_env(openai_model))
    openai_model.outage(120, status=500)
    failed_batch = submit_batch(api_client, ["one", "two"])
    failed_sleep = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 0, "fail": True}}, format="json"
    ).json()["id"]
    succeeded_sleep = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 0}}, format="json"
    ).json()["id"]
    statuses = {
        task_id: poll(api_client, task_id, finished)[-1]["status"]
        for task_id in (failed_batch, failed_sleep, succeeded_sleep)
    }
    assert statuses == {
        failed_batch: "failed",
        failed_sleep: "failed",
        succeeded_sleep: "succeeded",
    }

    rows = {task_id: result_row(task_id) for task_id in statuses}
    assert {task_id: (row.status, row.task_name) for task_id, row in rows.items()} == {
        failed_batch: ("FAILURE", "ai.batch"),
        failed_sleep: ("FAILURE", "diagnostics.sleep"),
        succeeded_sleep: ("SUCCESS", "diagnostics.sleep"),
    }
    # Celery reads the rows back: a failed task's row holds its error.
    failure = current_app.AsyncResult(rows[failed_batch].task_id)
    assert failure.state == "FAILURE"
    assert str(failure.result) == "AllPromptsFailed: 2 of 2 prompts failed"
    assert current_app.AsyncResult(rows[failed_sleep].task_id).failed()
    assert current_app.AsyncResult(rows[succeeded_sleep].task_id).successful()

    # The same message delivered again (a republished copy) leaves the row as it was.
    done_before = rows[failed_sleep].date_done
    current_app.send_task(EXECUTE_TASK, args=[failed_sleep], task_id=rows[failed_sleep].task_id)
    again = result_row(failed_sleep, until=lambda row: row.date_done > done_before)
    assert (again.status, again.task_name) == ("FAILURE", "diagnostics.sleep")

    # An expected failure is no error of the Celery task: no retry, no traceback logged.
    output = stop(worker.process)
    assert "Traceback" not in output
    assert "] retry:" not in output  # Celery's line for a retried task


@pytest.mark.worker
def test_a_cancelled_tasks_result_row_is_revoked(start_worker, api_client):
    start_worker()
    body = {"type": "diagnostics.sleep", "params": {"seconds": 30, "steps": 30}}
    task_id = api_client.post(TASKS, body, format="json").json()["id"]
    poll(api_client, task_id, lambda task: task["status"] == "running")
    api_client.post(f"{TASKS}{task_id}/cancel/")
    assert poll(api_client, task_id, finished)[-1]["status"] == "cancelled"

    row = result_row(task_id)
    assert (row.status, row.task_name) == ("REVOKED", "diagnostics.sleep")
