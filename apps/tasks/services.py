"""Writes of the tasks domain: submit, cancel, retry, terminate, recover and purge tasks.

The row is written in the transaction that accepts the request and the Celery
message is published only after it commits. A publish that fails leaves the
row marked for dispatch, and :func:`task_recover` sends it again later.
"""

import functools
import hashlib
import logging
import uuid
from collections import Counter
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.governance.audit import audit_record
from apps.tasks import metrics
from apps.tasks.models import (
    FINISHED_STATUSES,
    RETRYABLE_STATUSES,
    Task,
    TaskAttempt,
    TaskStatus,
)
from apps.tasks.registry import TaskType, get_task_type
from contextos.db import row_insert_in_turn
from contextos.digest import canonical_digest
from contextos.exceptions import Conflict, PermissionDenied, TooManyRequests, ValidationFailed
from contextos.retention import PURGE_BATCH_SIZE, delete_in_batches

logger = logging.getLogger(__name__)

# The Celery tasks this module publishes, by name: apps.tasks.tasks declares them
# under these names and imports this module, never the other way round.
EXECUTE_TASK = "tasks.execute"
ENFORCE_CANCEL_TASK = "tasks.enforce_cancel"

# The tasks a user's limits count: queued and running ones.
ACTIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)
# A refusal at a limit tells the client to try again after this long (Retry-After).
LIMIT_RETRY_AFTER_SECONDS = 30


