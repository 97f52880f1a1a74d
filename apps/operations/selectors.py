"""Reads for the staff dashboard on the admin index: what is failing, what it costs and
what is waiting, over a chosen window.

Usage over closed hours comes from the ``HourlyUsage`` rollups, the rest (the current
hour, hours not rolled up yet or changed since) from the interactions, as
:func:`apps.ai_interactions.usage.selectors.interaction_usage` reads it.
"""

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate, TruncHour, TruncMinute
from django.utils import timezone

from apps.accounts.models import Team
from apps.accounts.selectors import api_key_list
from apps.ai_interactions.models import LATENCY_BUCKETS, HourlyUsage
from apps.ai_interactions.selectors import interaction_list

# The rules of reading usage exactly (which hours the rollups hold, how histograms merge
# into a p95) are the usage selectors'; the dashboard groups by two dimensions at once,
# which ``interaction_usage`` does not offer, so it reuses them rather than copy them.
from apps.ai_interactions.usage.selectors import (
    HOUR,
    USAGE_TOTALS,
    _estimated_p95,
    _merge,
    _rolled_up_hours,
    _rollup_aggregates,
    hour_start,
    usage_aggregates,
)
from apps.health.models import ServiceHeartbeat
from apps.health.selectors import BEAT_STALE_AFTER_SECONDS, celery_overview
from apps.health.services import BEAT
from apps.routing import cooldown
from apps.routing.models import Deployment
from apps.routing.selectors import LIVE_WINDOW, LiveStats, live_stats
from apps.tasks.models import TaskStatus
from apps.tasks.selectors import task_list

