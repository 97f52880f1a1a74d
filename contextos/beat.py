"""Celery beat's scheduler: django-celery-beat's, with ContextOS's periodic tasks only."""

from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler as BaseDatabaseScheduler


class DatabaseScheduler(BaseDatabaseScheduler):
    """The database schedule, without Celery's default ``celery.backend_cleanup`` entry.

    That entry deletes every expired result in one statement; the
    ``tasks.cleanup-results`` periodic task does it in batches instead.
    """

    def install_default_entries(self, data: Any) -> None:
        return None