def validate_params(*, task_type: TaskType, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the type's JSON Schema; return them with defaults filled in."""
    schema = task_type.params_schema
    errors: dict[str, list[str]] = {}
    for error in task_type.params_validator.iter_errors(params):
        if error.validator == "additionalProperties":
            for name in sorted(set(error.instance) - set(schema.get("properties", {}))):
                errors.setdefault(name, []).append("Unknown parameter.")
            continue
        name = ".".join(str(part) for part in error.absolute_path) or "non_field_errors"
        errors.setdefault(name, []).append(error.message)
    if errors:
        raise ValidationFailed("Invalid params.", details={"params": errors})
    defaults = {
        name: spec["default"]
        for name, spec in schema.get("properties", {}).items()
        if "default" in spec
    }
    return defaults | params


def _fingerprint(type_name: str, params: dict[str, Any]) -> str:
    return canonical_digest([type_name, params])


def _publish(task: Task) -> None:
    """Send the Celery message for the task's current attempt (after commit)."""
    task_type = get_task_type(task.type)
    queue = task_type.queue if task_type else settings.CELERY_TASK_DEFAULT_QUEUE
    try:
        current_app.send_task(
            EXECUTE_TASK, args=[str(task.pk)], task_id=task.celery_task_id, queue=queue
        )
    except Exception:
        # The row is committed: the request stands and recovery will publish it.
        logger.exception("Could not publish task %s; it will be dispatched again", task.pk)
        Task.objects.filter(pk=task.pk, celery_task_id=task.celery_task_id).update(
            dispatch_pending=True
        )


def _publish_on_commit(task: Task) -> None:
    transaction.on_commit(lambda: _publish(task))


def owner_lock(*, owner_id: Any) -> None:
    """Make the owner's submissions and retries take turns until the transaction ends.

    Two racing at a limit cannot then both pass it: the second counts after the
    first has committed. Its own statement, so that the count after it is read
    from a snapshot taken once the turn came. SQLite's IMMEDIATE transactions
    already take turns.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_owner_turn(owner_id)])


def _owner_turn(owner_id: Any) -> int:
    """The advisory lock of the owner's turn."""
    digest = hashlib.blake2b(f"tasks.owner:{owner_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _check_active_limit(*, owner_id: Any) -> None:
    """Refuse (429) another task for an owner with ``TASKS_MAX_ACTIVE_PER_USER`` active ones."""
    limit = settings.TASKS_MAX_ACTIVE_PER_USER
    # Counting stops at the limit; the (owner, status) index answers it.
    active = (
        Task.objects.filter(owner_id=owner_id, status__in=ACTIVE_STATUSES)
        .order_by()[:limit]
        .count()
    )
    if active >= limit:
        raise _too_many_active(active, limit)


def _too_many_active(active: int, limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"The owner has {active} tasks queued or running, the most allowed; "
        "try again when some have finished.",
        code="too_many_active_tasks",
        details={"limit": limit, "active": active, "retry_after": LIMIT_RETRY_AFTER_SECONDS},
    )


@functools.cache
def _below_the_active_limit() -> str:
    """SQL that holds while an owner (the first parameter) has fewer active tasks than
    the limit (the third and fourth), counting no further than it."""
    quote = connection.ops.quote_name
    meta = Task._meta
    table = quote(meta.db_table)
    owner, status = (quote(meta.get_field(name).column) for name in ("owner", "status"))
    # Identifiers quoted by the backend; every value is a parameter.
    active = f"SELECT 1 FROM {table} WHERE {owner} = %s AND {status} = ANY(%s) LIMIT %s"  # noqa: S608
    return f"(SELECT count(*) FROM ({active}) AS active) < %s"  # noqa: S608


def _submit_in_turn(task: Task, fingerprint: str) -> tuple[Task, bool]:
    """Write a limited owner's new ``task`` if the owner is below the active limit, in the
    owner's turn, in one flight to PostgreSQL (:func:`contextos.db.row_insert_in_turn`):
    the turn is held while the server counts and writes, so one owner's submissions
    in parallel do not wait for each other's round trips. Else as :func:`task_submit`'s
    transaction does."""
    owner_id = task.owner_id
    if (existing := _first_with_key(task)) is not None:  # a replay, answered at the limit too
        return _replay(existing, fingerprint), False
    limit = settings.TASKS_MAX_ACTIVE_PER_USER
    try:
        inserted = row_insert_in_turn(
            task,
            turn=_owner_turn(owner_id),
            condition=_below_the_active_limit(),
            params=[owner_id, list(ACTIVE_STATUSES), limit, limit],
        )
    except IntegrityError:
        # Two requests with one key raced; the other one created the task.
        if (existing := _first_with_key(task)) is None:
            raise
        return _replay(existing, fingerprint), False
    if not inserted:
        raise _too_many_active(limit, limit)  # counted up to the limit, in the turn
    _publish(task)
    return task, True


def task_submit(
    *,
    owner: AbstractBaseUser,
    type_name: str,
    params: dict[str, Any],
    idempotency_key: str | None = None,
    internal: bool = False,
    api_key: Any = None,
) -> tuple[Task, bool]:
    """Accept a task for ``owner``; return it and whether it was created just now.

    The same ``idempotency_key`` with the same type and params returns the
    first task and enqueues nothing; with other type or params it is a conflict.
    Internal types (``internal=True`` on the type) are started only by other
    services, never on a client's request. A non-staff owner with
    ``TASKS_MAX_ACTIVE_PER_USER`` tasks queued or running is refused (429
    ``too_many_active_tasks``), a replay of an Idempotency-Key excepted.
    """
    task_type = get_task_type(type_name)
    if task_type is None or (task_type.internal and not internal):
        raise ValidationFailed(
            f"Unknown task type {type_name!r}.",
            details={"type": [f"Unknown task type {type_name!r}; see /api/v1/tasks/types/."]},
        )
    if task_type.staff_only and not owner.is_staff:
        raise PermissionDenied(f"Task type {type_name!r} is for staff only.")
    params = validate_params(task_type=task_type, params=params)
    fingerprint = _fingerprint(type_name, params)
    limited = not owner.is_staff
    task = Task(
        owner=owner,
        api_key=api_key,
        type=type_name,
        params=params,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        celery_task_id=str(uuid.uuid4()),
    )
    if (
        limited
        and task_type.admit is None
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    ):
        return _submit_in_turn(task, fingerprint)
    try:
        # A limited owner's turn lasts until the commit, the count and the type's own
        # limits included. Staff's one INSERT needs no transaction of its own, except
        # to survive losing an Idempotency-Key race inside a caller's transaction.
        with transaction.atomic() if limited or idempotency_key else nullcontext():
            if limited:
                owner_lock(owner_id=owner.pk)
            if (existing := _first_with_key(task)) is not None:
                return _replay(existing, fingerprint), False
            if limited:
                _check_active_limit(owner_id=owner.pk)
            if task_type.admit is not None:
                task_type.admit(params=params, owner=owner, api_key=api_key)
            task.save(force_insert=True)
        # Outside a transaction this publishes at once; inside one, at its commit.
        _publish_on_commit(task)
    except IntegrityError:
        # Two requests with one key raced; the other one created the task.
        if (existing := _first_with_key(task)) is None:
            raise
        return _replay(existing, fingerprint), False
    return task, True


def _first_with_key(task: Task) -> Task | None:
    """The owner's task submitted earlier with ``task``'s Idempotency-Key, if any."""
    if task.idempotency_key is None:
        return None
    return Task.objects.filter(owner_id=task.owner_id, idempotency_key=task.idempotency_key).first()


def _replay(task: Task, fingerprint: str) -> Task:
    if task.request_fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was used with a different request.",
            code="idempotency_key_reused",
            details={"task_id": str(task.pk)},
        )
    return task


def task_cancel(*, task: Task, actor: AbstractBaseUser | None = None) -> Task:
    """Cancel ``task``: a queued one never runs; a running one stops at its next checkpoint.

    A running task that has not stopped after ``TASK_CANCEL_GRACE_SECONDS`` is
    terminated. Cancelling a running task again is harmless (and not recorded again);
    cancelling a finished one (cancelled included) is a conflict. A cancellation is
    recorded in the audit log as done by ``actor`` (None: a command or the system).
    """
    now = timezone.now()
    with transaction.atomic():
        before = None
        if Task.objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(
            status=TaskStatus.CANCELLED, cancel_requested_at=now, finished_at=now
        ):
            before = {"status": TaskStatus.QUEUED, "cancel_requested_at": None}
            # The worker's claim would refuse it anyway; revoking saves the delivery.
            celery_task_id = task.celery_task_id
            transaction.on_commit(lambda: _revoke(celery_task_id, terminate=False))
            transaction.on_commit(
                partial(metrics.task_finished, type_name=task.type, status=TaskStatus.CANCELLED)
            )
        elif Task.objects.filter(
            pk=task.pk, status=TaskStatus.RUNNING, cancel_requested_at__isnull=True
        ).update(cancel_requested_at=now):
            before = {"status": TaskStatus.RUNNING, "cancel_requested_at": None}
            args = [str(task.pk), task.celery_task_id]
            transaction.on_commit(
                lambda: _enforce_cancel_later(args, settings.TASK_CANCEL_GRACE_SECONDS)
            )
        else:
            task.refresh_from_db()
            if task.is_finished:
                raise Conflict(
                    _finished_message(task.status),
                    code="task_finished",
                    details={"status": task.status},
                )
        task.refresh_from_db()
        if before is not None:
            audit_record(
                action="task.cancel",
                target=task,
                actor=actor,
                before=before,
                after={"status": task.status, "cancel_requested_at": task.cancel_requested_at},
            )
    return task


def _finished_message(status: str) -> str:
    if status == TaskStatus.CANCELLED:
        return "The task is already cancelled."
    return f"The task has already finished ({status})."


def _revoke(celery_task_id: str, *, terminate: bool) -> None:
    try:
        current_app.control.revoke(celery_task_id, terminate=terminate, signal="SIGTERM")
    except Exception:
        logger.warning("Could not revoke Celery task %s", celery_task_id, exc_info=True)


def _enforce_cancel_later(args: list[str], countdown: float) -> None:
    try:
        current_app.send_task(ENFORCE_CANCEL_TASK, args=args, countdown=countdown)
    except Exception:
        logger.warning("Could not schedule the cancel deadline of task %s", args[0], exc_info=True)


def task_terminate(*, task_id: str, celery_task_id: str) -> str:
    """End an attempt that ignored its cancellation: terminate its process, mark it cancelled."""
    still_running = Task.objects.filter(
        pk=task_id,
        status=TaskStatus.RUNNING,
        celery_task_id=celery_task_id,
        cancel_requested_at__isnull=False,
    )
    running = still_running.only("type").first()
    if running is None:
        return "already stopped"
    _revoke(celery_task_id, terminate=True)
    if still_running.update(status=TaskStatus.CANCELLED, finished_at=timezone.now()):
        metrics.task_finished(type_name=running.type, status=TaskStatus.CANCELLED)
    logger.warning("Task %s did not stop at a checkpoint and was terminated", task_id)
    return "terminated"


def _archive_attempt(task: Task) -> None:
    TaskAttempt.objects.create(
        task=task,
        number=task.attempt,
        status=task.status,
        progress=task.progress,
        result=task.result,
        error=task.error,
        error_traceback=task.error_traceback,
        celery_task_id=task.celery_task_id,
        started_at=task.started_at,
        finished_at=task.finished_at,
    )


def _reset_for_new_attempt(task: Task) -> None:
    task.status = TaskStatus.QUEUED
    task.attempt += 1
    task.celery_task_id = str(uuid.uuid4())
    task.progress = task.result = task.error = None
    task.error_traceback = task.worker = ""
    task.started_at = task.finished_at = task.heartbeat_at = task.cancel_requested_at = None
    task.dispatch_pending = False
    task.save()


@transaction.atomic
def task_retry(*, task: Task, actor: AbstractBaseUser | None = None) -> Task:
    """Run a failed or cancelled task again as its next attempt, keeping the last one's record.

    The retry is recorded in the audit log as done by ``actor`` (None: a command or the
    system). Queued again, the task counts against its owner's limits as a submission
    does (429 past one), unless ``actor`` is staff, a command or the system.
    """
    task = (
        Task.objects.select_related("owner", "api_key")
        .select_for_update(of=("self",))
        .get(pk=task.pk)
    )
    if task.status not in RETRYABLE_STATUSES:
        raise Conflict(
            f"Only failed or cancelled tasks can be retried; this one is {task.status}.",
            code="task_not_retryable",
            details={"status": task.status},
        )
    if actor is not None and not actor.is_staff:
        owner_lock(owner_id=task.owner_id)
        _check_active_limit(owner_id=task.owner_id)
        task_type = get_task_type(task.type)
        if task_type is not None and task_type.admit is not None:
            task_type.admit(params=task.params, owner=task.owner, api_key=task.api_key)
    before = {"status": task.status, "attempt": task.attempt}
    _archive_attempt(task)
    _reset_for_new_attempt(task)
    _publish_on_commit(task)
    audit_record(
        action="task.retry",
        target=task,
        actor=actor,
        before=before,
        after={"status": task.status, "attempt": task.attempt},
    )
    return task


def task_recover(*, now: datetime | None = None) -> dict[str, int]:
    """Repair tasks whose worker or message was lost.

    - ``running`` past the time limit (the worker died and its message is
      gone): re-queued when the type is idempotent, otherwise failed with a
      clear error;
    - ``queued`` whose message could not be published: published again;
    - ``queued`` with no change for ``TASK_REPUBLISH_QUEUED_AFTER_SECONDS``:
      its message may have been lost, so it is published once more.
    """
    now = now or timezone.now()
    limit = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_STUCK_MARGIN_SECONDS)
    stuck = Task.objects.filter(status=TaskStatus.RUNNING, started_at__lt=now - limit)
    counts = {"requeued": 0, "failed": 0, "redispatched": 0, "republished": 0}
    for task in stuck.iterator():
        outcome = _recover_lost(
            task,
            task_type=get_task_type(task.type),
            now=now,
            reason="it was lost or ran past its time limit",
        )
        if outcome:
            counts[outcome] += 1
    counts["redispatched"] = task_redispatch_pending(
        updated_before=now - timedelta(seconds=settings.TASK_REDISPATCH_AFTER_SECONDS)
    )
    counts["republished"] = _republish_long_queued(
        updated_before=now - timedelta(seconds=settings.TASK_REPUBLISH_QUEUED_AFTER_SECONDS)
    )
    return counts