TOP_SPENDERS = 5
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """A span of time the dashboard sums over, ending now, cut into chart buckets.

    It starts at a bucket's edge: ``buckets`` buckets, the last one the current (partial)
    one, so the tiles are the sum of the bars.
    """

    name: str
    label: str
    bucket: timedelta
    buckets: int

    def start(self, now: datetime) -> datetime:
        return self.bucket_start(now) - (self.buckets - 1) * self.bucket

    def bucket_start(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if self.bucket >= DAY:
            return moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.bucket >= HOUR:
            return hour_start(moment)
        minutes = int(self.bucket / MINUTE)
        floored = moment.minute - moment.minute % minutes
        return moment.replace(minute=floored, second=0, microsecond=0)


WINDOWS = {
    window.name: window
    for window in (
        Window("1h", "1 hour", bucket=5 * MINUTE, buckets=12),
        Window("24h", "24 hours", bucket=HOUR, buckets=24),
        Window("7d", "7 days", bucket=DAY, buckets=7),
        Window("30d", "30 days", bucket=DAY, buckets=30),
    )
}
DEFAULT_WINDOW = "24h"


def window_get(name: str | None) -> Window:
    """The window called ``name``; the default one for anything else."""
    return WINDOWS.get(name or "", WINDOWS[DEFAULT_WINDOW])


# --- AI usage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """The part of [start, end) the rollups hold: the whole hours [first, last) but the
    ``excluded`` ones (changed since the rollup last ran); the rest is read live."""

    start: datetime
    end: datetime
    first: datetime
    last: datetime
    excluded: frozenset[datetime]

    @classmethod
    def of(cls, window: Window, start: datetime, end: datetime) -> "_Split":
        if window.bucket < HOUR:  # the last hour and a bit: never a closed, rolled-up hour
            return cls(start, end, start, start, frozenset())
        first, last, excluded = _rolled_up_hours(start, end)
        return cls(start, end, first, last, frozenset(excluded))


def _read(
    split: _Split,
    *,
    user: AbstractBaseUser,
    keys: tuple[str, ...],
    rollup: dict[str, Any],
    live: dict[str, Any],
    merge: Callable[[dict[tuple, dict[str, Any]], tuple[str, ...], Any], None],
    rollup_keys: dict[str, Any] | None = None,
    live_keys: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``rollup`` sums of ``HourlyUsage`` over the split's hours and ``live`` aggregates of
    the interactions over the rest, per ``keys`` (``*_keys``: computed ones), merged."""
    groups: dict[tuple, dict[str, Any]] = {}
    rows = interaction_list(user=user, created_after=split.start, created_before=split.end)
    if split.first < split.last:
        outside = Q(created_at__lt=split.first) | Q(created_at__gte=split.last)
        for hour in split.excluded:
            outside |= Q(created_at__gte=hour, created_at__lt=hour + HOUR)
        rows = rows.filter(outside)
        rollups = HourlyUsage.objects.filter(hour__gte=split.first, hour__lt=split.last)
        rollups = rollups.exclude(hour__in=split.excluded)
        if not user.is_staff:
            rollups = rollups.filter(owner=user)
        rollups = rollups.annotate(**(rollup_keys or {})).values(*keys)
        merge(groups, keys, rollups.annotate(**rollup).order_by())
    rows = rows.annotate(**(live_keys or {})).values(*keys)
    merge(groups, keys, rows.annotate(**live).order_by())
    return list(groups.values())


def _period(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``rows`` added up, their latency histograms too."""
    total: dict[str, Any] = {
        **dict.fromkeys((*USAGE_TOTALS, "latency_count", *LATENCY_BUCKETS), 0),
        "cost_usd": Decimal(0),
        "latency_sum_ms": 0.0,
        "latency_min_ms": None,
        "latency_max_ms": None,
    }
    _merge({(): total}, (), rows)
    return total


def _usage_shown(group: dict[str, Any]) -> dict[str, Any]:
    requests = group["requests"]
    p95 = _estimated_p95(group)
    return {
        **{name: group[name] for name in USAGE_TOTALS},
        "cache_hit_ratio": group["cached"] / requests if requests else None,
        "latency_ms_p95": None if p95 is None else round(p95, 1),
    }


def usage_overview(split: _Split, *, user: AbstractBaseUser, window: Window) -> dict[str, Any]:
    """The window's AI usage: totals, per model, and per bucket (with spend per model).

    One grouped query per source, per ``period`` and model: the day (7 d, 30 d), the hour
    (24 h) or the minute (1 h, folded into 5-minute buckets here). The p95 latency is
    estimated from the rollups' latency histograms (the interactions' for the live part).
    """
    if window.bucket >= DAY:
        rollup_period = TruncDate("hour", tzinfo=UTC)
        live_period = TruncDate("created_at", tzinfo=UTC)
    elif window.bucket >= HOUR:
        rollup_period, live_period = F("hour"), TruncHour("created_at", tzinfo=UTC)
    else:
        rollup_period, live_period = F("hour"), TruncMinute("created_at", tzinfo=UTC)
    rows = _read(
        split,
        user=user,
        keys=("period", "model"),
        rollup=_rollup_aggregates(),
        live=usage_aggregates(),
        merge=_merge,
        rollup_keys={"period": rollup_period},
        live_keys={"period": live_period},
    )
    by_model: dict[str, list[dict[str, Any]]] = {}
    by_bucket: dict[datetime, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
        by_bucket.setdefault(window.bucket_start(_period(row["period"])), []).append(row)
    models = [{"model": model, **_usage_shown(_summed(group))} for model, group in by_model.items()]
    models.sort(key=lambda row: (-row["cost_usd"], -row["requests"], row["model"]))
    buckets = []
    for index in range(window.buckets):
        bucket = split.start + index * window.bucket
        group = by_bucket.get(bucket, [])
        spend: dict[str, Decimal] = {}
        for row in group:
            spend[row["model"]] = spend.get(row["model"], Decimal(0)) + row["cost_usd"]
        buckets.append(
            {
                "start": bucket,
                "end": bucket + window.bucket,
                "requests": sum(row["requests"] for row in group),
                "failed": sum(row["failed"] for row in group),
                "cost_usd": sum((row["cost_usd"] for row in group), Decimal(0)),
                "cost_by_model": spend,
            }
        )
    return {"totals": _usage_shown(_summed(rows)), "models": models, "buckets": buckets}


_SPENT = ("requests", "cost_usd")


def _add_spent(groups: dict[tuple, dict[str, Any]], keys: tuple[str, ...], rows: Any) -> None:
    for row in rows:
        key = tuple(row[name] for name in keys)
        if key in groups:
            for name in _SPENT:
                groups[key][name] += row[name]
        else:
            groups[key] = row


def _top(rows: list[dict[str, Any]], field: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` values of ``field`` (not None) with the most spend, and their sums."""
    sums: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row[field] is None:
            continue
        total = sums.setdefault(row[field], {"id": row[field], "requests": 0, "cost": Decimal(0)})
        total["requests"] += row["requests"]
        total["cost"] += row["cost_usd"]
    ranked = sorted(sums.values(), key=lambda total: (-total["cost"], -total["requests"]))
    return [
        {"id": total["id"], "requests": total["requests"], "cost_usd": total["cost"]}
        for total in ranked[:limit]
    ]


def top_spenders(
    split: _Split, *, user: AbstractBaseUser, limit: int = TOP_SPENDERS
) -> dict[str, list[dict[str, Any]]]:
    """The keys, users and teams that spent most in the window, ``limit`` of each: id,
    name (a key's prefix too), requests and spend. Calls made with no key or by no team
    are not a key's or a team's and are left out.

    One grouped query per source over the key, owner and team of each call (the rollups'
    dimensions), added up three ways here.
    """
    rows = _read(
        split,
        user=user,
        keys=("api_key_id", "owner_id", "team_id"),
        rollup={"requests": Sum("requests"), "cost_usd": Sum("cost_usd")},
        live={"requests": Count("id"), "cost_usd": Sum("cost_usd", default=Decimal(0))},
        merge=_add_spent,
    )
    keys, users, teams = (
        _top(rows, field, limit) for field in ("api_key_id", "owner_id", "team_id")
    )
    key_names = {
        pk: (name, prefix)
        for pk, name, prefix in api_key_list()
        .filter(pk__in=[row["id"] for row in keys])
        .values_list("pk", "name", "prefix")
    }
    usernames = dict(
        get_user_model()
        ._default_manager.filter(pk__in=[row["id"] for row in users])
        .values_list("pk", "username")
    )
    team_names = dict(
        Team.objects.filter(pk__in=[row["id"] for row in teams]).values_list("pk", "name")
    )
    for row in keys:
        row["name"], row["prefix"] = key_names.get(row["id"], (None, None))
    for row in users:
        row["name"] = usernames.get(row["id"])
    for row in teams:
        row["name"] = team_names.get(row["id"])
    return {"keys": keys, "users": users, "teams": teams}


# --- Tasks, workers, beat, deployments -------------------------------------------------


def task_counts(*, user: AbstractBaseUser, start: datetime) -> dict[str, int]:
    """Tasks queued and running now, and those created since ``start`` that failed
    (each count one partial or composite index)."""
    return {
        "queued": task_list(user=user, status=TaskStatus.QUEUED).count(),
        "running": task_list(user=user, status=TaskStatus.RUNNING).count(),
        "failed": task_list(user=user, status=TaskStatus.FAILED)
        .filter(created_at__gte=start)
        .count(),
    }


def beat_status(now: datetime) -> dict[str, Any]:
    """Beat's last heartbeat (sent every minute) and whether it is too old."""
    heartbeat = ServiceHeartbeat.objects.filter(name=BEAT).first()
    if heartbeat is None:
        return {"last_heartbeat_at": None, "age_seconds": None, "stale": True}
    age = (now - heartbeat.beat_at).total_seconds()
    return {
        "last_heartbeat_at": heartbeat.beat_at,
        "age_seconds": max(age, 0.0),
        "stale": age > BEAT_STALE_AFTER_SECONDS,
    }


def deployment_health(now: datetime) -> list[dict[str, Any]]:
    """Each deployment: its route and ``provider/model``, whether it is cooling down, its
    failed attempts and median latency over the last 15 minutes (as its admin page shows
    them: one Redis round trip, one query)."""
    deployments = list(
        Deployment.objects.select_related("route", "provider").order_by(
            "route__name", "priority", "provider__name", "model"
        )
    )
    breakers = cooldown.states([str(deployment.pk) for deployment in deployments])
    stats = live_stats(sorted({d.label for d in deployments}), since=now - LIVE_WINDOW)
    moment = now.timestamp()
    rows = []
    for deployment in deployments:
        breaker = breakers.get(str(deployment.pk), cooldown.State())
        stat = stats.get(deployment.label, LiveStats())
        cooling = breaker.cooling(moment)
        rows.append(
            {
                "id": deployment.pk,
                "route": deployment.route.name,
                "label": deployment.label,
                "enabled": deployment.enabled,
                "cooling": cooling,
                "cooling_until": (
                    datetime.fromtimestamp(breaker.until, tz=UTC) if cooling else None
                ),
                "failures": stat.failures,
                "p50_ms": stat.p50_ms,
            }
        )
    return rows


# --- The dashboard -----------------------------------------------------------------------


def dashboard(*, window: str | None, user: AbstractBaseUser) -> dict[str, Any]:
    """Everything the admin index shows for ``window`` (``1h``, ``24h``, ``7d``, ``30d``;
    anything else: 24 h), as ``user`` may see it."""
    chosen = window_get(window)
    # The broker is asked in the background while the database answers. Workers online
    # is the health check's count, as on /metrics: cached for every process, so the
    # page waits for a ping (a second or so) only when none is cached.
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(contextvars.copy_context().run, celery_overview)
        now = timezone.now()
        start = chosen.start(now)
        split = _Split.of(chosen, start, now)
        data = {
            "window": chosen,
            "windows": list(WINDOWS.values()),
            "start": start,
            "end": now,
            "usage": usage_overview(split, user=user, window=chosen),
            "top": top_spenders(split, user=user),
            "tasks": task_counts(user=user, start=start),
            "beat": beat_status(now),
            "deployments": deployment_health(now),
            "deployment_window": LIVE_WINDOW,
        }
        broker = asked.result()
    return {**data, "workers": broker["workers"], "queues": broker["queues"]}
