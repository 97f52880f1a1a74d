"""Running a task in a worker: claim the row once, report progress, honour cancellation, finish.

Only the attempt that claimed the row (``queued`` → ``running`` for its own
Celery task id) may report on it or finish it, so a message delivered twice
never runs the work twice at once.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from typing import Any
from uuid import UUID

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Field
from django.utils import timezone

from apps.tasks import metrics
from apps.tasks.models import FINISHED_STATUSES, Task, TaskStatus
from apps.tasks.registry import TaskType, get_task_type

logger = logging.getLogger(__name__)

# A 1,000-step task must not write its row 1,000 times a second.
PROGRESS_WRITE_INTERVAL = 0.25
# How often a running task looks for a cancellation request.
CANCEL_CHECK_INTERVAL = 0.25
INSPECT_TIMEOUT = 1.0


class TaskCancelled(Exception):
    """Raised at a checkpoint when the task was cancelled (or is no longer ours)."""


class TaskFailure(Exception):
    """Raised by a handler to end its task ``failed`` while keeping a result of its own.

    An expected outcome, not a crash (a batch whose every prompt failed): the task
    keeps ``result`` so that staff can follow what it did, and records no traceback.
    Its error's ``type`` is the exception's class name, as for any failure.
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class TaskContext:
    """What a task type's handler gets: its params and owner, and progress and cancellation
    hooks."""

    task_id: UUID
    celery_task_id: str
    params: dict[str, Any]
    attempt: int
    owner_id: Any
    # The key that submitted the task (None for internal tasks and old rows).
    api_key_id: Any = None
    # Automatic retries still available after this run, for transient errors.
    retries_left: int = 0
    latest: dict[str, Any] | None = None
    _last_write: float = field(default=0.0, repr=False)
    _last_check: float = field(default_factory=time.monotonic, repr=False)

    @cached_property
    def owner(self) -> AbstractBaseUser:
        """The task's owner, loaded when first asked for (most task types never ask)."""
        return get_user_model().objects.get(pk=self.owner_id)

    @cached_property
    def api_key(self) -> Any:
        """The key that submitted the task, with its user (its limits govern the task)."""
        if self.api_key_id is None:
            return None
        from apps.accounts.models import APIKey

        return APIKey.objects.select_related("user").filter(pk=self.api_key_id).first()

    def _ours(self):
        return Task.objects.filter(
            pk=self.task_id,
            status=TaskStatus.RUNNING,
            celery_task_id=self.celery_task_id,
            cancel_requested_at__isnull=True,
        )

    def progress(self, current: int, total: int, message: str = "") -> None:
        """Report progress (written at most every 0.25 s; the last step with the outcome).

        Raises :class:`TaskCancelled` when the task was cancelled.
        """
        percent = round(100.0 * current / total, 1) if total else 100.0
        self.latest = {"current": current, "total": total, "percent": percent, "message": message}
        if current >= total:
            return  # the work is done: the finishing write carries it
        now = time.monotonic()
        if now - self._last_write < PROGRESS_WRITE_INTERVAL:
            self.checkpoint()
            return
        updated = self._ours().update(progress=self.latest, heartbeat_at=timezone.now())
        self._last_write = self._last_check = now
        if not updated:
            raise TaskCancelled

    def checkpoint(self) -> None:
        """Raise :class:`TaskCancelled` if cancellation was requested (looked up every 0.25 s)."""
        now = time.monotonic()
        if now - self._last_check < CANCEL_CHECK_INTERVAL:
            return
        self._last_check = now
        if not self._ours().exists():
            raise TaskCancelled

    def sleep(self, seconds: float) -> None:
        """Sleep, staying responsive to cancellation."""
        ends_at = time.monotonic() + seconds
        while (remaining := ends_at - time.monotonic()) > 0:
            time.sleep(min(remaining, CANCEL_CHECK_INTERVAL))
            self.checkpoint()


@dataclass(frozen=True)
class Outcome:
    """How a delivery left its task: the row's status, its type and error, and when to run
    again after a transient error; ``skipped`` when its attempt has no outcome yet."""

    status: str
    type_name: str = ""
    error: dict[str, str] | None = None
    retry_in: float | None = None


SKIPPED = Outcome("skipped")


