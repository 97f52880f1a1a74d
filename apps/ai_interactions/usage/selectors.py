"""Reads of AI usage: requests, outcomes, tokens, cost and latency, exact to the moment.

Closed hours come from the ``HourlyUsage`` rollups; the rest from the interactions.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Aggregate, Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDate, TruncHour

from apps.ai_interactions.models import (
    LATENCY_BUCKET_BOUNDS_MS,
    LATENCY_BUCKETS,
    AIInteraction,
    HourlyUsage,
    InteractionStatus,
    UsageRollupState,
)
from apps.ai_interactions.selectors import interaction_list

# Rows saved this long before the rollup last ran may have committed after it
# looked: their hours are read live (and rolled up again on the next run).
ROLLUP_RECHECK = timedelta(minutes=10)
HOUR = timedelta(hours=1)
USAGE_GROUPS = {
    "day": ("day",),
    "model": ("provider", "model"),
    "deployment": ("model", "deployment"),  # per route and the deployment that answered
    "hour": ("hour",),
}
USAGE_TOTALS = (
    "requests",
    "succeeded",
    "failed",
    "cached",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)
_SUMMED = (*USAGE_TOTALS, "latency_count", "latency_sum_ms", *LATENCY_BUCKETS)


def usage_aggregates() -> dict[str, Aggregate]:
    """What one usage group of interactions sums to: the columns of ``HourlyUsage``."""
    aggregates: dict[str, Aggregate] = {
        "requests": Count("id"),
        "succeeded": Count("id", filter=Q(status=InteractionStatus.SUCCEEDED)),
        "failed": Count("id", filter=Q(status=InteractionStatus.FAILED)),
        "cached": Count("id", filter=Q(cached=True)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cost_usd": Sum("cost_usd", default=Decimal(0)),
        "latency_count": Count("latency_ms"),
        "latency_sum_ms": Sum("latency_ms", default=0.0),
        "latency_min_ms": Min("latency_ms"),
        "latency_max_ms": Max("latency_ms"),
    }
    lower = None
    for name, upper in zip(LATENCY_BUCKETS, (*LATENCY_BUCKET_BOUNDS_MS, None), strict=True):
        in_bucket = Q(latency_ms__lt=upper) if upper is not None else Q(latency_ms__isnull=False)
        if lower is not None:
            in_bucket &= Q(latency_ms__gte=lower)
        aggregates[name] = Count("id", filter=in_bucket)
        lower = upper
    return aggregates


def _rollup_aggregates() -> dict[str, Aggregate]:
    return {
        **{name: Sum(name) for name in _SUMMED},
        "latency_min_ms": Min("latency_min_ms"),
        "latency_max_ms": Max("latency_max_ms"),
    }


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def changed_hours(*, since: datetime, start: datetime, end: datetime) -> set[datetime]:
    """Hours in [start, end) holding interactions saved at or after ``since``."""
    rows = AIInteraction.objects.filter(
        updated_at__gte=since, created_at__gte=start, created_at__lt=end
    )
    hours = rows.annotate(at=TruncHour("created_at", tzinfo=UTC)).values_list("at", flat=True)
    return {hour_start(at) for at in hours.order_by().distinct()}


def _rolled_up_hours(start: datetime, end: datetime) -> tuple[datetime, datetime, set[datetime]]:
    """The whole hours of [start, end) to read from rollups: [first, last) minus the excluded."""
    state = UsageRollupState.objects.filter(rolled_up_to__isnull=False).first()
    first = hour_start(start) + (HOUR if start != hour_start(start) else timedelta(0))
    if state is None or first >= min(hour_start(end), state.rolled_up_to):
        return first, first, set()
    last = min(hour_start(end), state.rolled_up_to)
    excluded = changed_hours(since=state.ran_at - ROLLUP_RECHECK, start=first, end=last)
    return first, last, excluded


def _estimated_p95(group: dict[str, Any]) -> float | None:
    """The 95th percentile latency, interpolated within its histogram bucket."""
    total = sum(group[name] for name in LATENCY_BUCKETS)
    if not total:
        return None
    rank, seen, lower = 0.95 * total, 0, 0.0
    for name, upper in zip(LATENCY_BUCKETS, (*LATENCY_BUCKET_BOUNDS_MS, None), strict=True):
        count = group[name]
        if count and seen + count >= rank:
            low = max(lower, group["latency_min_ms"])
            high = min(upper or group["latency_max_ms"], group["latency_max_ms"])
            return low + (high - low) * (rank - seen) / count
        seen += count
        lower = upper
    return group["latency_max_ms"]


def _merge(groups: dict[tuple, dict[str, Any]], keys: tuple[str, ...], rows: Any) -> None:
    for row in rows:
        key = tuple(row[name] for name in keys)
        if key not in groups:
            groups[key] = row
            continue
        group = groups[key]
        for name in _SUMMED:
            group[name] += row[name]
        for name, pick in (("latency_min_ms", min), ("latency_max_ms", max)):
            values = [value for value in (group[name], row[name]) if value is not None]
            group[name] = pick(values) if values else None


def interaction_usage(
    *, user: AbstractBaseUser, group_by: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Requests, outcomes, tokens, cost and latency per day, model or hour, in [start, end).

    Whole hours the rollup has closed come from ``HourlyUsage``; the rest (the
    edges of the range, the current hour, hours not rolled up yet or changed
    since) from the interactions themselves, so totals are exact. The mean
    latency is exact; the p95 is estimated from the latency histogram.
    """
    keys = USAGE_GROUPS[group_by]
    first, last, excluded = _rolled_up_hours(start, end)
    live = interaction_list(user=user, created_after=start, created_before=end)
    groups: dict[tuple, dict[str, Any]] = {}
    if first < last:
        outside = Q(created_at__lt=first) | Q(created_at__gte=last)
        for hour in excluded:
            outside |= Q(created_at__gte=hour, created_at__lt=hour + HOUR)
        live = live.filter(outside)
        rollups = HourlyUsage.objects.filter(hour__gte=first, hour__lt=last).exclude(
            hour__in=excluded
        )
        if not user.is_staff:
            rollups = rollups.filter(owner=user)
        if group_by == "day":
            rollups = rollups.annotate(day=TruncDate("hour"))
        _merge(groups, keys, rollups.values(*keys).annotate(**_rollup_aggregates()).order_by())
    if group_by == "day":
        live = live.annotate(day=TruncDate("created_at"))
    elif group_by == "hour":
        live = live.annotate(hour=TruncHour("created_at", tzinfo=UTC))
    _merge(groups, keys, live.values(*keys).annotate(**usage_aggregates()).order_by())
    results = []
    for key in sorted(groups):
        group = groups[key]
        count = group["latency_count"]
        mean = group["latency_sum_ms"] / count if count else None
        p95 = _estimated_p95(group)
        results.append(
            {
                **dict(zip(keys, key, strict=True)),
                **{name: group[name] for name in USAGE_TOTALS},
                "latency_ms_mean": None if mean is None else round(mean, 2),
                "latency_ms_p95": None if p95 is None else round(p95, 2),
            }
        )
    return results
