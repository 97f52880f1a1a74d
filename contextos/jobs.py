"""Periodic jobs that run at most once per interval, however many beats send them.

Each job takes a lock in the shared cache (Redis) for a bit less than its
interval and skips its run when the lock is already held. Every job is safe
to run twice; the lock saves the duplicate work when two beats run by mistake.
Jobs are sent to ``CELERY_MAINTENANCE_QUEUE`` (``route_periodic_job``), however
they are sent: by beat, from the admin's "Run" action or by hand. Every job has
the same reliability options (``periodic_job``).
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


def job_time_limits(lock_seconds: int) -> tuple[int, int]:
    """The soft and hard time limits of a job locked for ``lock_seconds``.

    Celery's global limits (below the broker's visibility timeout, as a settings
    test checks), shortened so that a run ends before its lock expires: a second
    delivery never starts while the first still runs.
    """
    hard = min(lock_seconds, settings.CELERY_TASK_TIME_LIMIT)
    soft = min(settings.CELERY_TASK_SOFT_TIME_LIMIT, hard - min(60, hard // 10))
    return soft, hard


def periodic_job(name: str, *, lock_seconds: int, **options: Any) -> Callable:
    """A Celery task named ``name`` that runs at most once per ``lock_seconds``.

    A delivery that finds the lock held returns ``"skipped"`` and does nothing.
    Every job is acknowledged after it ran, goes back to the queue when its
    worker dies, and is stopped by its time limits before its lock expires;
    ``options`` are further Celery task options.
    """
    soft_time_limit, time_limit = job_time_limits(lock_seconds)

    def decorate(func: Callable) -> Any:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not job_lock_acquire(name, seconds=lock_seconds):
                logger.info("Skipped %s: it already ran in the last %d s", name, lock_seconds)
                return SKIPPED
            return func(*args, **kwargs)

        task = shared_task(
            name=name,
            acks_late=True,
            reject_on_worker_lost=True,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            **options,
        )(run)
        _JOB_NAMES.add(name)
        task.lock_seconds = lock_seconds
        return task

    return decorate