def task_recover_after_restart(*, hostname: str, started_before: datetime) -> dict[str, int]:
    """Repair the tasks that an earlier run of the worker ``hostname`` left ``running``.

    A node name belongs to one running worker at a time, so a task still running
    under it from before this worker started was cut short when the earlier run
    stopped (``make run`` stopped, a container replaced). Idempotent types are
    queued again at once. Others fail only where the broker cannot deliver the
    message again (the file broker takes a message off its queue when a worker
    fetches it); Redis and RabbitMQ deliver it again, and the delivery takes the
    task over.
    """
    now = timezone.now()
    messages_lost = settings.CELERY_BROKER_URL.startswith("filesystem://")
    lost = Task.objects.filter(
        status=TaskStatus.RUNNING, worker__startswith=f"{hostname}:", started_at__lt=started_before
    )
    counts = {"requeued": 0, "failed": 0}
    for task in lost.iterator():
        task_type = get_task_type(task.type)
        if not messages_lost and not (task_type is not None and task_type.idempotent):
            continue
        outcome = _recover_lost(
            task, task_type=task_type, now=now, reason=f"{hostname} stopped while it ran"
        )
        if outcome:
            counts[outcome] += 1
    return counts


def _recover_lost(
    task: Task, *, task_type: TaskType | None, now: datetime, reason: str
) -> str | None:
    """Re-queue (idempotent types) or fail a ``running`` task whose worker is gone.

    Returns "requeued", "failed", or None when the row changed meanwhile (a
    redelivered message took it over, or it finished).
    """
    with transaction.atomic():
        locked = (
            Task.objects.select_for_update(skip_locked=True)
            .filter(
                pk=task.pk,
                status=TaskStatus.RUNNING,
                celery_task_id=task.celery_task_id,
                worker=task.worker,
            )
            .first()
        )
        if locked is None:
            return None
        if task_type is not None and task_type.idempotent:
            locked.status = TaskStatus.QUEUED
            locked.celery_task_id = str(uuid.uuid4())
            locked.worker = ""
            locked.started_at = locked.heartbeat_at = None
            locked.save()
            _publish_on_commit(locked)
            logger.warning("Task %s queued again: %s", locked.pk, reason)
            return "requeued"
        locked.status = TaskStatus.FAILED
        locked.finished_at = now
        locked.error = {
            "message": f"The worker running this task stopped before it finished ({reason}).",
            "type": "WorkerLost",
        }
        locked.save()
        metrics.task_finished(type_name=locked.type, status=TaskStatus.FAILED)
        logger.warning("Task %s failed: %s", locked.pk, reason)
        return "failed"


