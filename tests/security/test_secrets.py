"""A raw API key shows up nowhere but in the Authorization header that carries it: not
in logs (of the app or the server), responses or the database; and prompts stay out
of Celery's result rows."""

import json
import logging
import urllib.request
import uuid

import pytest
from django_celery_results.models import TaskResult

from apps.accounts.services import api_key_create, api_key_revoke
from apps.tasks.models import Task
from contextos.logging import ContextFilter, JSONFormatter
from tests.accounts.test_key_storage import database_contains
from tests.integration.conftest import wait_for
from tests.integration.test_tasks_worker import finished, poll
from tests.security.routes import exercise

pytestmark = pytest.mark.django_db


def rendered(record: logging.LogRecord) -> str:
    """The record as both log formats write it (message, extra fields, traceback)."""
    ContextFilter().filter(record)
    text = logging.Formatter("%(message)s %(request_id)s").format(record)
    return text + JSONFormatter().format(record)


@pytest.mark.urls("tests.kernel.urls")  # the project's URLs plus one that raises
def test_raw_key_is_in_no_log_line_and_no_response(caplog, user, client_for):
    caplog.set_level(logging.DEBUG)
    api_key, raw_key = api_key_create(user=user)
    client = client_for(raw_key)

    responses = exercise(client)
    responses.append(client.get("/api/v1/_test/explode/"))  # a 500, logged with its traceback
    api_key_revoke(api_key=api_key)
    responses.append(client.get("/api/v1/tasks/"))

    statuses = {response.status_code for response in responses}
    assert {200, 201, 202, 400, 401, 404, 413, 500} <= statuses, statuses
    logged = "\n".join(rendered(record) for record in caplog.records)
    # The logs were captured: the 500's traceback and the 4xx warnings.
    assert "Unhandled exception" in logged
    assert "Not Found" in logged
    for secret in (raw_key, raw_key[len(api_key.prefix) :]):
        assert secret not in logged
        for response in responses:
            assert secret not in response.content.decode(errors="replace")
            assert secret not in str(response.headers)


def http(base: str, path: str, key: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310
        f"{base}{path}",
        data=data,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.server
def test_raw_key_is_not_in_the_servers_output(start_web, user):
    base = start_web(LOG_LEVEL="DEBUG", WEB_ACCESS_LOG="-")
    api_key, raw_key = api_key_create(user=user)
    statuses = [
        http(base, "/api/v1/ai/interactions/", raw_key, {"prompt": "logged?"}),
        http(base, "/api/v1/tasks/", raw_key, {"type": "no.such.type"}),
        http(base, f"/api/v1/tasks/{uuid.uuid4()}/", raw_key),
        http(base, "/v1/chat/completions", raw_key, {"messages": []}),
    ]
    api_key_revoke(api_key=api_key)
    statuses.append(http(base, "/api/v1/tasks/", raw_key))
    assert statuses == [201, 400, 404, 400, 401]

    def logged_everything() -> str | None:
        output = start_web.output(base)
        return output if output.count('"GET /api/v1/tasks/ ') else None

    output = wait_for(logged_everything, timeout=10, message="no access log line")
    assert '"level": "WARNING"' in output  # application logs too, not just access lines
    assert raw_key not in output
    assert raw_key[len(api_key.prefix) :] not in output


@pytest.mark.worker
def test_async_interactions_and_batches_keep_prompts_out_of_celery_results(
    start_worker, user, client_for
):
    start_worker()
    _, raw_key = api_key_create(user=user)
    client = client_for(raw_key)
    prompt = f"confidential prompt {uuid.uuid4().hex}"
    batch_prompt = f"confidential batch prompt {uuid.uuid4().hex}"

    interaction = client.post(
        "/api/v1/ai/interactions/", {"prompt": prompt, "mode": "async"}, format="json"
    ).json()
    batch = client.post(
        "/api/v1/tasks/", {"type": "ai.batch", "params": {"prompts": [batch_prompt]}}, format="json"
    ).json()
    assert poll(client, interaction["task_id"], finished)[-1]["status"] == "succeeded"
    assert poll(client, batch["id"], finished)[-1]["status"] == "succeeded"
    answered = client.get(f"/api/v1/ai/interactions/{interaction['id']}/").json()
    assert answered["response"] == f"Echo: {prompt}"

    celery_ids = list(
        Task.objects.filter(pk__in=[interaction["task_id"], batch["id"]]).values_list(
            "celery_task_id", flat=True
        )
    )
    rows = wait_for(
        lambda: (
            (found := list(TaskResult.objects.filter(task_id__in=celery_ids)))
            and len(found) == 2
            and found
        ),
        timeout=10,
        message="no Celery result rows",
    )
    assert {row.task_name for row in rows} == {"ai.generate", "ai.batch"}
    for row in rows:
        stored = " ".join(
            str(value)
            for value in (row.task_args, row.task_kwargs, row.result, row.meta, row.traceback)
        )
        assert row.task_args, "the row records the task's arguments"
        for secret in (prompt, batch_prompt, raw_key):
            assert secret not in stored
    # Nor anywhere else in the database, the result table included.
    assert database_contains(raw_key) == []
    assert database_contains(prompt.split()[-1]) == [
        "ai_interactions_aiinteraction.messages",
        "ai_interactions_aiinteraction.prompt",
        "ai_interactions_aiinteraction.response",
        "ai_interactions_aiinteraction.response_message",
    ]
