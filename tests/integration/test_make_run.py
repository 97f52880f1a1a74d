"""`make run` on a machine with no configuration: the embedded default, end to end."""

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import (
    ROOT,
    free_port,
    http_get,
    http_post_json,
    process_env,
    stop,
    wait_for,
    wait_until_serving,
)

pytestmark = pytest.mark.server


def post_json(url: str, body: dict, key: str) -> dict:
    status, _, answer = http_post_json(url, body, headers={"Authorization": f"Bearer {key}"})
    assert status < 300, answer
    return json.loads(answer)


CREATE_STAFF_KEY = """
from django.contrib.auth import get_user_model
from apps.accounts.services import api_key_create
user, _ = get_user_model().objects.get_or_create(username="operator", defaults={"is_staff": True})
print(api_key_create(user=user, name="make run test")[1])
"""


def test_make_run_serves_with_no_configuration(tmp_path, static_root):
    port = free_port()
    env = process_env(
        DATA_DIR=str(tmp_path),
        STATIC_ROOT=str(static_root),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CELERY_CONCURRENCY="1",
        WEB_ACCESS_LOG="/dev/null",
    )
    # No server configured: no database, cache or broker URL, development settings.
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        seconds = wait_until_serving(base, process, timeout=180)
        print(f"make run answered /live after {seconds:.1f} s")
        status, _, body = http_get(f"{base}/api/v1/health/ready")
        assert status == 200, body

        key = subprocess.run(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", CREATE_STAFF_KEY],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()[-1]

        # Beat sends its heartbeat at start; the worker runs it through the
        # file broker and records it in the SQLite database.
        def beat_seen() -> dict | None:
            _, _, raw = http_get(
                f"{base}/api/v1/health/", headers={"Authorization": f"Bearer {key}"}
            )
            report = json.loads(raw)
            return report if report["beat"].get("age_seconds") is not None else None

        report = wait_for(beat_seen, timeout=60, interval=1, message="no beat heartbeat")
        assert report["checks"]["database"]["status"] == "ok"
        assert report["migrations"]["pending"] == []
        assert (tmp_path / "contextos.sqlite3").exists()

        # A task runs in the worker and reports its progress and end through the API.
        submitted = post_json(
            f"{base}/api/v1/tasks/",
            {"type": "diagnostics.sleep", "params": {"seconds": 1, "steps": 2}},
            key,
        )
        assert submitted["status"] == "queued"

        def finished() -> dict | None:
            _, _, raw = http_get(
                f"{base}/api/v1/tasks/{submitted['id']}/",
                headers={"Authorization": f"Bearer {key}"},
            )
            task = json.loads(raw)
            return task if task["status"] not in {"queued", "running"} else None

        task = wait_for(finished, timeout=60, interval=0.5, message="task never finished")
        assert task["status"] == "succeeded", task
        assert task["progress"]["percent"] == 100.0
    finally:
        output = stop(process, timeout=20)
    assert "ContextOS is up" in output, output[-3000:]
    assert os.path.exists(ROOT / ".venv" / ".installed")
