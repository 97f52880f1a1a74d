"""Database connection handling in Celery workers.

Celery's Django fixup closes every connection before and after each task,
so each task would open a new PostgreSQL connection (a third of a small
task's cost, measured). ``CELERY_DB_REUSE_MAX`` makes it do that only every
N tasks; in between, Django's own rules apply around each task, as they do
around each web request: a connection older than ``CONN_MAX_AGE`` or left
broken by an error (a database restart) is closed and reopened.

Those rules also health-check the connection (``SELECT 1``) at the first
query of every task, a round trip as costly as one of the task's own writes.
A connection that a task finished with, without an error, less than
``HEALTH_CHECK_GRACE_SECONDS`` ago skips that check; after a pause it is
checked again. A server restart inside that window fails the next task's
first query instead, as a restart between the check and the query always
could: the task's message is kept or its row recovered like any failed
delivery. Web processes apply the same rule to their pooled connections
(:mod:`contextos.db`).

Worker processes also batch their metric counts (:func:`contextos.metrics.batch_counts`).
"""

import time
from typing import Any

from celery import signals
from django.db import close_old_connections, connections

from contextos import metrics
from contextos.db import HEALTH_CHECK_GRACE_SECONDS

# When the last task of this process finished with all its connections sound.
_sound_at: float | None = None


def _before_task(**_: Any) -> None:
    close_old_connections()
    if _sound_at is None or time.monotonic() - _sound_at > HEALTH_CHECK_GRACE_SECONDS:
        return
    # close_old_connections() has closed, or checked and cleared, any that erred.
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            connection.health_check_done = True


def _after_task(**_: Any) -> None:
    global _sound_at
    sound = not any(
        connection.errors_occurred for connection in connections.all(initialized_only=True)
    )
    _sound_at = time.monotonic() if sound else None
    close_old_connections()


def _batch_metrics(**_: Any) -> None:
    metrics.batch_counts()


def _flush_metrics(**_: Any) -> None:
    metrics.flush_counts()


def connect_worker_signals() -> None:
    signals.task_prerun.connect(_before_task, weak=False)
    signals.task_postrun.connect(_after_task, weak=False)
    # worker_init runs in the main process before it forks the pool's processes.
    signals.worker_init.connect(_batch_metrics, weak=False)
    signals.worker_process_shutdown.connect(_flush_metrics, weak=False)
    signals.worker_shutdown.connect(_flush_metrics, weak=False)