def _republish_long_queued(*, updated_before: datetime) -> int:
    """Publish again, under the same Celery id, the tasks queued unchanged since then.

    A Redis broker loses a message that a worker had taken but not yet recorded
    as unacknowledged when that worker is killed: its task would stay queued for
    ever. Whichever copy is delivered first runs the task and the other finds it
    claimed. Touching ``updated_at`` sends a task of a long backlog once per period
    at most.
    """
    stale = Task.objects.filter(
        status=TaskStatus.QUEUED, dispatch_pending=False, updated_at__lt=updated_before
    )
    published = 0
    for task in stale.iterator():
        if Task.objects.filter(
            pk=task.pk,
            status=TaskStatus.QUEUED,
            celery_task_id=task.celery_task_id,
            updated_at=task.updated_at,
        ).update(updated_at=timezone.now()):
            _publish(task)
            published += 1
    return published


def task_redispatch_pending(*, updated_before: datetime | None = None) -> int:
    """Publish again the queued tasks whose message could not be published; return how many.

    Each is claimed with a conditional update first, so that two callers (two
    workers reconnecting to the broker at once) never publish one task twice.
    """
    pending = Task.objects.filter(status=TaskStatus.QUEUED, dispatch_pending=True)
    if updated_before is not None:
        pending = pending.filter(updated_at__lt=updated_before)
    published = 0
    for task in pending.iterator():
        if Task.objects.filter(pk=task.pk, dispatch_pending=True).update(dispatch_pending=False):
            _publish(task)
            published += 1
    return published