def recorded_outcome(*, task_id: UUID | str, celery_task_id: str) -> Outcome:
    """The outcome the delivery's attempt has, written by another delivery or by recovery;
    :data:`SKIPPED` while it has none (it runs elsewhere, or a later attempt replaced it)."""
    row = (
        Task.objects.filter(pk=task_id, celery_task_id=celery_task_id, status__in=FINISHED_STATUSES)
        .values_list("status", "type", "error")
        .first()
    )
    if row is None:
        return SKIPPED
    status, type_name, error = row
    return Outcome(status, type_name=type_name, error=error)


def _previous_run_alive(task: Task) -> bool:
    """Whether the worker process that claimed ``task`` still runs its Celery task."""
    hostname, _, pid = task.worker.rpartition(":")
    if not hostname:
        return False
    try:
        replies = current_app.control.inspect(
            destination=[hostname], timeout=INSPECT_TIMEOUT
        ).active()
    except Exception:
        logger.warning("Could not ask %s whether it still runs task %s", hostname, task.pk)
        return True  # unknown: never risk running the work twice at once
    for active in (replies or {}).get(hostname, []):
        if active.get("id") == task.celery_task_id and str(active.get("worker_pid")) == pid:
            return True
    return False


def claim(*, task_id: UUID | str, celery_task_id: str, worker: str) -> Task | None:
    """Move the row to ``running`` for this delivery, exactly once; None if it is not ours.

    A redelivered message (its worker was killed) takes the row over when the
    process that claimed it is gone.
    """
    now = timezone.now()
    task = _claim_queued(task_id=task_id, celery_task_id=celery_task_id, worker=worker, now=now)
    if task is not None:
        return task
    return _take_over_orphan(task_id=task_id, celery_task_id=celery_task_id, worker=worker, now=now)


def _take_over_orphan(
    *, task_id: UUID | str, celery_task_id: str, worker: str, now: datetime
) -> Task | None:
    """Claim a ``running`` row for this delivery when the process that claimed it is gone."""
    orphan = Task.objects.filter(
        pk=task_id, status=TaskStatus.RUNNING, celery_task_id=celery_task_id
    ).first()
    if orphan is None or orphan.worker == worker or _previous_run_alive(orphan):
        return None
    claimed = Task.objects.filter(
        pk=task_id, status=TaskStatus.RUNNING, worker=orphan.worker
    ).update(worker=worker, progress=None, started_at=now, heartbeat_at=now)
    if not claimed:
        return None
    logger.warning("Task %s taken over from lost worker %s", task_id, orphan.worker)
    return Task.objects.get(pk=task_id)


def _claim_queued(
    *, task_id: UUID | str, celery_task_id: str, worker: str, now: datetime
) -> Task | None:
    """``queued`` → ``running`` for this delivery; the row comes back in the same round trip."""
    fields = {"status": TaskStatus.RUNNING, "started_at": now, "heartbeat_at": now}
    if connection.vendor != "postgresql":
        claimed = Task.objects.filter(
            pk=task_id, status=TaskStatus.QUEUED, celery_task_id=celery_task_id
        ).update(worker=worker, updated_at=now, **fields)
        return Task.objects.get(pk=task_id) if claimed else None
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(Task._meta.db_table)} "  # noqa: S608
            "SET status = %s, started_at = %s, heartbeat_at = %s, updated_at = %s, worker = %s "
            "WHERE id = %s AND status = %s AND celery_task_id = %s "
            "RETURNING type, params, attempt, owner_id, api_key_id",
            [
                TaskStatus.RUNNING,
                now,
                now,
                now,
                worker,
                UUID(str(task_id)),
                TaskStatus.QUEUED,
                celery_task_id,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    type_name, params, attempt, owner_id, api_key_id = row
    params = Task._meta.get_field("params").from_db_value(params, None, connection)
    return Task(
        id=UUID(str(task_id)),
        type=type_name,
        params=params,
        attempt=attempt,
        owner_id=owner_id,
        api_key_id=api_key_id,
        celery_task_id=celery_task_id,
        worker=worker,
        **fields,
    )


@cache
def _update_running_sql(names: tuple[str, ...]) -> tuple[str, tuple[Field, ...]]:
    quote = connection.ops.quote_name
    fields = tuple(Task._meta.get_field(name) for name in names)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = (
        f"UPDATE {quote(Task._meta.db_table)} SET {assignments} "  # noqa: S608
        "WHERE id = %s AND status = %s AND celery_task_id = %s"
    )
    return sql, fields


def _update_running(task: Task, **values: Any) -> bool:
    """Write ``values`` to the row if it still runs this attempt; whether it did.

    Every task finishes (or goes back to the queue) through here: one statement,
    its SQL built once per set of columns (the ORM's ``update`` compiles it anew
    each time).
    """
    sql, fields = _update_running_sql(tuple(values))
    params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    pk = Task._meta.pk.get_db_prep_value(task.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, TaskStatus.RUNNING, task.celery_task_id])
        return cursor.rowcount > 0


