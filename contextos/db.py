"""Health checks of pooled PostgreSQL connections, where they cost a round trip each.

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

import time
import weakref
from typing import Any

from psycopg_pool import ConnectionPool

HEALTH_CHECK_GRACE_SECONDS = 1.0

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
