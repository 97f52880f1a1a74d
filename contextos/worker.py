"""Database connection handling in Celery workers.

Celery's Django fixup closes every connection before and after each task,
so each task would open a new PostgreSQL connection (a third of a small
task's cost, measured). ``CELERY_DB_REUSE_MAX`` makes it do that only every
N tasks; in between, Django's own rules apply around each task, as they do
around each web request: a connection older than ``CONN_MAX_AGE`` or left
broken by an error (a database restart) is closed and reopened.
"""

from typing import Any

from celery import signals
from django.db import close_old_connections


def _close_old_connections(**_: Any) -> None:
    close_old_connections()


def connect_worker_signals() -> None:
    signals.task_prerun.connect(_close_old_connections, weak=False)
    signals.task_postrun.connect(_close_old_connections, weak=False)
