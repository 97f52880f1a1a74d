"""django-celery-results' database backend, writing each result in one round trip.

The stock backend stores a state with ``get_or_create`` and then ``save``: a
SELECT, then an INSERT in a transaction (or an UPDATE) for every task, about
half of a small task's time in a worker (profiled). One autocommitted
``INSERT ... ON CONFLICT (task_id) DO UPDATE`` writes the same row (PostgreSQL
and SQLite both speak it); the rows, the admin and ``AsyncResult`` are
unchanged.

A task may return a :class:`RecordedOutcome` to have its row tell the outcome of
the work it ran rather than its own: ``tasks.execute`` runs ContextOS task types,
and its row says FAILURE for a failed one under the type's name.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from celery import states
from django.db import connections
from django.db.models import Field
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult


@cache
def _upsert_sql(using: str, names: tuple[str, ...]) -> tuple[str, tuple[Field, ...]]:
    """The statement writing these fields, built once per database and set of fields."""
    quote = connections[using].ops.quote_name
    fields = tuple(TaskResult._meta.get_field(name) for name in names)
    updates = ", ".join(
        f"{quote(field.column)} = EXCLUDED.{quote(field.column)}"
        for field in fields
        if field.name not in {"task_id", "date_created"}
    )
    sql = (
        f"INSERT INTO {quote(TaskResult._meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({quote('task_id')}) DO UPDATE SET {updates}"
    )
    return sql, fields


def upsert_task_result(task_id: str, fields: dict[str, Any], using: str = "default") -> None:
    """Insert the result row for ``task_id`` or overwrite ``fields`` of the existing one.

    ``date_done`` is set to now; ``date_created`` only when the row is new.
    """
    connection = connections[using]
    now = timezone.now()
    values = {**fields, "task_id": task_id, "date_done": now, "date_created": now}
    sql, model_fields = _upsert_sql(using, tuple(values))
    params = [field.get_db_prep_save(values[field.name], connection) for field in model_fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@dataclass(frozen=True)
class RecordedOutcome:
    """A task's return value naming the state and task name its result row records.

    Celery records every return as SUCCESS under the Celery task's name. A task that
    ran work which failed or was cancelled returns this instead of raising, so that
    Celery neither retries it nor logs a traceback for an expected outcome, and its
    row still says FAILURE or REVOKED. ``result`` is what the row holds: an exception
    for FAILURE and REVOKED, as Celery stores them.
    """

    state: str
    name: str
    result: Any = None


class UpsertDatabaseBackend(DatabaseBackend):
    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        task_name = None
        if isinstance(result, RecordedOutcome):
            status, task_name = result.state, result.name
            result = self.encode_result(result.result, status)
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        fields: dict[str, Any] = {
            "content_encoding": content_encoding,
            "content_type": content_type,
            "meta": encoded_meta,
            "result": encoded,
            "status": status,
            **self._get_extended_properties(request, traceback),
            # Kept even when no request came with the state (the stock backend drops it).
            "traceback": traceback,
        }
        if task_name:
            fields["task_name"] = task_name
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
        upsert_task_result(task_id, fields, using or "default")
        return encoded