def _finish(task: Task, status: str, **fields: Any) -> Outcome:
    """End the attempt with ``status``; the outcome the row has afterwards (when the row is
    no longer ours, whatever cancelled, reaped or took it over wrote)."""
    now = timezone.now()
    if not _update_running(task, status=status, finished_at=now, updated_at=now, **fields):
        return recorded_outcome(task_id=task.pk, celery_task_id=task.celery_task_id)
    metrics.task_finished(type_name=task.type, status=status)
    return Outcome(status, type_name=task.type, error=fields.get("error"))


def _error(exc: BaseException, message: str | None = None) -> dict[str, str]:
    name = exc.__class__.__name__
    return {"message": message or str(exc) or name, "type": name}


def _backoff(task_type: TaskType, retries: int) -> float:
    delay = min(task_type.retry_backoff_max_seconds, task_type.retry_backoff_seconds * 2**retries)
    return round(random.uniform(delay / 2, delay), 2)  # noqa: S311 - jitter, not security


def execute(
    *, task_id: UUID | str, celery_task_id: str, worker: str, auto_retries: int = 0
) -> Outcome:
    """Run the task's current attempt in this worker process."""
    task = claim(task_id=task_id, celery_task_id=celery_task_id, worker=worker)
    if task is None:
        logger.info("Task %s is not ours to run (already claimed or finished)", task_id)
        return recorded_outcome(task_id=task_id, celery_task_id=celery_task_id)
    task_type = get_task_type(task.type)
    if task_type is None:
        error = {"message": f"Unknown task type {task.type!r}.", "type": "UnknownTaskType"}
        return _finish(task, TaskStatus.FAILED, error=error)

    context = TaskContext(
        task_id=task.pk,
        celery_task_id=celery_task_id,
        params=task.params,
        attempt=task.attempt,
        owner_id=task.owner_id,
        api_key_id=task.api_key_id,
        retries_left=max(0, task_type.max_auto_retries - auto_retries),
    )
    try:
        result = task_type.handler(context)
    except TaskCancelled:
        # Finishing fails harmlessly when the row is no longer ours (reaped, taken over).
        return _finish(task, TaskStatus.CANCELLED)
    except SoftTimeLimitExceeded as exc:
        return _finish(
            task, TaskStatus.FAILED, error=_error(exc, "The task ran past its time limit.")
        )
    except TaskFailure as failure:
        logger.warning("Task %s (%s) failed: %s", task.pk, task.type, failure)
        return _finish(
            task,
            TaskStatus.FAILED,
            error=_error(failure),
            result=failure.result,
            **_progress(context),
        )
    except Exception as exc:
        transient = isinstance(exc, task_type.transient_errors)
        if transient and auto_retries < task_type.max_auto_retries:
            delay = _backoff(task_type, auto_retries)
            _update_running(
                task,
                status=TaskStatus.QUEUED,
                worker="",
                updated_at=timezone.now(),
                progress={
                    "current": 0,
                    "total": 0,
                    "percent": 0.0,
                    "message": f"Retrying in {delay:g} s after {exc.__class__.__name__}: {exc}",
                },
            )
            return Outcome(TaskStatus.QUEUED, type_name=task.type, retry_in=delay)
        logger.warning("Task %s (%s) failed: %s", task.pk, task.type, exc)
        return _finish(
            task,
            TaskStatus.FAILED,
            error=_error(exc),
            error_traceback="".join(traceback.format_exception(exc)),
        )
    return _finish(task, TaskStatus.SUCCEEDED, result=result, **_progress(context))


def _progress(context: TaskContext) -> dict[str, Any]:
    """The last progress the handler reported, for the finishing write (none: left as is)."""
    return {} if context.latest is None else {"progress": context.latest}
