"""`make run` on a machine with no configuration: the embedded default, from start to stop.

Each test runs `make run` (or the `scripts/run-all` it calls) in a process group
of its own, as a terminal would, and stops it the ways a user does: Ctrl-C
(SIGINT to the group) or SIGTERM.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ROOT,
    admin_log_in,
    free_port,
    http_get,
    http_post_json,
    output_of,
    process_env,
    spawn,
    wait_for,
    wait_until_serving,
)

pytestmark = pytest.mark.server

# Lines that must never follow a stop signal.
CRASHES = ("Segmentation fault", "RecursionError", "Traceback")

CREATE_STAFF_KEY = """
from django.contrib.auth import get_user_model
from apps.accounts.services import api_key_create
user, _ = get_user_model().objects.get_or_create(username="operator", defaults={"is_staff": True})
print(api_key_create(user=user, name="make run test")[1])
"""


def embedded_env(tmp_path: Path, static_root: Path, port: int, **overrides: str) -> dict:
    env = process_env(
        DATA_DIR=str(tmp_path / "data"),
        STATIC_ROOT=str(static_root),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CELERY_CONCURRENCY="1",
        WEB_ACCESS_LOG="/dev/null",
        **overrides,
    )
    # No server configured: no database, cache or broker URL, development settings.
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    return env


def manage(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def staff_key(env: dict) -> str:
    result = manage(env, "shell", "-v", "0", "-c", CREATE_STAFF_KEY, check=True)
    return result.stdout.split()[-1]


def descendants(pid: int) -> set[tuple[int, str]]:
    """Every process below ``pid`` (each with its start time, so a reused pid never counts)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: set[tuple[int, str]] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            stat = read_stat(child)
            if stat:
                found.add((child, stat[19]))
                pending.append(child)
    return found


def read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (ppid first), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields


def tagged(data_dir: Path) -> set[tuple[int, str]]:
    """Every process started with ``DATA_DIR=data_dir``: those of one test's ContextOS,
    wherever they were reparented."""
    marker = f"DATA_DIR={data_dir}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = read_stat(int(entry.name))
        if marker in environment and stat:
            found.add((int(entry.name), stat[19]))
    return found


