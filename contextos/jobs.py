"""Periodic jobs that run at most once per interval, however many beats send them.

Each job takes a lock in the shared cache (Redis) for a bit less than its
interval and skips its run when the lock is already held. Every job is safe
to run twice; the lock saves the duplicate work when two beats run by mistake.
Jobs are sent to ``CELERY_MAINTENANCE_QUEUE`` (``route_periodic_job``), however
they are sent: by beat, from the admin's "Run" action or by hand.
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from contextos.cache import cache_key

logger = logging.getLogger(__name__)

SKIPPED = "skipped"

# Names of the tasks declared with ``periodic_job``.
_JOB_NAMES: set[str] = set()


def route_periodic_job(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> dict | None:
    """Celery router (``CELERY_TASK_ROUTES``): periodic jobs go to the maintenance queue."""
    if name in _JOB_NAMES:
        return {"queue": settings.CELERY_MAINTENANCE_QUEUE}
    return None


def job_lock_acquire(name: str, *, seconds: int) -> bool:
    """Take job ``name``'s lock for ``seconds``; False when another run holds it.

    With the cache unreachable the job runs without the lock rather than not at all.
    """
    acquired = cache.add(
        cache_key("jobs", "lock", name), timezone.now().isoformat(), timeout=seconds
    )
    if acquired is None:
        logger.warning("Lock of periodic job %s unavailable; running it unlocked", name)
        return True
    return bool(acquired)


def periodic_job(name: str, *, lock_seconds: int, **options: Any) -> Callable:
    """A Celery task named ``name`` that runs at most once per ``lock_seconds``.

    A delivery that finds the lock held returns ``"skipped"`` and does nothing.
    """

    def decorate(func: Callable) -> Any:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not job_lock_acquire(name, seconds=lock_seconds):
                logger.info("Skipped %s: it already ran in the last %d s", name, lock_seconds)
                return SKIPPED
            return func(*args, **kwargs)

        task = shared_task(name=name, **options)(run)
        _JOB_NAMES.add(name)
        task.lock_seconds = lock_seconds
        return task

    return decorate
