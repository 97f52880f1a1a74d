"""Log records that carry the request id (and, in workers, the task id and name), and
carry no secret.

Development logs are human-readable; production logs are one JSON object per line.
The request id of the API call that queued a task travels in the task's headers,
so the task's log lines carry it too. Every line, Django's, gunicorn's and Celery's,
is scrubbed of API keys, credentials in query strings and Basic credentials
(``scrub``) after it is formatted, whatever put them in it.
"""

import json
import logging
import re
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from celery import current_task, signals

from contextos.context import current_request_id, request_id_var

_REQUEST_ID_HEADER = "request_id"

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "task_id",
    "task_name",
}


# What is replaced in every log line: an API key (its public prefix is kept, as the admin
# shows it), the value of a credential-like query parameter, and Basic or Bearer
# credentials however they are quoted.
_SECRETS = (
    (re.compile(r"(ctx_[A-Za-z0-9]{8})[A-Za-z0-9]{4,}"), r"\1[redacted]"),
    (
        re.compile(
            r"(?i)((?:^|[?&;\s\"'])(?:api[_-]?key|key|token|access[_-]?token|auth|password|secret)"
            r"=)[^&\s\"';]+"
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"(?i)\b((?:basic|bearer)\s+)[A-Za-z0-9+/=._~-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(//)[^/@\s:]+:[^/@\s]+@"), r"\1[redacted]@"),
)


def scrub(text: str) -> str:
    """``text`` without API keys, credential query parameters or Basic/Bearer credentials."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    """The development format, scrubbed of secrets."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class ScrubbingFormatter(logging.Formatter):
    """Another formatter's lines, scrubbed of secrets (gunicorn's and Celery's own)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))


def scrub_handlers(logger: logging.Logger) -> None:
    """Make every handler of ``logger`` scrub its lines (once)."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, (ScrubbingFormatter, TextFormatter, JSONFormatter)):
            handler.setFormatter(ScrubbingFormatter(handler.formatter))


class ContextFilter(logging.Filter):
    """Put ``request_id``, ``task_id`` and ``task_name`` on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        task = current_task
        request = getattr(task, "request", None) if task else None
        record.task_id = getattr(request, "id", None)
        record.task_name = getattr(task, "name", None) if record.task_id else None
        return True


class OncePerInterval(logging.Filter):
    """Let one record of a kind through per ``seconds``; the next says how many were dropped.

    For loggers that would write the same failure on every request while a
    dependency is down (the cache): the outage stays visible, its traceback
    once, without a line per request. A kind is the logger, the message and
    the exception's type.
    """

    def __init__(self, seconds: float = 10.0) -> None:
        super().__init__()
        self.seconds = seconds
        self._lock = threading.Lock()
        self._seen: dict[tuple, tuple[float, int]] = {}

    def forget(self) -> None:
        """Start afresh: the next record of every kind goes through."""
        with self._lock:
            self._seen.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.msg, record.exc_info[0] if record.exc_info else None)
        now = time.monotonic()
        with self._lock:
            shown_at, dropped = self._seen.get(kind, (None, 0))
            if shown_at is not None and now - shown_at < self.seconds:
                self._seen[kind] = (shown_at, dropped + 1)
                return False
            self._seen[kind] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [and {dropped} more like it in {self.seconds:g} s]"
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message and context."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if getattr(record, "task_id", None):
            payload["task_id"] = record.task_id
            payload["task_name"] = record.task_name
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return scrub(json.dumps(payload, default=str))


def _attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = current_request_id()
    if headers is not None and request_id and _REQUEST_ID_HEADER not in headers:
        headers[_REQUEST_ID_HEADER] = request_id


def _adopt_request_id(task: Any = None, **_: Any) -> None:
    request_id = getattr(task.request, _REQUEST_ID_HEADER, None) if task else None
    request_id_var.set(request_id)


def _scrub_celery_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        scrub_handlers(logger)


def connect_celery_signals() -> None:
    signals.before_task_publish.connect(_attach_request_id, weak=False)
    signals.task_prerun.connect(_adopt_request_id, weak=False)
    # A worker sets up its own handlers (unless Django's are kept): they scrub too.
    signals.after_setup_logger.connect(_scrub_celery_logs, weak=False)
    signals.after_setup_task_logger.connect(_scrub_celery_logs, weak=False)
