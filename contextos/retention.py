"""Deleting old rows a batch at a time, so that millions of them never hold long locks."""

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from django.db.models import QuerySet

PURGE_BATCH_SIZE = 1000


def delete_in_batches(
    queryset: QuerySet,
    *,
    order_by: Sequence[str],
    batch_size: int = PURGE_BATCH_SIZE,
    fields: Sequence[str] = (),
) -> Iterator[tuple[list[tuple[Any, ...]], Counter]]:
    """Delete the rows of ``queryset``, oldest first, ``batch_size`` at a time.

    Each batch is its own short transaction: select the next ids (and
    ``fields``), then delete those ids that still match ``queryset``. Order by
    an indexed column alone (no tie-breaker), so that PostgreSQL reads each
    batch straight from the index instead of sorting every remaining row. Yields
    each batch's selected ``(pk, *fields)`` rows and the rows deleted per
    model label (cascades included).
    """
    while True:
        rows = list(queryset.order_by(*order_by).values_list("pk", *fields)[:batch_size])
        if not rows:
            return
        _, deleted = queryset.filter(pk__in=[row[0] for row in rows]).delete()
        yield rows, Counter(deleted)
