"""Django's PostgreSQL backend, with the pooled connections checked as :mod:`contextos.db` says.

Django gives its psycopg pool a check that costs a round trip per request
(with ``CONN_HEALTH_CHECKS``) or none at all; this backend puts
:func:`contextos.db.pool_check` in its place.
"""

from typing import Any

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

from contextos.db import pool_check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        # Django's check (CONN_HEALTH_CHECKS) is replaced once, when the pool is made.
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            pool._check = pool_check
        return pool
