"""django-celery-results' database backend, writing each result in one round trip.

The stock backend stores a state with ``get_or_create`` and then ``save``: a
SELECT, then an INSERT in a transaction (or an UPDATE) for every task, about
half of a small task's time in a worker (profiled). One
``INSERT ... ON CONFLICT (task_id) DO UPDATE`` writes the same row; the
rows, the admin and ``AsyncResult`` are unchanged.
"""

from typing import Any

from celery import states
from django.db.models.functions import Now
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult


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
            "traceback": traceback,
            **self._get_extended_properties(request, traceback),
        }
        if status == states.STARTED:
            fields["date_started"] = Now()
        TaskResult.objects.using(using or "default").bulk_create(
            [TaskResult(task_id=task_id, **fields)],
            update_conflicts=True,
            unique_fields=["task_id"],
            update_fields=[*fields, "date_done"],
        )
        return encoded
