"""`make bench`: each scenario and its baseline in the same run, as medians and ratios.

Starts what it needs (gunicorn through scripts/start-web with production
settings, Celery workers through scripts/start-worker), uses its own
PostgreSQL database and Redis databases, prints one table and writes it to
BENCHMARKS.md with a description of the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BENCH_DATABASE = "contextos_bench"
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")

ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "DATABASE_URL": f"{POSTGRES}/{BENCH_DATABASE}",
    "REDIS_URL": f"{REDIS}/10",
    "CELERY_BROKER_URL": f"{REDIS}/11",
    "SECRET_KEY": "benchmark-only-secret-key-" + "0123456789" * 4,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_SSL_REDIRECT": "false",
    "API_RATE_LIMIT": "100000000/min",
    "LOG_LEVEL": "WARNING",
    "PYTHONDONTWRITEBYTECODE": "1",
}
NOOP_QUEUE = "bench-noop"


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    scenario: str
    contextos: float
    baseline: float
    unit: str
    target: float  # minimum ratio ContextOS / baseline

    @property
    def ratio(self) -> float:
        return self.contextos / self.baseline if self.baseline else 0.0

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target


def process_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENVIRONMENT, "PATH": f"{BIN}:{os.environ['PATH']}", **extra}


def start(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=process_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out waiting for {what}")


def prepare_database() -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=process_env(),
        check=True,
    )


def setup_django() -> None:
    os.environ.update(ENVIRONMENT)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def bench_api_key() -> tuple[object, str]:
    from django.contrib.auth import get_user_model

    from apps.accounts.services import api_key_create

    user, _ = get_user_model().objects.get_or_create(username="bench")
    return user, api_key_create(user=user, name="bench")[1]


# --- HTTP scenarios ---------------------------------------------------------------


@contextmanager
def web_server(workers: int = 2) -> Iterator[str]:
    port = 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as static_root:
        server = start(
            [str(ROOT / "scripts" / "start-web")],
            PORT=str(port),
            BIND_ADDRESS="127.0.0.1",
            WEB_CONCURRENCY=str(workers),
            WEB_ACCESS_LOG="/dev/null",
            STATIC_ROOT=static_root,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _get_ok(f"{base}/api/v1/health/live"), timeout=60, what="web")
            yield base
        finally:
            stop(server)


def _get_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def wrk(url: str, *, seconds: int, script: str | None = None, connections: int = 8) -> float:
    """Requests per second; any non-2xx answer fails the benchmark."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        raise BenchError(f"{url}: {match.group(1)} non-2xx responses\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def post_script(directory: str, body: str, api_key: str) -> str:
    path = Path(directory) / "post.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {api_key}"\n'
    )
    return str(path)


def compare_http(
    contextos: tuple[str, str | None], baseline: tuple[str, str | None], *, runs: int, seconds: int
) -> tuple[float, float]:
    """Median req/s of each, runs interleaved (and order alternated) so noise hits both."""
    for url, script in (contextos, baseline):
        wrk(url, seconds=1, script=script)  # warm-up
    ours, theirs = [], []
    for run in range(runs):
        order = [(ours, contextos), (theirs, baseline)]
        for results, (url, script) in order if run % 2 == 0 else reversed(order):
            results.append(wrk(url, seconds=seconds, script=script))
    return statistics.median(ours), statistics.median(theirs)


def http_scenarios(api_key: str, *, runs: int, seconds: int) -> list[Row]:
    submit_body = '{"type": "diagnostics.sleep", "params": {"seconds": 0}}'
    with web_server() as base, tempfile.TemporaryDirectory() as scripts:
        post = post_script(scripts, submit_body, api_key)
        live, bare = compare_http(
            (f"{base}/api/v1/health/live", None),
            (f"{base}/bench/bare", None),
            runs=runs,
            seconds=seconds,
        )
        submit, insert = compare_http(
            (f"{base}/api/v1/tasks/", post),
            (f"{base}/bench/bare-insert", post),
            runs=runs,
            seconds=seconds,
        )
    return [
        Row("GET /api/v1/health/live vs bare DRF view", live, bare, "req/s", 0.8),
        Row("POST /api/v1/tasks/ vs bare authenticated insert", submit, insert, "req/s", 0.6),
    ]


