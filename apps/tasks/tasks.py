"""Celery entry points of the tasks domain: thin adapters over execution and services."""

import os

from celery import shared_task

from apps.tasks import execution
from apps.tasks.services import (
    ENFORCE_CANCEL_TASK,
    EXECUTE_TASK,
    result_expire,
    task_recover,
    task_terminate,
)
from contextos.jobs import periodic_job


@shared_task(
    bind=True,
    name=EXECUTE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # automatic retries are bounded per task type
)
def execute_task(self, task_id: str) -> dict[str, str]:
    """Run one attempt of a submitted task (the row says which type and params)."""
    outcome = execution.execute(
        task_id=task_id,
        celery_task_id=self.request.id,
        worker=f"{self.request.hostname}:{os.getpid()}",
        auto_retries=self.request.retries,
    )
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
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
