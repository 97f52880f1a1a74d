"""Real processes for integration tests: Celery workers and the web server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_env(**overrides: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        PATH=f"{BIN}:{environment.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    environment.update(overrides)
    return {k: v for k, v in environment.items() if v is not None}


def stop(process: subprocess.Popen, timeout: float = 10) -> str:
    """Stop a process group started with ``start_new_session`` and return its output."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.stdout.read() if process.stdout else ""


@dataclass
class Worker:
    broker_url: str
    queue: str
    process: subprocess.Popen
    output: str = field(default="")

    def json_logs(self) -> list[dict]:
        lines = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator:
    """Start a real Celery worker on ``broker_url`` consuming a queue of its own."""
    from django.db import connection

    started: list[Worker] = []

    def start(broker_url: str, **env: str) -> Worker:
        queue = f"test-{uuid.uuid4().hex[:12]}"
        database = connection.settings_dict["NAME"]
        process = subprocess.Popen(
            [
                str(BIN / "celery"),
                "--app",
                "config",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                "1",
                "--hostname",
                f"{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=process_env(
                DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
                CELERY_BROKER_URL=broker_url,
                DATA_DIR=str(tmp_path),
                LOG_FORMAT="json",
                **env,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        worker = Worker(broker_url, queue, process)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.output = stop(worker.process)


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")
