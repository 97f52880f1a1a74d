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

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, models, router, transaction
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
# Per process: its writer threads, and how many of them are free.
_writers: tuple[int, ThreadPoolExecutor, threading.Semaphore] | None = None
_writers_lock = threading.Lock()


def written_aside(write: Callable[[], T], *, after: float = 0.0) -> Future[T]:
    """Run ``write`` (a database write) on a thread of its own, with its own connection,
    while the caller goes on; the caller waits for the returned future (``write``'s
    result) before it writes the same rows again.

    ``after`` (seconds) holds the writer back so that the caller's next step runs first:
    a write's Python (its values and their adaptation, about 0.5 ms) holds the GIL
    until its first round trip, and would otherwise hold up the caller's. A write done
    on the caller's thread (below) does not wait.

    The write is done now, on the caller's thread (raising as it would), inside a
    transaction of the caller's (it stays in that transaction) and when every writer
    thread is busy: under load, writes never queue behind each other, and a caller
    waits no longer than it would have written.

    A web process's pool holds connections for the writer threads beside those of its
    request threads (``DATABASE_POOL_MAX_SIZE``).
    """
    executor, free = _executor()
    if transaction.get_connection().in_atomic_block or not free.acquire(blocking=False):
        done: Future[T] = Future()
        done.set_result(write())
        return done
    try:
        return executor.submit(_on_own_connection, write, free, after)
    except BaseException:
        free.release()
        raise


def _on_own_connection(write: Callable[[], T], free: threading.Semaphore, after: float) -> T:
    try:
        if after > 0:
            time.sleep(after)
        return write()
    finally:
        connections.close_all()  # a pooled connection goes back to the pool
        free.release()


def _executor() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    """The writer threads of this process (made again in a forked child)."""
    global _writers
    with _writers_lock:
        if _writers is None or _writers[0] != os.getpid():
            executor = ThreadPoolExecutor(_WRITERS, thread_name_prefix="writer")
            _writers = (os.getpid(), executor, threading.Semaphore(_WRITERS))
        return _writers[1], _writers[2]


# --- Rows written with a statement bound on the server ------------------------------------


def row_insert(obj: models.Model) -> None:
    """INSERT ``obj`` as ``obj.save()`` of a new row would: each field's default,
    ``auto_now`` and adaptation (``pre_save``, ``get_db_prep_save``), every column.

    On PostgreSQL the statement is bound on the server, and prepared once a connection
    has run it a few times; Django's SQL compiler and its client-side binding of 36
    columns cost more than the INSERT itself on the gateway's hot path. No signal is
    sent: use it only for models no receiver listens to. Elsewhere, ``obj.save()``.
    """
    connection = _connection(obj)
    if connection.vendor != "postgresql":
        obj.save(force_insert=True)
        return
    sql, fields = _insert_statement(type(obj))
    values = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    _execute(obj, sql, values)


def row_update(
    obj: models.Model, *, unchanged: frozenset[str] = frozenset(), wait_for_disk: bool = True
) -> bool:
    """UPDATE every column of ``obj``'s row as ``obj.save()`` of an existing row would
    (see :func:`row_insert`), but those of the fields named ``unchanged`` (the caller
    knows the row holds them already: a large prompt is not sent twice); False when
    there is no such row (then nothing is written).

    ``wait_for_disk=False`` commits the change without waiting for the server to flush
    it to disk (``synchronous_commit = off`` for this statement's transaction alone):
    every reader sees it at once, as always, but a crash of PostgreSQL itself within a
    fraction of a second of the commit may forget it. Only for a row already on disk
    that can live without this change. Inside a caller's transaction, its commit
    decides; with ``DATABASE_SYNCHRONOUS_COMMIT`` set, that setting decides every commit.
    """
    connection = _connection(obj)
    if connection.vendor != "postgresql":
        obj._state.adding = False
        obj.save()  # an UPDATE, or an INSERT when the row is gone
        return True
    # Inside a caller's transaction the setting would outlive the statement: not there.
    wait_for_disk = (
        wait_for_disk or connection.in_atomic_block or bool(settings.DATABASE_SYNCHRONOUS_COMMIT)
    )
    sql, fields = _update_statement(type(obj), unchanged, wait_for_disk)
    values = [f.get_db_prep_save(f.pre_save(obj, False), connection) for f in fields]
    return _execute(obj, sql, [*values, obj.pk]) == 1


