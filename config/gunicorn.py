"""gunicorn settings that its command-line flags cannot express (``scripts/start-web``).

gunicorn's own error and access lines use the app's log format (one JSON object
per line in production), each access line with the request id of its response,
and are scrubbed of secrets as the app's are (no Basic user name either);
worker processes send their shared metric counts in batches (sending what is
left when they exit); and a worker process that exits is forgotten by the
multi-process metrics.
"""

import gc
import os
from typing import Any

from django.conf import settings
from gunicorn import glogging
from prometheus_client import multiprocess

from contextos.context import request_id_var
from contextos.logging import ContextFilter, JSONFormatter, scrub_handlers


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if settings.LOG_FORMAT == "json":
                for handler in log.handlers:
                    handler.setFormatter(JSONFormatter())
                    handler.addFilter(ContextFilter())
            scrub_handlers(log)

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        # The user field (``%(u)s``) is the name in Basic credentials: a key sent that way.
        return {**super().atoms(resp, req, environ, request_time), "u": "-"}

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        # A streamed response is logged after the request's context has ended.
        request_id = next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), None
        )
        token = request_id_var.set(request_id)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            request_id_var.reset(token)


logger_class = Logger


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    # Counts of AI calls and task submissions go to Redis once a second, not per request.
    from contextos import metrics

    metrics.batch_counts()


def post_worker_init(worker: Any) -> None:
    # What the app holds once loaded (modules, settings, URLs and every view they import)
    # lives as long as the process: frozen, it is left out of the collector's passes. A
    # full pass walked it all: 101 ms of one call in 621 gateway calls measured; frozen,
    # no call waited more than 1.6 ms on the collector (docs/decisions.md, eighth pass).
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imported now, not by the first request)
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    from contextos import metrics

    metrics.flush_counts()
