"""Django's PostgreSQL backend, with the pooled connections checked as :mod:`contextos.db` says.

Django gives its psycopg pool a check that costs a round trip per request
(with ``CONN_HEALTH_CHECKS``) or none at all; this backend puts
:func:`contextos.db.pool_check` in its place.
"""

from typing import Any

from django.db.backends.postgresql import base

from contextos.db import pool_check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        if pool is not None and getattr(pool, "_check", None) is not None:
            pool._check = pool_check
        return pool
