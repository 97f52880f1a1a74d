"""Probes of the services ContextOS depends on, run concurrently under one deadline.

Each probe runs in a daemon thread of its own: a dependency that hangs (a
stopped PostgreSQL, a black-holed Redis) costs the caller the deadline, not a
worker.
"""

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypedDict

from celery import current_app
from django.db import connection, connections

from contextos.cache import cache_ping

READINESS_DEADLINE_SECONDS = 2.5


class CheckResult(TypedDict, total=False):
    status: str
    latency_ms: float
    error: str


Check = Callable[[], dict[str, Any] | None]


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_cache() -> None:
    cache_ping()


def check_broker() -> None:
    if current_app.conf.broker_url.startswith(("redis://", "rediss://")):
        _ping_redis_broker()
        return
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # Opening a channel talks to the server.
        conn.default_channel  # noqa: B018


def _ping_redis_broker() -> None:
    """PING Redis over a connection of the pool that publishing uses.

    A new broker connection per probe cost most of a readiness check (and a
    connection churn on Redis at every probe); a pooled one costs one round trip.
    """
    with current_app.pool.acquire(block=True, timeout=2) as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=2)
            # The synchronous client kombu publishes with (the channel's own
            # ``client`` is reserved for its BRPOP loop).
            with conn.default_channel.conn_or_acquire() as client:
                client.ping()
        except Exception:
            # Drop the connection, so the next probe (or publish) dials afresh.
            conn.collect()
            raise


READINESS_CHECKS: dict[str, Check] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0][:200] if text else ""
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__


class _ProbeThreads:
    """Daemon threads kept between probes, so a check costs no thread start-up.

    A probe that hangs keeps its thread; the next ones get another (up to a
    cap, past which they wait their turn and answer "no answer" at the
    deadline). Daemon threads never hold up the process's exit.
    """

    MAX_THREADS = 32

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self.MAX_THREADS:
                self._threads += 1
                threading.Thread(target=self._work, name="health-probe", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            finally:
                with self._lock:
                    self._idle += 1


_probe_threads = _ProbeThreads()


def run_checks(
    checks: dict[str, Check], *, deadline: float = READINESS_DEADLINE_SECONDS
) -> dict[str, CheckResult]:
    """Run ``checks`` in parallel; any not finished after ``deadline`` seconds is an error.

    A check passes by returning; what it returns (a dict) is merged into its result.
    """
    results: dict[str, CheckResult] = {}
    done = threading.Condition()

    def probe(name: str, check: Check) -> None:
        started = time.perf_counter()
        try:
            result: CheckResult = {"status": "ok", **(check() or {})}
        except Exception as exc:
            result = {"status": "error", "error": _describe(exc)}
        finally:
            # The probe thread's database connections go back to the pool (or close).
            connections.close_all()
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        with done:
            results.setdefault(name, result)
            done.notify()

    for name, check in checks.items():
        context = contextvars.copy_context()
        _probe_threads.submit(partial(context.run, probe, name, check))
    ends_at = time.monotonic() + deadline
    with done:
        while len(results) < len(checks) and (remaining := ends_at - time.monotonic()) > 0:
            done.wait(remaining)
        for name in checks:
            results.setdefault(
                name,
                {
                    "status": "error",
                    "error": f"no answer within {deadline:g} s",
                    "latency_ms": round(deadline * 1000, 2),
                },
            )
        return {name: results[name] for name in checks}
