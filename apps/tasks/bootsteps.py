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


class RecoverOnStart(bootsteps.StartStopStep):
    """When the worker starts, repair the tasks an earlier run of it (same node name)
    left ``running``: queued again when their type is idempotent, failed otherwise.

    The moment is taken before the worker consumes anything, so tasks this run
    claims are never mistaken for lost ones. It runs in the main thread once the
    pool's processes exist: a thread busy importing or holding a database lock
    while the pool forks would leave the children with that lock held for ever.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        from django.utils import timezone

        super().__init__(parent, **kwargs)
        self.started = timezone.now()

    def start(self, parent: Any) -> None:
        _recover_after_restart(parent.hostname, self.started)


def _recover_after_restart(hostname: str, started: Any) -> None:
    from django.db import connections

    from apps.tasks.services import task_recover_after_restart

    try:
        counts = task_recover_after_restart(hostname=hostname, started_before=started)
    except Exception:
        logger.warning("Could not repair the tasks an earlier run left running", exc_info=True)
        return
    finally:
        connections.close_all()
    if any(counts.values()):
        logger.info(
            "Tasks an earlier run of %s left running: %d queued again, %d failed",
            hostname,
            counts["requeued"],
            counts["failed"],
        )


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
