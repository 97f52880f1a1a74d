"""Reads of the health domain: readiness and the detailed report for staff."""

import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

import contextos
from apps.health.checks import READINESS_CHECKS, run_checks
from apps.health.models import ServiceHeartbeat
from apps.health.services import BEAT
from contextos.cache import cache_key

# How long a ping waits for replies (all of them: how many workers there are is unknown).
WORKER_PING_TIMEOUT_SECONDS = 1.0


_last_readiness: tuple[float, dict[str, Any]] | None = None


def readiness_report(*, max_age: float = 0.0) -> dict[str, Any]:
    """Probe the database, cache and broker; or, within ``max_age`` seconds of the
    last probe in this process, answer with that report."""
    global _last_readiness
    if max_age > 0 and _last_readiness is not None:
        probed_at, report = _last_readiness
        if time.monotonic() - probed_at < max_age:
            return report
    probed_at = time.monotonic()
    checks = run_checks(READINESS_CHECKS)
    healthy = all(check["status"] == "ok" for check in checks.values())
    report = {"status": "ok" if healthy else "unavailable", "checks": checks}
    _last_readiness = (probed_at, report)
    return report


def _ping_timeout(transport: Any) -> float:
    if transport.implements.asynchronous:  # Redis: replies arrive as they are sent
        return WORKER_PING_TIMEOUT_SECONDS
    # A polled broker (the embedded default's file system): a reply also waits for
    # the worker's poll that finds the ping and for ours that finds the reply.
    return WORKER_PING_TIMEOUT_SECONDS + 2 * transport.polling_interval


def _workers_online() -> dict[str, Any]:
    # A connection of its own first: a broker that went away fails here, at once.
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        timeout = _ping_timeout(conn.transport)
    replies = current_app.control.ping(timeout=timeout) or []
    names = sorted(name for reply in replies for name in reply)
    return {"online": len(names), "names": names}


def _queue_depths() -> dict[str, dict[str, int]]:
    depths: dict[str, int] = {}
    with current_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        for queue in settings.MONITORED_QUEUES:
            with conn.channel() as channel:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except conn.channel_errors:
                    depths[queue] = 0  # never declared: nothing was ever sent to it
    return {"depths": depths}


# Counting workers is a broadcast that waits a second or more for replies; a
# scrape (or the admin dashboard) reuses the count for this long instead of
# waiting each time. The cache is shared, so one count serves every process.
WORKERS_COUNT_MAX_AGE_SECONDS = 15
_WORKERS_COUNT_KEY = cache_key("health", "workers_online")


def _workers_online_recently() -> dict[str, Any]:
    counted = cache.get(_WORKERS_COUNT_KEY)
    if counted is None:
        counted = _workers_online()
        cache.set(_WORKERS_COUNT_KEY, counted, timeout=WORKERS_COUNT_MAX_AGE_SECONDS)
    return counted


def celery_overview() -> dict[str, Any]:
    """Workers online (counted at most every 15 s) and queue depths, within 2.5 s."""
    return run_checks({"workers": _workers_online_recently, "queues": _queue_depths})


def _beat() -> dict[str, Any]:
    heartbeat = ServiceHeartbeat.objects.filter(name=BEAT).first()
    if heartbeat is None:
        return {"last_heartbeat_at": None, "age_seconds": None}
    age = (timezone.now() - heartbeat.beat_at).total_seconds()
    return {"last_heartbeat_at": heartbeat.beat_at, "age_seconds": round(age, 1)}


def _pending_migrations() -> dict[str, list[str]]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return {"pending": [f"{migration.app_label}.{migration.name}" for migration, _ in plan]}


def health_detail() -> dict[str, Any]:
    """Readiness plus workers, queues, beat, migrations and version (staff only)."""
    report = readiness_report()
    extra = run_checks(
        {
            "workers": _workers_online,
            "queues": _queue_depths,
            "beat": _beat,
            "migrations": _pending_migrations,
        },
        deadline=3.0,
    )
    return report | {"version": contextos.__version__, **extra}


# Beat sends a heartbeat every minute; three missed ones mean it is down.
BEAT_STALE_AFTER_SECONDS = 180


def service_statuses() -> list[dict[str, Any]]:
    """Each service ContextOS needs, up or down, with a one-line detail (for operators)."""
    report = health_detail()
    statuses = [
        {
            "service": name,
            "up": check["status"] == "ok",
            "detail": f"{check['latency_ms']} ms" if check["status"] == "ok" else check["error"],
        }
        for name, check in report["checks"].items()
    ]
    workers = report["workers"]
    online = workers.get("online", 0)
    statuses.append(
        {
            "service": "workers",
            "up": workers["status"] == "ok" and online > 0,
            "detail": workers.get("error") or f"{online} online {', '.join(workers['names'])}",
        }
    )
    beat = report["beat"]
    age = beat.get("age_seconds")
    statuses.append(
        {
            "service": "beat",
            "up": age is not None and age <= BEAT_STALE_AFTER_SECONDS,
            "detail": beat.get("error")
            or ("no heartbeat yet" if age is None else f"last heartbeat {age:g} s ago"),
        }
    )
    return statuses