def task_purge(
    *, before: datetime, dry_run: bool = False, batch_size: int = PURGE_BATCH_SIZE
) -> dict[str, int]:
    """Delete finished tasks created before ``before``, with their attempts, in batches.

    Queued and running tasks are never removed. Interactions made by a removed
    task stay, no longer linked to it. ``dry_run`` counts what would go.
    """
    tasks = Task.objects.filter(created_at__lt=before, status__in=FINISHED_STATUSES)
    if dry_run:
        return {
            "tasks": tasks.count(),
            "attempts": TaskAttempt.objects.filter(task__in=tasks).count(),
        }
    removed: Counter = Counter()
    for _, deleted in delete_in_batches(tasks, order_by=("created_at",), batch_size=batch_size):
        removed.update(deleted)
    return {"tasks": removed[Task._meta.label], "attempts": removed[TaskAttempt._meta.label]}


def result_purge(
    *, before: datetime, dry_run: bool = False, batch_size: int = PURGE_BATCH_SIZE
) -> dict[str, int]:
    """Delete Celery results (django-celery-results) done before ``before``, in batches."""
    results = TaskResult.objects.filter(date_done__lt=before)
    if dry_run:
        return {"results": results.count()}
    removed = sum(
        deleted[TaskResult._meta.label]
        for _, deleted in delete_in_batches(results, order_by=("date_done",), batch_size=batch_size)
    )
    return {"results": removed}


def result_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Delete Celery results older than ``CELERY_RESULT_EXPIRES`` seconds (0 keeps them)."""
    if not settings.CELERY_RESULT_EXPIRES:
        return {"results": 0}
    now = now or timezone.now()
    return result_purge(before=now - timedelta(seconds=settings.CELERY_RESULT_EXPIRES))
