"""Writes across domains: purge old records and set up the periodic tasks."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from apps.ai_interactions.services import interaction_purge
from apps.operations.schedule import PERIODIC_JOBS, RETIRED_PERIODIC_TASKS, PeriodicJob
from apps.tasks.services import result_purge, task_purge
from contextos.retention import PURGE_BATCH_SIZE

logger = logging.getLogger(__name__)

PURGERS: dict[str, Callable[..., dict[str, int]]] = {
    "tasks": task_purge,
    "interactions": interaction_purge,
    "results": result_purge,
}
PURGE_KINDS = tuple(PURGERS)


@dataclass(frozen=True)
class PurgeOutcome:
    kind: str
    before: datetime
    removed: dict[str, int]


def purge(
    *,
    kinds: Sequence[str],
    before: datetime,
    dry_run: bool = False,
    batch_size: int = PURGE_BATCH_SIZE,
) -> list[PurgeOutcome]:
    """Delete (or with ``dry_run`` count) the records of ``kinds`` older than ``before``."""
    outcomes = []
    for kind in kinds:
        removed = PURGERS[kind](before=before, dry_run=dry_run, batch_size=batch_size)
        if not dry_run:
            logger.info("Purged %s created before %s: %s", kind, before.isoformat(), removed)
        outcomes.append(PurgeOutcome(kind=kind, before=before, removed=removed))
    return outcomes


def retention_purge(*, now: datetime | None = None) -> list[PurgeOutcome]:
    """Purge tasks and interactions past their retention (``RETENTION_*_DAYS`` settings).

    A retention of 0 days keeps that kind forever.
    """
    now = now or timezone.now()
    outcomes = []
    for kind, days in (
        ("tasks", settings.RETENTION_TASKS_DAYS),
        ("interactions", settings.RETENTION_INTERACTIONS_DAYS),
    ):
        if days > 0:
            outcomes += purge(kinds=[kind], before=now - timedelta(days=days))
    return outcomes


# --- Periodic tasks ----------------------------------------------------------------

# Fields a release may change on an existing periodic task; everything else
# (enabled, schedule, expiry, ...) is the staff's to edit, restored by ``reset``.
CODE_OWNED_FIELDS = ("task", "description")


@dataclass(frozen=True)
class PeriodicTaskChange:
    name: str
    action: str  # created, updated, reset, kept or removed
    schedule: str
    enabled: bool


INTERVAL_UNITS = (
    (IntervalSchedule.DAYS, 86400),
    (IntervalSchedule.HOURS, 3600),
    (IntervalSchedule.MINUTES, 60),
    (IntervalSchedule.SECONDS, 1),
)


def _interval(every: timedelta) -> IntervalSchedule:
    seconds = int(every.total_seconds())
    period, unit = next((period, unit) for period, unit in INTERVAL_UNITS if seconds % unit == 0)
    fields = {"every": seconds // unit, "period": period}
    schedule = IntervalSchedule.objects.filter(**fields).order_by("pk").first()
    return schedule or IntervalSchedule.objects.create(**fields)


def _crontab(fields: dict[str, str]) -> CrontabSchedule:
    values = {
        "minute": "*",
        "hour": "*",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        **fields,
    }
    schedule = CrontabSchedule.objects.filter(timezone="UTC", **values).order_by("pk").first()
    return schedule or CrontabSchedule.objects.create(timezone="UTC", **values)


def _declared_fields(job: PeriodicJob) -> dict[str, Any]:
    return {
        "task": job.task,
        "description": job.description,
        "interval": None if job.crontab else _interval(job.every),
        "crontab": _crontab(job.crontab) if job.crontab else None,
        "solar": None,
        "clocked": None,
        "expire_seconds": job.expire_seconds,
        "expires": None,
        "enabled": True,
        "one_off": False,
        "start_time": None,
        "args": "[]",
        "kwargs": "{}",
        "queue": None,
        "priority": None,
    }


def _change(row: PeriodicTask, action: str) -> PeriodicTaskChange:
    return PeriodicTaskChange(
        name=row.name, action=action, schedule=str(row.scheduler), enabled=row.enabled
    )


@transaction.atomic
def periodic_tasks_setup(*, reset: bool = False) -> list[PeriodicTaskChange]:
    """Upsert the declared periodic tasks by name; never delete and recreate them.

    A new one is created as declared. An existing one gets the declared task
    and description and keeps everything else (staff edits to ``enabled``, its
    schedule or expiry, and ``last_run_at``), unless ``reset`` restores the
    declared values. Nothing is saved when nothing differs.
    """
    changes = []
    for job in PERIODIC_JOBS:
        row = PeriodicTask.objects.select_for_update().filter(name=job.name).first()
        if row is None:
            row = PeriodicTask(name=job.name, **_declared_fields(job))
            row.save()
            changes.append(_change(row, "created"))
            continue
        wanted = (
            _declared_fields(job)
            if reset
            else {name: getattr(job, name) for name in CODE_OWNED_FIELDS}
        )
        differing = {name: value for name, value in wanted.items() if getattr(row, name) != value}
        if differing:
            for name, value in differing.items():
                setattr(row, name, value)
            row.save()
        changes.append(_change(row, ("reset" if reset else "updated") if differing else "kept"))
    for row in PeriodicTask.objects.filter(name__in=RETIRED_PERIODIC_TASKS):
        row.delete()
        changes.append(_change(row, "removed"))
    return changes
