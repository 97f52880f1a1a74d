"""The Celery application, configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

from apps.tasks.bootsteps import RedispatchOnConnect
from contextos.broker import guard_redis_reconnect, reuse_redis_clients

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("contextos")
app.config_from_object("config.celery_settings:CELERY", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(RedispatchOnConnect)
guard_redis_reconnect()
reuse_redis_clients()
