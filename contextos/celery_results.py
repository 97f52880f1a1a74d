"""django-celery-results' database backend, writing each result in one round trip.

The stock backend stores a state with ``get_or_create`` and then ``save``: a
SELECT, then an INSERT in a transaction (or an UPDATE) for every task, about
half of a small task's time in a worker (profiled). One autocommitted
``INSERT ... ON CONFLICT (task_id) DO UPDATE`` writes the same row (PostgreSQL
and SQLite both speak it); the rows, the admin and ``AsyncResult`` are
unchanged.
"""

from typing import Any

from celery import states
from django.db import connections
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult


def upsert_task_result(task_id: str, fields: dict[str, Any], using: str = "default") -> None:
    """Insert the result row for ``task_id`` or overwrite ``fields`` of the existing one.

    ``date_done`` is set to now; ``date_created`` only when the row is new.
    """
    connection = connections[using]
    now = timezone.now()
    values = {**fields, "task_id": task_id, "date_done": now}
    inserted = {**values, "date_created": now}
    quote = connection.ops.quote_name
    columns, params = [], []
    for name, value in inserted.items():
        field = TaskResult._meta.get_field(name)
        columns.append(quote(field.column))
        params.append(field.get_db_prep_save(value, connection))
    updates = ", ".join(
        f"{quote(column)} = EXCLUDED.{quote(column)}"
        for column in (TaskResult._meta.get_field(name).column for name in values)
        if column != "task_id"
    )
    sql = (
        f"INSERT INTO {quote(TaskResult._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({quote('task_id')}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


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
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
        upsert_task_result(task_id, fields, using or "default")
        return encoded
