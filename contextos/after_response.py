"""Work a request's client need not wait for, done once its response is out.

A WSGI server closes a response after sending its last byte (PEP 3333), and so do
Django's ASGI handler and its test client; closing runs the response's closers.
:class:`contextos.middleware.AfterResponseMiddleware` queues the work that the view hands to
:func:`after_response` there. Called outside a request (a Celery task, a command), or
once the view has returned (a stream's generator), :func:`after_response` does the work
at once, so its callers need not know where they run.

Only work that nothing a client can see next depends on belongs here: on a kept-alive
connection the client's next request is read after the closers have run, but a request
on another connection may come first.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http.response import HttpResponseBase

logger = logging.getLogger(__name__)

_queued: ContextVar[list[Callable[[], None]] | None] = ContextVar("after_response", default=None)


def after_response(work: Callable[[], None]) -> None:
    """Do ``work`` once the response of the request being answered is out (now, outside
    one). Its errors are logged, never raised."""
    queued = _queued.get()
    if queued is None:
        _run([work])
    else:
        queued.append(work)


def _run(works: list[Callable[[], None]]) -> None:
    for work in works:
        try:
            work()
        except Exception:
            logger.exception("Work after the response failed")


@contextmanager
def collected() -> Iterator[list[Callable[[], None]]]:
    """Queue the work handed to :func:`after_response` inside the block; when the block
    fails (no response to close), do it then."""
    queued: list[Callable[[], None]] = []
    token = _queued.set(queued)
    try:
        yield queued
    except BaseException:
        _queued.reset(token)
        _run(queued)
        raise
    _queued.reset(token)


def attached(response: HttpResponseBase, queued: list[Callable[[], None]]) -> HttpResponseBase:
    """``response``, doing the ``queued`` work when it is closed."""
    if queued:
        response._resource_closers.append(lambda: _run(queued))
    return response
