"""Probes of the services ContextOS depends on, run concurrently under one deadline.

Each probe runs in its own daemon thread: a dependency that hangs (a stopped
PostgreSQL, a black-holed Redis) costs the caller the deadline, not a worker.
"""

import contextvars
import threading
import time
from collections.abc import Callable
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
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # Opening a channel talks to the server (Redis answers a PING).
        conn.default_channel  # noqa: B018


READINESS_CHECKS: dict[str, Check] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0][:200] if text else ""
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__


def run_checks(
    checks: dict[str, Check], *, deadline: float = READINESS_DEADLINE_SECONDS
) -> dict[str, CheckResult]:
    """Run ``checks`` in parallel; any not finished after ``deadline`` seconds is an error.

    A check passes by returning; what it returns (a dict) is merged into its result.
    """
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()

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
        with lock:
            results.setdefault(name, result)

    threads = []
    for name, check in checks.items():
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(probe, name, check), name=f"check-{name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    ends_at = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, ends_at - time.monotonic()))
    with lock:
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
