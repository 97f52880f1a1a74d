"""Reads of AI usage: requests, outcomes, tokens, cost and latency, exact to the moment.

Closed hours come from the ``HourlyUsage`` (per tag: ``HourlyTagUsage``) rollups;
the rest from the interactions.
"""

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Aggregate, Count, Func, Max, Min, Q, QuerySet, Sum, TextField
from django.db.models.functions import TruncDate, TruncHour

from apps.accounts.models import Team
from apps.accounts.selectors import api_key_list
from apps.ai_interactions.models import (
    LATENCY_BUCKET_BOUNDS_MS,
    LATENCY_BUCKETS,
    AIInteraction,
    HourlyTagUsage,
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
    "key": ("api_key_id",),
    "user": ("owner_id",),
    "team": ("team_id",),
    "tag": ("tag",),
    "hour": ("hour",),
}
# The dimensions every rollup row has (``HourlyTagUsage`` adds its tag).
ROLLUP_KEYS = ("owner_id", "provider", "model", "deployment", "api_key_id", "team_id", "hour")
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
# What ``usage_summed`` reads of each interaction.
SUMMED_FIELDS = ("status", "cached", "input_tokens", "output_tokens", "cost_usd", "latency_ms")


class InteractionTag(Func):
    """Each tag of an interaction, one row per tag (PostgreSQL; none for an empty list)."""

    function = "jsonb_array_elements_text"
    # Anything but a list (not written by the services, but possible by SQL) has no tags.
    template = (
        "%(function)s(CASE WHEN jsonb_typeof(%(expressions)s) = 'array' "
        "THEN %(expressions)s ELSE '[]'::jsonb END)"
    )
    output_field = TextField()
    set_returning = True

    def __init__(self) -> None:
        super().__init__("tags")


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


def usage_summed(rows: Iterable[dict[str, Any]], keys: Iterable[str]) -> list[dict[str, Any]]:
    """``usage_aggregates`` summed in Python, per group of ``keys``, over rows' ``SUMMED_FIELDS``.

    For SQLite, which cannot expand a JSON list within a grouped query.
    """
    keys = tuple(keys)
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[name] for name in keys)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                **dict(zip(keys, key, strict=True)),
                **dict.fromkeys(_SUMMED, 0),
                "cost_usd": Decimal(0),
                "latency_sum_ms": 0.0,
                "latency_min_ms": None,
                "latency_max_ms": None,
            }
        group["requests"] += 1
        group["succeeded"] += row["status"] == InteractionStatus.SUCCEEDED
        group["failed"] += row["status"] == InteractionStatus.FAILED
        group["cached"] += bool(row["cached"])
        group["input_tokens"] += row["input_tokens"]
        group["output_tokens"] += row["output_tokens"]
        group["cost_usd"] += row["cost_usd"]
        latency = row["latency_ms"]
        if latency is not None:
            group["latency_count"] += 1
            group["latency_sum_ms"] += latency
            group[LATENCY_BUCKETS[bisect_right(LATENCY_BUCKET_BOUNDS_MS, latency)]] += 1
            low, high = group["latency_min_ms"], group["latency_max_ms"]
            group["latency_min_ms"] = latency if low is None else min(low, latency)
            group["latency_max_ms"] = latency if high is None else max(high, latency)
    return list(groups.values())


def each_tag(rows: Iterable[dict[str, Any]], *, tag: str | None = None) -> Iterator[dict[str, Any]]:
    """Each row once per tag it has (only ``tag``, when given), the tag as ``row["tag"]``."""
    for row in rows:
        tags = row["tags"] if isinstance(row["tags"], list) else []
        for each in tags:
            if tag is None or each == tag:
                yield {**row, "tag": each}


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


def _live_usage(
    live: QuerySet[AIInteraction], *, group_by: str, tag: str | None
) -> Iterable[dict[str, Any]]:
    """``live``'s usage per group: in SQL, or per tag in Python on SQLite."""
    keys = USAGE_GROUPS[group_by]
    if group_by == "day":
        live = live.annotate(day=TruncDate("created_at"))
    elif group_by == "hour":
        live = live.annotate(hour=TruncHour("created_at", tzinfo=UTC))
    if group_by != "tag" and tag is None:
        return live.values(*keys).annotate(**usage_aggregates()).order_by()
    if connection.vendor == "postgresql":
        if tag is not None:
            live = live.filter(tags__contains=[tag])
        if group_by == "tag":
            live = live.annotate(tag=InteractionTag())
        return live.values(*keys).annotate(**usage_aggregates()).order_by()
    untagged = [name for name in keys if name != "tag"]
    rows = live.values(*untagged, "tags", *SUMMED_FIELDS).order_by()
    return usage_summed(each_tag(rows.iterator(), tag=tag), keys)