def row_insert_in_turn(
    obj: models.Model, *, turn: int, condition: str, params: Sequence[Any]
) -> bool:
    """INSERT ``obj`` (as :func:`row_insert` does) if ``condition`` (SQL, with ``params``)
    holds, in a transaction of its own whose first statement takes the advisory lock
    ``turn``; False when the condition did not hold (nothing was written).

    The lock and the conditional INSERT go to PostgreSQL in one flight (psycopg's
    pipeline mode; one transaction, committed at the pipeline's end), so the lock is
    held while the server works, not while this process waits for a reply and sends
    the next statement: callers taking turns on one lock are not held up by each
    other's round trips. The condition is read once the lock is granted (its
    statement's own snapshot), so it sees every row written in the turns before.

    PostgreSQL only, outside any transaction of the caller's. A failure (a unique
    constraint, say) rolls the transaction back and raises as Django's errors do.
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection = _connection(obj)
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        raise RuntimeError("row_insert_in_turn runs on PostgreSQL, outside a transaction")
    sql, fields = _conditional_insert_statement(type(obj), condition)
    values = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.wrap_database_errors:
        connection.ensure_connection()
        raw = connection.connection
        # Statements sent in a pipeline up to its sync are one transaction, committed at
        # the sync (or rolled back, the statements after a failure skipped).
        with (
            raw.pipeline(),
            ServerBindingCursor(raw) as lock,
            ServerBindingCursor(raw) as insert,
        ):
            lock.execute("SELECT pg_advisory_xact_lock(%s)", [turn])
            insert.execute(sql, [*values, *params])
        inserted = insert.rowcount == 1
    if inserted:
        obj._state.adding = False
        obj._state.db = connection.alias
    return inserted


def _connection(obj: models.Model) -> Any:
    return connections[router.db_for_write(type(obj), instance=obj)]


# Identifiers of the model, quoted by the backend; every value is a parameter.


@functools.cache
def _insert_statement(model: type[models.Model]) -> tuple[str, list]:
    """The model's INSERT of every column."""
    meta = model._meta
    quote = connections["default"].ops.quote_name
    fields = list(meta.concrete_fields)
    insert = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    return insert, fields


@functools.cache
def _conditional_insert_statement(model: type[models.Model], condition: str) -> tuple[str, list]:
    """The model's INSERT of every column, of the row only if ``condition`` holds. Each
    value is cast to its column's type: a parameter in a SELECT list (a None, a string)
    would otherwise be read as text."""
    meta = model._meta
    connection = connections["default"]
    quote = connection.ops.quote_name
    fields = list(meta.concrete_fields)
    insert = "INSERT INTO {} ({}) SELECT {} WHERE {}".format(
        quote(meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(f"%s::{f.cast_db_type(connection)}" for f in fields),
        condition,
    )
    return insert, fields


@functools.cache
def _update_statement(
    model: type[models.Model], unchanged: frozenset[str], wait_for_disk: bool = True
) -> tuple[str, list]:
    """The model's UPDATE of every column but the key's and those of ``unchanged``.

    Not ``wait_for_disk``: the statement itself sets ``synchronous_commit`` off for its
    own transaction (a one-row subquery of ``set_config(..., true)``, run as the row is
    updated), so that the commit costs no round trip more than the UPDATE's own.
    """
    meta = model._meta
    quote = connections["default"].ops.quote_name
    unknown = unchanged - {f.name for f in meta.concrete_fields}
    if unknown:
        raise ValueError(f"{model.__name__} has no field {sorted(unknown)[0]!r}")
    changed = [f for f in meta.concrete_fields if not f.primary_key and f.name not in unchanged]
    update = "UPDATE {} SET {}{} WHERE {} = %s".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(f"{quote(f.column)} = %s" for f in changed),
        ""
        if wait_for_disk
        else (" FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush"),
        quote(meta.pk.column),
    )
    return update, changed


def _execute(obj: models.Model, sql: str, values: list) -> int:
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection = _connection(obj)
    with connection.wrap_database_errors:
        connection.ensure_connection()
        raw = ServerBindingCursor(connection.connection)
    cursor = (
        connection.make_debug_cursor(raw)
        if connection.queries_logged
        else connection.make_cursor(raw)
    )
    with cursor:
        cursor.execute(sql, values)
        rows = cursor.rowcount
    obj._state.adding = False
    obj._state.db = connection.alias
    return rows
