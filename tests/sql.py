"""The SQL a block of code sends, statement by statement."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection as default_connection


@contextmanager
def statements_sent(connection: Any = default_connection) -> Iterator[list[str]]:
    """The text of every statement the block runs on ``connection`` (this thread's), as
    sent to psycopg, placeholders and all.

    Django's query log (``CaptureQueriesContext``) takes its text from psycopg, which has
    none for a statement run prepared: once a pooled connection has run a statement a few
    times (``prepare_threshold``), the log holds ``None`` for it.
    """
    sent: list[str] = []

    def record(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(str(sql))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield sent
