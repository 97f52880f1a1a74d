"""The Celery application, configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

from apps.tasks.bootsteps import RedispatchOnConnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("contextos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(RedispatchOnConnect)
