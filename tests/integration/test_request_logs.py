"""One request id from the client's header to the production web log and the worker's log."""

import json
import urllib.request

import pytest
from kombu import Connection

from apps.ai_interactions.models import AIInteraction
from tests.integration.conftest import output_of, stop, wait_for

pytestmark = [pytest.mark.server, pytest.mark.worker]


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_request_id_reaches_the_web_and_worker_logs(start_web, start_worker, api_key):
    from django.conf import settings

    # Production settings publish to the "default" queue.
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge("default")
    worker = start_worker(queue="default")
    base = start_web(WEB_ACCESS_LOG="-")

    request = urllib.request.Request(  # noqa: S310
        f"{base}/api/v1/ai/interactions/",
        data=json.dumps({"prompt": "trace me", "mode": "async"}).encode(),
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "X-Request-ID": "trace-logs-42",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 202
        request_id = response.headers["X-Request-ID"]
        interaction_id = json.loads(response.read())["id"]
    assert request_id == "trace-logs-42"
    interaction = wait_for(
        lambda: (
            AIInteraction.objects.filter(pk=interaction_id, status="succeeded")
            .select_related("task")
            .first()
        ),
        timeout=60,
        message="the worker never answered the interaction",
    )

    # Every line gunicorn and Django wrote is one JSON object.
    web_lines = [json.loads(line) for line in start_web.output(base).splitlines() if line]
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in web_lines)
    access = [
        line
        for line in web_lines
        if line["logger"] == "gunicorn.access"
        and "POST /api/v1/ai/interactions/" in line["message"]
    ]
    assert [line["request_id"] for line in access] == [request_id]

    # Celery logs the task's outcome after it returns (the row is already succeeded):
    # wait for that line before stopping the worker, which would cut it off.
    celery_task_id = interaction.task.celery_task_id
    wait_for(
        lambda: any(
            line.get("task_id") == celery_task_id for line in json_lines(output_of(worker.process))
        ),
        timeout=30,
        message="the worker logged nothing for the task",
    )
    worker.output = stop(worker.process)
    task_lines = [
        line
        for line in json_lines(worker.output)
        if line.get("task_id") == interaction.task.celery_task_id
    ]
    assert task_lines, worker.output[-3000:]
    assert {line["request_id"] for line in task_lines} == {request_id}
    assert {line["task_name"] for line in task_lines} == {"tasks.execute"}