def still_running(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {
        (pid, started)
        for pid, started in processes
        if (read_stat(pid) or [None] * 20)[19] == started
    }


def stop_with(
    process: subprocess.Popen, sig: signal.Signals, data_dir: Path
) -> tuple[float, list[str]]:
    """Send ``sig`` to the group as a terminal would; wait until every process below it is
    gone. Return how long that took and the output lines that followed the signal."""
    tree = descendants(process.pid) | tagged(data_dir)
    before = len(output_of(process).splitlines())
    sent = time.monotonic()
    os.killpg(process.pid, sig)
    deadline = sent + 20
    while still_running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    took = time.monotonic() - sent
    left = still_running(tree)
    for pid, _ in left:  # leave nothing behind for the next test, whatever happened
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert not left, f"still running {took:.1f} s after {sig.name}: {sorted(left)}"
    return took, output_of(process).splitlines()[before:]


def banner_urls(output: str) -> list[str]:
    banner = output[output.index("ContextOS is up") :]
    return re.findall(r"http://127\.0\.0\.1:\d+/\S*", banner.split("\n\n")[0])


def assert_stopped_cleanly(took: float, after: list[str]) -> None:
    assert took < 10
    assert len(after) < 50, "\n".join(after)
    assert not [line for line in after if any(crash in line for crash in CRASHES)], after


def test_make_run_serves_with_no_configuration_and_stops_on_ctrl_c(tmp_path, static_root):
    port = free_port()
    env = embedded_env(tmp_path, static_root, port)
    process = spawn(["make", "run"], env=env, log=tmp_path / "make-run.log")
    base = f"http://127.0.0.1:{port}"
    try:
        seconds = wait_until_serving(base, process, timeout=180)
        print(f"make run answered /live after {seconds:.1f} s")
        wait_for(lambda: "ContextOS is up" in output_of(process), timeout=10)
        status, _, body = http_get(f"{base}/api/v1/health/ready")
        assert status == 200, body

        # Every URL of the banner answers 200 (the admin's after its redirect to the login).
        urls = banner_urls(output_of(process))
        assert f"{base}/" in urls, urls
        assert f"{base}/admin/" in urls, urls
        for url in urls:
            assert http_get(url)[0] == 200, url

        # make superuser with no terminal and the three variables: a staff login that works.
        superuser_env = env | {
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
            "DJANGO_SUPERUSER_PASSWORD": "a-long-admin-password",
        }
        created = subprocess.run(
            ["make", "superuser"],
            cwd=ROOT,
            env=superuser_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert "Superuser created successfully." in created.stdout
        url, index = admin_log_in(base, "admin", "a-long-admin-password")
        assert url == f"{base}/admin/"
        assert 'id="logout-form"' in index  # logged in: the admin index, not the login form

        key = staff_key(env)

        # Beat sends its heartbeat at start; the maintenance worker runs it through the
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
        assert (tmp_path / "data" / "contextos.sqlite3").exists()

        # A task runs in the worker and reports its progress and end through the API.
        task = submit_sleep(base, key, seconds=1, steps=2)
        task = wait_for(
            lambda: finished(base, key, task["id"]), timeout=60, interval=0.5, message="never ran"
        )
        assert task["status"] == "succeeded", task
        assert task["progress"]["percent"] == 100.0

        # The start printed no warning (as root, Celery rightly warns that it runs as root).
        start_log = output_of(process)
        noisy = [
            line
            for line in start_log.splitlines()
            if re.search(r"warning|deprecat", line, re.IGNORECASE)
            and not (os.getuid() == 0 and is_root_warning(line))
        ]
        assert noisy == [], "\n".join(noisy)
    finally:
        took, after = stop_with(process, signal.SIGINT, tmp_path / "data")
    print(f"Ctrl-C: every process gone {took:.1f} s after the signal, {len(after)} lines")
    assert_stopped_cleanly(took, after)
    assert os.path.exists(ROOT / ".venv" / ".installed")


def is_root_warning(line: str) -> bool:
    return "SecurityWarning: You're running the worker with superuser privileges" in line


def submit_sleep(base: str, key: str, *, seconds: float, steps: int) -> dict:
    status, _, answer = http_post_json(
        f"{base}/api/v1/tasks/",
        {"type": "diagnostics.sleep", "params": {"seconds": seconds, "steps": steps}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert status == 202, answer
    return json.loads(answer)


def fetch_task(base: str, key: str, task_id: str) -> dict:
    status, _, raw = http_get(
        f"{base}/api/v1/tasks/{task_id}/", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200, raw
    return json.loads(raw)


def finished(base: str, key: str, task_id: str) -> dict | None:
    task = fetch_task(base, key, task_id)
    return task if task["status"] not in {"queued", "running"} else None


def test_sigterm_while_a_task_runs_stops_everything_and_the_task_runs_again(tmp_path, static_root):
    port = free_port()
    env = embedded_env(tmp_path, static_root, port)
    manage(env, "migrate", "--noinput", check=True)
    key = staff_key(env)
    base = f"http://127.0.0.1:{port}"

    first = spawn([str(ROOT / "scripts" / "run-all")], env=env, log=tmp_path / "first.log")
    try:
        wait_until_serving(base, first, timeout=120)
        task = submit_sleep(base, key, seconds=30, steps=30)
        wait_for(
            lambda: fetch_task(base, key, task["id"]).get("status") == "running",
            timeout=60,
            message="the task never started",
        )
    finally:
        took, after = stop_with(first, signal.SIGTERM, tmp_path / "data")
    print(f"SIGTERM with a task running: every process gone {took:.1f} s after, {len(after)} lines")
    assert_stopped_cleanly(took, after)

    # The next start runs the interrupted task again, to the end.
    second = spawn([str(ROOT / "scripts" / "run-all")], env=env, log=tmp_path / "second.log")
    try:
        wait_until_serving(base, second, timeout=120)
        final = wait_for(
            lambda: finished(base, key, task["id"]),
            timeout=90,
            interval=0.5,
            message="the interrupted task was left unfinished",
        )
        assert final["status"] == "succeeded", final
    finally:
        stop_with(second, signal.SIGTERM, tmp_path / "data")


def test_a_busy_port_stops_make_run_at_once_naming_it(tmp_path, static_root):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where make run binds by default
        taken.listen()
        port = taken.getsockname()[1]
        env = embedded_env(tmp_path, static_root, port)
        started = time.monotonic()
        process = spawn(["make", "run"], env=env, log=tmp_path / "busy.log")
        try:
            process.wait(timeout=60)
        finally:
            left = tagged(tmp_path / "data")
            for pid, _ in left:
                os.kill(pid, signal.SIGKILL)
        took = time.monotonic() - started
    output = output_of(process)
    assert process.returncode != 0
    assert f"port {port} is already in use" in output, output
    assert "PORT=" in output
    assert left == set(), f"left running: {left}"
    # Nothing was started.
    assert "Listening at" not in output
    assert "ready." not in output
    print(f"make run with port {port} taken exited {process.returncode} after {took:.1f} s")
    assert took < 15
