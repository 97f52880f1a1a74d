"""The id of the request (or of the API call that queued a task) being served."""

import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def sanitize_request_id(candidate: str | None) -> str:
    """Return the client's id when it is 1-128 safe characters, else a fresh one."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return request_id_var.get()
