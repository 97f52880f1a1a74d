"""Worker hooks of the tasks domain (Celery bootsteps)."""

import logging
import threading
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)


class RedispatchOnConnect(bootsteps.StartStopStep):
    """Each time the worker (re)connects to the broker, publish the tasks whose message
    could not be published while the broker was away (they were accepted with a 2xx).

    It runs in a thread of its own, so that a database outage never holds up consuming.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        threading.Thread(target=_redispatch, name="redispatch-pending", daemon=True).start()


def _redispatch() -> None:
    from django.db import connections

    from apps.tasks.services import task_redispatch_pending

    try:
        published = task_redispatch_pending()
    except Exception:
        logger.warning("Could not publish the tasks left unpublished", exc_info=True)
        return
    finally:
        connections.close_all()
    if published:
        logger.info("Published %d task(s) left unpublished while the broker was away", published)