# --- Worker throughput ------------------------------------------------------------


def purge(queue: str) -> None:
    from kombu import Connection

    with Connection(ENVIRONMENT["CELERY_BROKER_URL"]) as conn:
        conn.default_channel.queue_purge(queue)


def wait_for_worker(app, hostname: str) -> None:
    wait_for(
        lambda: app.control.ping(destination=[hostname], timeout=0.5),
        timeout=60,
        what=f"worker {hostname}",
    )


def drain_contextos(user, count: int) -> float:
    from celery import current_app
    from django.utils import timezone

    from apps.tasks.models import Task, TaskStatus
    from apps.tasks.services import task_submit

    purge("default")
    hostname = f"bench-tasks-{os.getpid()}@{platform.node()}"
    worker = start(
        [str(ROOT / "scripts" / "start-worker")],
        CELERY_CONCURRENCY="2",
        CELERY_QUEUES="default",
        CELERY_HOSTNAME=hostname,
    )
    try:
        wait_for_worker(current_app, hostname)
        since = timezone.now()
        started = time.perf_counter()
        for _ in range(count):
            task_submit(owner=user, type_name="diagnostics.sleep", params={"seconds": 0})
        done = Task.objects.filter(owner=user, created_at__gte=since, status=TaskStatus.SUCCEEDED)
        wait_for(lambda: done.count() >= count, timeout=600, what="tasks to succeed")
        return count / (time.perf_counter() - started)
    finally:
        stop(worker)


def drain_noop(count: int) -> float:
    from bench.noop import app, noop

    purge(NOOP_QUEUE)
    hostname = f"bench-noop-{os.getpid()}@{platform.node()}"
    worker = start(
        [
            str(BIN / "celery"),
            "--app",
            "bench.noop",
            "worker",
            "--concurrency",
            "2",
            "--queues",
            NOOP_QUEUE,
            "--hostname",
            hostname,
            "--loglevel",
            "WARNING",
        ]
    )
    try:
        wait_for_worker(app, hostname)
        started = time.perf_counter()
        for _ in range(count):
            noop.apply_async(queue=NOOP_QUEUE)

        def drained() -> bool:
            stats = app.control.inspect(destination=[hostname], timeout=0.5).stats() or {}
            return stats.get(hostname, {}).get("total", {}).get("bench.noop", 0) >= count

        wait_for(drained, timeout=600, what="no-op tasks to drain")
        return count / (time.perf_counter() - started)
    finally:
        stop(worker)


def throughput_scenario(user, *, runs: int, count: int) -> list[Row]:
    ours, theirs = [], []
    for run in range(runs):
        pair = [(ours, lambda: drain_contextos(user, count)), (theirs, lambda: drain_noop(count))]
        for results, measure in pair if run % 2 == 0 else reversed(pair):
            results.append(measure())
    return [
        Row(
            f"{count} diagnostics.sleep(0) end to end vs plain Celery no-op",
            statistics.median(ours),
            statistics.median(theirs),
            "tasks/s",
            0.4,
        )
    ]


# --- Report -----------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and (found := re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())):
        cpu = found.group(1).strip()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | ContextOS | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.contextos:,.0f} {row.unit} | {row.baseline:,.0f} {row.unit} "
            f"| {row.ratio:.2f}x | >= {row.target}x | {'pass' if row.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per HTTP run")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()

    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("make bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    prepare_database()
    setup_django()
    user, api_key = bench_api_key()

    rows = http_scenarios(api_key, runs=args.runs, seconds=args.seconds)
    rows += throughput_scenario(user, runs=args.runs, count=args.tasks)

    report = table(rows)
    print(report)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.output).write_text(
        "# Benchmarks\n\n"
        f"`make bench`, {stamp}. Machine: {machine()}.\n\n"
        f"Medians of {args.runs} interleaved runs; HTTP with `wrk -t1 -c8 -d{args.seconds}s` "
        "against gunicorn (2 sync workers, production settings); workers with 2 processes on "
        "the Redis broker. Each baseline runs on the same server or broker in the same run.\n\n"
        f"{report}\n"
    )
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
