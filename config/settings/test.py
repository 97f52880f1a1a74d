"""Tests: real PostgreSQL and Redis on localhost unless the environment says otherwise."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/contextos")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("TASK_TYPE_MODULES", "tests.tasktypes")
# Each test process publishes to a queue of its own, so that parallel runs and
# leftover messages never reach another run's workers.
os.environ.setdefault("CONTEXTOS_TEST_QUEUE", f"test-{os.getpid()}")

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING

DEBUG = False
CELERY_TASK_DEFAULT_QUEUE = os.environ["CONTEXTOS_TEST_QUEUE"]
# Periodic jobs run on the test queue too, by the one worker a test starts;
# tests of the maintenance queue itself give it a name of its own.
CELERY_MAINTENANCE_QUEUE = CELERY_TASK_DEFAULT_QUEUE
MONITORED_QUEUES = [CELERY_TASK_DEFAULT_QUEUE]
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Collected static files are not needed to render the admin or docs in tests.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING["root"]["level"] = "WARNING"
# WhiteNoise expects the directory collectstatic fills.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
# Every readiness call probes: tests switch dependencies off and on between calls.
HEALTH_READY_CACHE_SECONDS = 0.0
