"""Django's ``CELERY_*`` settings as a plain dict: the Celery app's configuration source.

Celery looks several options up on every publish. Read through Django's lazy
settings object, each lookup (and each miss, as an exception) cost about a
fifth of publishing a task (measured); from a dict they cost next to nothing.
The dict is built when Celery first reads its configuration, after Django's
settings are loaded.
"""

from django.conf import settings

CELERY = {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}