def _group_names(group_by: str, ids: set[Any]) -> dict[Any, str]:
    """The names of the keys, teams or users the groups are (one query)."""
    ids.discard(None)
    if group_by not in ("key", "team", "user") or not ids:
        return {}
    if group_by == "key":
        return dict(api_key_list().filter(pk__in=ids).values_list("pk", "name"))
    if group_by == "team":
        return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name"))
    users = get_user_model()._default_manager.filter(pk__in=ids)
    return dict(users.values_list("pk", "username"))


def _named(group_by: str, key: tuple, names: dict[Any, str]) -> dict[str, Any]:
    if group_by == "key":
        return {"key_id": key[0], "key_name": names.get(key[0])}
    if group_by == "team":
        return {"team_id": key[0], "team_name": names.get(key[0])}
    if group_by == "user":
        return {"user": names.get(key[0])}
    return dict(zip(USAGE_GROUPS[group_by], key, strict=True))


def interaction_usage(
    *,
    user: AbstractBaseUser,
    group_by: str,
    start: datetime,
    end: datetime,
    api_key_id: UUID | None = None,
    team_id: UUID | None = None,
    tag: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Requests, outcomes, tokens, cost and latency per group, in [start, end).

    Groups: day, model, deployment, key, user, team, tag or hour; optionally
    only one key's, team's, tag's or model's (route's) interactions. An
    interaction with several tags counts once under each.

    Whole hours the rollup has closed come from ``HourlyUsage`` (per tag:
    ``HourlyTagUsage``); the rest (the edges of the range, the current hour,
    hours not rolled up yet or changed since) from the interactions themselves,
    so totals are exact. The mean latency is exact; the p95 is estimated from
    the latency histogram.
    """
    keys = USAGE_GROUPS[group_by]
    attribution = {
        name: value
        for name, value in {"api_key_id": api_key_id, "team_id": team_id}.items()
        if value is not None
    }
    first, last, excluded = _rolled_up_hours(start, end)
    live = interaction_list(user=user, model=model, created_after=start, created_before=end)
    live = live.filter(**attribution)
    groups: dict[tuple, dict[str, Any]] = {}
    if first < last:
        outside = Q(created_at__lt=first) | Q(created_at__gte=last)
        for hour in excluded:
            outside |= Q(created_at__gte=hour, created_at__lt=hour + HOUR)
        live = live.filter(outside)
        per_tag = group_by == "tag" or tag is not None
        rollups = (HourlyTagUsage if per_tag else HourlyUsage).objects.filter(
            hour__gte=first, hour__lt=last, **attribution
        )
        rollups = rollups.exclude(hour__in=excluded)
        if model is not None:
            rollups = rollups.filter(model=model)
        if tag is not None:
            rollups = rollups.filter(tag=tag)
        if not user.is_staff:
            rollups = rollups.filter(owner=user)
        if group_by == "day":
            rollups = rollups.annotate(day=TruncDate("hour"))
        _merge(groups, keys, rollups.values(*keys).annotate(**_rollup_aggregates()).order_by())
    _merge(groups, keys, _live_usage(live, group_by=group_by, tag=tag))
    if group_by == "tag" and tag is not None:
        # PostgreSQL sums the other tags of the rows holding ``tag`` too.
        groups = {key: group for key, group in groups.items() if key == (tag,)}
    names = _group_names(group_by, {key[0] for key in groups})
    results = []
    for key in sorted(groups, key=lambda key: [(value is None, value) for value in key]):
        group = groups[key]
        count = group["latency_count"]
        mean = group["latency_sum_ms"] / count if count else None
        p95 = _estimated_p95(group)
        results.append(
            {
                **_named(group_by, key, names),
                **{name: group[name] for name in USAGE_TOTALS},
                "latency_ms_mean": None if mean is None else round(mean, 2),
                "latency_ms_p95": None if p95 is None else round(p95, 2),
            }
        )
    return results
