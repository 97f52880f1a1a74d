"""Health checks of pooled PostgreSQL connections, where they cost a round trip each; and
writes done aside, on a connection of their own, while a request goes on.

The psycopg pool of a web process (``DATABASE_POOL``) hands a connection to
every request and takes it back at the end. Checking each one as it is handed
out (an empty query) finds connections a restarted server has closed, so
that no request fails on one; but it is a round trip per request, as costly
as a small query. A connection the pool handed out less than
``HEALTH_CHECK_GRACE_SECONDS`` ago (and took back sound: the pool closes
connections returned broken) skips the check; after a pause it is checked
again. A server restart inside that window fails the next
request's first query instead (503 ``database_unavailable``), as a restart
between a check and the query always could, and the broken connection is
dropped.

Celery workers keep one connection each and apply the same rule around tasks
(:mod:`contextos.worker`).
"""

import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connections, transaction
from psycopg_pool import ConnectionPool

HEALTH_CHECK_GRACE_SECONDS = 1.0
T = TypeVar("T")

# When the pool last handed out each of its connections.
_handed_out_at: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()


def pool_check(connection: Any) -> None:
    """The pool's ``check``: raise if ``connection`` is broken, unless it was in use just now."""
    now = time.monotonic()
    last = _handed_out_at.get(connection)
    _handed_out_at[connection] = now
    if last is not None and now - last < HEALTH_CHECK_GRACE_SECONDS:
        return
    ConnectionPool.check_connection(connection)


# --- Writes that need not hold up a request ----------------------------------------------

_WRITERS = 2
_writers: tuple[int, ThreadPoolExecutor] | None = None
_writers_lock = threading.Lock()


def written_aside(write: Callable[[], T]) -> Future[T]:
    """Run ``write`` (a database write) on a thread of its own, with its own connection,
    while the caller goes on; the caller waits for the returned future (``write``'s
    result) before it writes the same rows again. Inside a transaction of the caller's,
    the write stays in that transaction: it is done now (raising as it would).

    A web process's pool holds connections for these threads beside those of its request
    threads (``DATABASE_POOL_MAX_SIZE``).
    """
    if transaction.get_connection().in_atomic_block:
        done: Future[T] = Future()
        done.set_result(write())
        return done
    return _executor().submit(_on_own_connection, write)


def _on_own_connection(write: Callable[[], T]) -> T:
    try:
        return write()
    finally:
        connections.close_all()  # a pooled connection goes back to the pool


def _executor() -> ThreadPoolExecutor:
    """The writer threads of this process (made again in a forked child)."""
    global _writers
    with _writers_lock:
        if _writers is None or _writers[0] != os.getpid():
            _writers = (os.getpid(), ThreadPoolExecutor(_WRITERS, thread_name_prefix="writer"))
        return _writers[1]
