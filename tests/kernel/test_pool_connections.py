"""Web processes' pooled connections are checked when handed out, unless in use just now."""

import psycopg
import pytest
from django.db import OperationalError, connection

from contextos import db

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate_every_other_backend() -> None:
    """What a database restart does to the pool's connections."""
    params = connection.get_connection_params()
    keys = ("dbname", "user", "password", "host", "port")
    with psycopg.connect(**{k: params[k] for k in keys if k in params}, autocommit=True) as other:
        other.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _pooled():
    """A new pool holding one connection, as a web process that serves one request at a time."""
    connection.close()
    connection.close_pool()
    assert connection.pool is not None, "web processes use the pool (DATABASE_POOL)"
    connection.pool.open(wait=True)
    yield
    connection.close()


def test_the_pool_checks_with_the_grace_rule():
    assert connection.pool._check is db.pool_check


def test_a_connection_idle_past_the_grace_is_checked_and_replaced(monkeypatch):
    monkeypatch.setattr(db, "HEALTH_CHECK_GRACE_SECONDS", 0.0)
    killed = backend_pid()
    connection.close()  # back to the pool, as at the end of a request
    terminate_every_other_backend()

    assert backend_pid() != killed  # the next request is served, on a new connection


def test_a_connection_in_use_just_now_skips_the_check():
    killed = backend_pid()
    connection.close()
    terminate_every_other_backend()

    # Within the grace, the broken connection is handed out unchecked: one query
    # fails (a 503 in a request), and the pool drops the connection.
    with pytest.raises(OperationalError):
        backend_pid()
    connection.close()
    assert backend_pid() != killed
