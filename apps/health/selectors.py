"""Reads of the health domain: readiness and the detailed report for staff."""

from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

import contextos
from apps.health.checks import READINESS_CHECKS, CheckResult, run_checks
from apps.health.models import ServiceHeartbeat
from apps.health.services import BEAT

WORKER_PING_TIMEOUT_SECONDS = 1.0


def readiness_report() -> dict[str, Any]:
    checks = run_checks(READINESS_CHECKS)
    healthy = all(check["status"] == "ok" for check in checks.values())
    return {"status": "ok" if healthy else "unavailable", "checks": checks}


def _workers_online(timeout: float = WORKER_PING_TIMEOUT_SECONDS) -> dict[str, Any]:
    # A connection of its own first: a broker that went away fails here, at once.
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
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


def workers_and_queues(*, deadline: float, ping_timeout: float) -> dict[str, CheckResult]:
    """Celery workers online and queue depths, each an error instead when it takes too long."""
    return run_checks(
        {"workers": lambda: _workers_online(ping_timeout), "queues": _queue_depths},
        deadline=deadline,
    )


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
