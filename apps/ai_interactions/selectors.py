"""Reads of the AI domain: interactions a caller may see, and usage totals."""

import math
from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    BooleanField,
    Count,
    FloatField,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate

from apps.ai_interactions.models import AIInteraction, InteractionStatus
from contextos.exceptions import NotFound

# The expression of the full-text index (migration 0002): searches use it verbatim.
SEARCH_DOCUMENT = "to_tsvector('simple', coalesce(prompt, '') || ' ' || coalesce(response, ''))"


def interaction_list(
    *,
    user: AbstractBaseUser,
    status: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    cached: bool | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    search: str | None = None,
) -> QuerySet[AIInteraction]:
    """Interactions ``user`` may see (staff: all), newest first, filtered."""
    rows = (
        AIInteraction.objects.all() if user.is_staff else AIInteraction.objects.filter(owner=user)
    )
    filters = {
        "status": status,
        "model": model,
        "provider": provider,
        "cached": cached,
        "created_at__gte": created_after,
        "created_at__lt": created_before,
    }
    rows = rows.filter(**{name: value for name, value in filters.items() if value is not None})
    if search:
        rows = rows.filter(_matches(search))
    return rows.order_by("-created_at")


def _matches(search: str) -> Q | RawSQL:
    if connection.vendor == "postgresql":
        # The search text is a bound parameter; only the constant expression is inlined.
        return RawSQL(  # noqa: S611
            f"{SEARCH_DOCUMENT} @@ plainto_tsquery('simple', %s)",
            [search],
            output_field=BooleanField(),
        )
    return Q(prompt__icontains=search) | Q(response__icontains=search)


def interaction_get(*, user: AbstractBaseUser, interaction_id: UUID | str) -> AIInteraction:
    try:
        return interaction_list(user=user).get(pk=interaction_id)
    except (AIInteraction.DoesNotExist, ValueError):
        raise NotFound("No such interaction.") from None


class Percentile(Aggregate):
    """PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float) -> None:
        super().__init__(expression, fraction=fraction)


def _p95(values: list[float]) -> float | None:
    """The 95th percentile with linear interpolation, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    rank = 0.95 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def interaction_usage(
    *, user: AbstractBaseUser, group_by: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Requests, outcomes, tokens, cost and latency per day or per model, in [start, end)."""
    rows = interaction_list(user=user, created_after=start, created_before=end)
    keys = ["day"] if group_by == "day" else ["provider", "model"]
    if group_by == "day":
        rows = rows.annotate(day=TruncDate("created_at"))
    totals = {
        "requests": Count("id"),
        "succeeded": Count("id", filter=Q(status=InteractionStatus.SUCCEEDED)),
        "failed": Count("id", filter=Q(status=InteractionStatus.FAILED)),
        "cached": Count("id", filter=Q(cached=True)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cost_usd": Sum("cost_usd", default=0),
        "latency_ms_mean": Avg("latency_ms"),
    }
    postgres = connection.vendor == "postgresql"
    if postgres:
        totals["latency_ms_p95"] = Percentile("latency_ms", 0.95)
    grouped = list(rows.order_by().values(*keys).annotate(**totals).order_by(*keys))
    if not postgres:
        for group in grouped:
            latencies = (
                rows.filter(**{key: group[key] for key in keys})
                .exclude(latency_ms=None)
                .values_list("latency_ms", flat=True)
            )
            group["latency_ms_p95"] = _p95(list(latencies))
    for group in grouped:
        for name in ("latency_ms_mean", "latency_ms_p95"):
            if group[name] is not None:
                group[name] = round(group[name], 2)
    return grouped
