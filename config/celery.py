"""The Celery application, configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

from apps.tasks.bootsteps import RecoverOnStart, RedispatchOnConnect
from contextos.broker import guard_redis_reconnect, reuse_redis_clients

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("contextos")
app.config_from_object("config.celery_settings:CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(RedispatchOnConnect)
app.steps["worker"].add(RecoverOnStart)
guard_redis_reconnect()
reuse_redis_clients()
