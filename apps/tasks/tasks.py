"""Celery entry points of the tasks domain: thin adapters over execution and services."""

import os

from celery import shared_task, states
from celery.exceptions import Ignore, TaskRevokedError

from apps.tasks import execution
from apps.tasks.models import TaskStatus
from apps.tasks.services import (
    ENFORCE_CANCEL_TASK,
    EXECUTE_TASK,
    result_expire,
    task_recover,
    task_terminate,
)
from contextos.celery_results import RecordedOutcome
from contextos.jobs import periodic_job

# The state of a task's Celery result row, by the status its outcome gave the task row.
CELERY_STATES = {
    TaskStatus.SUCCEEDED: states.SUCCESS,
    TaskStatus.FAILED: states.FAILURE,
    TaskStatus.CANCELLED: states.REVOKED,
}


class TaskFailed(Exception):
    """What the Celery result row of a failed task holds: the task's error."""


@shared_task(
    bind=True,
    name=EXECUTE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # automatic retries are bounded per task type
)
def execute_task(self, task_id: str) -> RecordedOutcome:
    """Run one attempt of a submitted task (the row says which type and params).

    Its result row agrees with the task row: SUCCESS, FAILURE or REVOKED under the
    task's type. A failed task is an outcome, not an error of this Celery task, so
    nothing is raised for it (no retry, no traceback in the worker's log).
    """
    outcome = execution.execute(
        task_id=task_id,
        celery_task_id=self.request.id,
        worker=f"{self.request.hostname}:{os.getpid()}",
        auto_retries=self.request.retries,
    )
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    if outcome.status not in CELERY_STATES:
        # A copy of a message whose attempt runs elsewhere: that delivery writes the row.
        raise Ignore
    return RecordedOutcome(
        state=CELERY_STATES[outcome.status],
        name=outcome.type_name,
        result=_row_result(task_id, outcome),
    )


def _row_result(task_id: str, outcome: execution.Outcome) -> object:
    """What the result row holds: the exception Celery keeps for FAILURE and REVOKED."""
    if outcome.status == TaskStatus.FAILED:
        error = outcome.error or {}
        return TaskFailed(f"{error.get('type', 'Error')}: {error.get('message', '')}")
    if outcome.status == TaskStatus.CANCELLED:
        return TaskRevokedError("The task was cancelled.")
    return {"task_id": task_id, "status": outcome.status}


@shared_task(name=ENFORCE_CANCEL_TASK, acks_late=True)
def enforce_cancel(task_id: str, celery_task_id: str) -> str:
    """Terminate a task that did not stop at a checkpoint within the grace period."""
    return task_terminate(task_id=task_id, celery_task_id=celery_task_id)


@periodic_job("tasks.recover_stuck", lock_seconds=270)
def recover_stuck_tasks() -> dict[str, int]:
    """Every 5 minutes: fail (or re-queue) tasks a lost worker left running; publish unsent ones."""
    return task_recover()


@periodic_job("tasks.cleanup_results", lock_seconds=23 * 3600)
def cleanup_results() -> dict[str, int]:
    """Daily: delete Celery results older than CELERY_RESULT_EXPIRES, in batches."""
    return result_expire()
