"""The embedded default (no database, cache or broker URL) with two web processes, a
worker and beat: one cache, one set of counters and one workers count for all of them."""

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ROOT,
    admin_session,
    free_port,
    http_get,
    http_post_json,
    output_of,
    process_env,
    spawn,
    stop,
    wait_for,
    wait_until_serving,
)
from tests.prometheus import parse

pytestmark = pytest.mark.server

PASSWORD = "embedded-default-password-42"
SETUP = f"""
from django.contrib.auth import get_user_model
from apps.accounts.services import api_key_create
user = get_user_model().objects.create_superuser("operator", "operator@example.com", "{PASSWORD}")
print(api_key_create(user=user, name="embedded default")[1])
"""
# Each access line names the gunicorn worker process (pid) that answered.
ACCESS_LINE = re.compile(r'^<(\d+)> "(\w+) (\S+) ')


@dataclass
class Installation:
    base: str
    key: str
    process: subprocess.Popen

    def post(self, path: str, body: dict) -> dict:
        status, _, answer = http_post_json(
            f"{self.base}{path}", body, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert status < 300, answer
        return json.loads(answer)

    def get(self, path: str) -> dict:
        status, _, answer = http_get(
            f"{self.base}{path}", headers={"Authorization": f"Bearer {self.key}"}
        )
        assert status == 200, answer
        return json.loads(answer)

    def answered_by(self, method: str, path: str) -> set[str]:
        """The pids of the web processes that answered ``method path``."""
        lines = (ACCESS_LINE.match(line) for line in output_of(self.process).splitlines())
        return {line[1] for line in lines if line and line[2] == method and line[3] == path}

    def workers_ready(self) -> set[str]:
        return set(re.findall(r"(\S+@\S+) ready\.", output_of(self.process)))


@pytest.fixture
def embedded(tmp_path: Path, static_root: Path) -> Iterator[Installation]:
    """``scripts/run-all`` with no configuration, two web processes, migrated first."""
    port = free_port()
    env = process_env(
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        DATA_DIR=str(tmp_path / "data"),
        STATIC_ROOT=str(static_root),
        PORT=str(port),
        WEB_CONCURRENCY="2",
        CELERY_CONCURRENCY="1",
        WEB_ACCESS_LOG="-",
        AI_ECHO_DELAY_MS="200",
        GUNICORN_CMD_ARGS='--access-logformat "%(p)s \\"%(r)s\\" %(s)s"',
    )
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    for args in (["migrate", "--noinput", "-v", "0"], ["shell", "-v", "0", "-c", SETUP]):
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    key = done.stdout.split()[-1]
    process = spawn([str(ROOT / "scripts" / "run-all")], env=env, log=tmp_path / "run-all.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process, timeout=60)
        yield Installation(base, key, process)
    finally:
        stop(process, timeout=20)


def ai_call(installation: Installation, prompt: str, *, cache: bool = True) -> dict:
    return installation.post(
        "/api/v1/ai/interactions/", {"prompt": prompt, "model": "echo-1", "cache": cache}
    )


def test_a_repeated_prompt_is_a_cache_hit_whichever_web_process_answers(embedded):
    path = "/api/v1/ai/interactions/"
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Arriving together, while the provider answers the first: one provider call.
        together = list(pool.map(lambda _: ai_call(embedded, "the same question"), range(8)))
        assert sorted(answer["cached"] for answer in together) == [False] + [True] * 7
        # Requests on new connections are spread over both processes, in a round or more.
        answers = []
        for _ in range(10):
            answers += pool.map(lambda _: ai_call(embedded, "the same question"), range(16))
            if len(embedded.answered_by("POST", path)) == 2:
                break
    assert len(embedded.answered_by("POST", path)) == 2, "one web process answered them all"
    assert all(answer["cached"] for answer in answers)
    assert {answer["response"] for answer in together + answers} == {together[0]["response"]}


def test_metrics_count_every_call_and_task_whichever_process_made_it(embedded):
    calls, tasks = 12, 5
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: ai_call(embedded, f"question {n}", cache=False), range(calls)))
    submitted = [
        embedded.post(
            "/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {"seconds": 0, "steps": 1}}
        )
        for _ in range(tasks)
    ]

    def finished() -> bool:
        return all(
            embedded.get(f"/api/v1/tasks/{task['id']}/")["status"] == "succeeded"
            for task in submitted
        )

    wait_for(finished, timeout=30, interval=0.2, message="tasks never finished")

    def totals() -> tuple[float, float]:
        status, _, body = http_get(f"{embedded.base}/metrics")
        assert status == 200, body
        samples = parse(body.decode())
        return (
            sum(v for (name, _), v in samples.items() if name == "contextos_ai_requests_total"),
            sum(v for (name, _), v in samples.items() if name == "contextos_tasks_total"),
        )

    # Counts reach the shared table within a second of the process that made them.
    wait_for(lambda: totals() == (calls, tasks), timeout=10, interval=0.3)
    for _ in range(20):
        assert totals() == (calls, tasks)
        if len(embedded.answered_by("GET", "/metrics")) == 2:
            break
    assert len(embedded.answered_by("GET", "/metrics")) == 2
    assert len(embedded.answered_by("POST", "/api/v1/ai/interactions/")) == 2


def test_the_dashboard_counts_the_workers_on_the_file_broker(embedded):
    def every_worker_ready() -> set[str] | None:
        ready = embedded.workers_ready()
        pinged = embedded.get("/api/v1/health/")["workers"].get("names", [])
        return ready if ready and ready == set(pinged) else None

    # Every worker start-worker started has said it is ready and answers a ping.
    workers = wait_for(every_worker_ready, timeout=30, interval=0.5, message="no worker ready")

    browser, location = admin_session(embedded.base, "operator", PASSWORD)
    assert location == "/admin/"
    started = time.monotonic()  # the dashboard alone, not the password's hashing
    page = browser.open(f"{embedded.base}{location}", timeout=10).read().decode()
    seconds = time.monotonic() - started
    shown = re.search(r'<span id="dash-workers" class="ops-value" title="([^"]*)">([^<]*)<', page)
    assert shown, "no workers count on the dashboard"
    assert shown[2].strip() == str(len(workers)), shown[0]
    assert set(shown[1].split(", ")) == workers
    assert seconds < 2.5  # a ping of every worker (nothing was cached yet) and the page

    # The same count, shared with /metrics on either web process.
    for _ in range(4):
        samples = parse(http_get(f"{embedded.base}/metrics")[2].decode())
        assert samples[("contextos_workers_online", frozenset())] == len(workers)
