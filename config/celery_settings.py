"""Django's ``CELERY_*`` settings as a plain dict: the Celery app's configuration source.

Celery looks several options up on every publish. Read through Django's lazy
settings object, each lookup (and each miss, as an exception) cost about a
fifth of publishing a task (measured); from a dict they cost next to nothing.
The dict is built when Celery first reads its configuration, after Django's
settings are loaded.

Options are handed over under Celery's own names (``CELERY_TASK_SERIALIZER``
becomes ``task_serializer``): read through the ``CELERY`` namespace, names such
as ``CELERY_TIMEZONE`` are also Celery 3's, and every worker and beat start
warned that they are deprecated. Names Celery does not know stay as they are
(Celery's Django fixup reads ``CELERY_DB_REUSE_MAX`` under that name).
"""

from celery.app.defaults import SETTING_KEYS
from django.conf import settings


def _option(name: str) -> str:
    option = name.removeprefix("CELERY_").lower()
    return option if option in SETTING_KEYS else name


CELERY = {
    _option(name): getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")
}
