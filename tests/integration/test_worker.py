"""A real Celery worker runs a task end to end on each supported broker."""

import socket
import threading
import time
import uuid

import pytest
from celery import current_app
from django.conf import settings
from django_celery_results.models import TaskResult
from kombu import Connection

from apps.health.models import ServiceHeartbeat
from contextos.context import request_id_var
from tests.integration.conftest import stop, wait_for

pytestmark = pytest.mark.worker

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_is_listening() -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", 5672)) == 0


def broker_connection(broker_url: str, data_dir) -> Connection:
    if broker_url == "filesystem://":
        folder = data_dir / "broker" / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        control = data_dir / "broker" / "control"
        control.mkdir(parents=True, exist_ok=True)
        return Connection(
            broker_url,
            transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "control_folder": str(control),
            },
        )
    return Connection(broker_url)


@pytest.mark.parametrize(
    "broker",
    ["redis", "amqp", "filesystem"],
    ids=["redis", "rabbitmq", "embedded-filesystem"],
)
def test_worker_runs_a_task_and_records_its_result(start_worker, tmp_path, broker):
    broker_url = {
        "redis": settings.CELERY_BROKER_URL,
        "amqp": RABBITMQ_URL,
        "filesystem": "filesystem://",
    }[broker]
    if broker == "amqp":
        assert rabbitmq_is_listening(), "RabbitMQ must run on 127.0.0.1:5672 for this test"
    worker = start_worker(broker_url, queue=f"test-{uuid.uuid4().hex[:12]}")

    token = request_id_var.set("req-from-the-api-call")
    try:
        with broker_connection(broker_url, tmp_path) as conn:
            result = current_app.send_task(
                "health.beat_heartbeat", queue=worker.queue, connection=conn
            )
    finally:
        request_id_var.reset(token)

    row = wait_for(
        lambda: TaskResult.objects.filter(task_id=result.id, status="SUCCESS").first(),
        timeout=60,
        interval=0.2,
        message=f"no TaskResult for {result.id}",
    )
    assert row.task_name == "health.beat_heartbeat"
    assert ServiceHeartbeat.objects.filter(name="beat").exists()

    worker.output = stop(worker.process)
    task_lines = [
        line for line in worker.json_logs() if line.get("message") == "Heartbeat recorded for beat"
    ]
    assert task_lines, worker.output[-2000:]
    assert task_lines[0]["task_id"] == result.id
    assert task_lines[0]["task_name"] == "health.beat_heartbeat"
    assert task_lines[0]["request_id"] == "req-from-the-api-call"


def test_task_events_flow_once_a_monitor_switches_them_on(start_worker):
    """Workers start quiet; Flower's ``enable_events`` broadcast turns task events on."""
    worker = start_worker(queue=f"test-{uuid.uuid4().hex[:12]}")
    hostname = f"{worker.queue}@{socket.gethostname()}"
    app = current_app
    wait_for(
        lambda: app.control.ping(destination=[hostname], timeout=0.5),
        timeout=60,
        message=f"worker {hostname} did not answer",
    )
    seen: list[str] = []

    with Connection(settings.CELERY_BROKER_URL) as conn:
        receiver = app.events.Receiver(
            conn, handlers={"task-succeeded": lambda event: seen.append(event["uuid"])}
        )
        ready = threading.Event()
        on_consume_ready = receiver.on_consume_ready

        def consuming(*args, **kwargs):
            on_consume_ready(*args, **kwargs)
            ready.set()

        receiver.on_consume_ready = consuming
        listener = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        listener.start()
        try:
            assert ready.wait(10), "the event receiver did not start"
            quiet = app.send_task("health.beat_heartbeat", queue=worker.queue)
            quiet.get(timeout=30, disable_sync_subtasks=False)
            time.sleep(1)
            assert quiet.id not in seen

            replies = app.control.enable_events(destination=[hostname], reply=True, timeout=5)
            assert replies, "the worker did not answer enable_events"
            watched = app.send_task("health.beat_heartbeat", queue=worker.queue)
            wait_for(lambda: watched.id in seen, timeout=30, message="no task-succeeded event")
        finally:
            receiver.should_stop = True
            listener.join(timeout=5)
