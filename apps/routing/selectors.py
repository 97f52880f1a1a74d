"""Reads of routing's live state: a deployment's breaker and its recent calls."""

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction
from apps.routing import cooldown
from apps.routing.models import Deployment

# The window of a deployment's failures and p50 latency.
LIVE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class LiveStats:
    """A deployment's calls over the last 15 minutes (from the recorded attempts)."""

    failures: int = 0
    p50_ms: float | None = None


def live_stats(labels: list[str], *, since: datetime) -> dict[str, LiveStats]:
    """Failed attempts and the median latency of successful ones, per deployment label
    (``provider/model``), over the interactions created since ``since``: one query."""
    if not labels:
        return {}
    if connection.vendor == "postgresql":
        return _live_stats_sql(labels, since)
    return _live_stats_python(labels, since)


def _live_stats_sql(labels: list[str], since: datetime) -> dict[str, LiveStats]:
    table = connection.ops.quote_name(AIInteraction._meta.db_table)
    # The table name is the model's, quoted; the values are parameters.
    query = (
        "SELECT attempt->>'deployment',"  # noqa: S608
        " count(*) FILTER (WHERE attempt->>'outcome' <> 'ok'),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (attempt->>'latency_ms')::float)"
        " FILTER (WHERE attempt->>'outcome' = 'ok')"
        f" FROM {table} AS interaction"
        " CROSS JOIN LATERAL jsonb_array_elements("
        " CASE WHEN jsonb_typeof(interaction.attempts) = 'array'"
        " THEN interaction.attempts ELSE '[]'::jsonb END) AS attempt"
        " WHERE interaction.created_at >= %s AND attempt->>'deployment' = ANY(%s)"
        " GROUP BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [since, labels])
        rows = cursor.fetchall()
    return {label: LiveStats(failures=failures, p50_ms=p50) for label, failures, p50 in rows}


def _live_stats_python(labels: list[str], since: datetime) -> dict[str, LiveStats]:
    wanted = set(labels)
    failures: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    rows = AIInteraction.objects.filter(created_at__gte=since).values_list("attempts", flat=True)
    for attempts in rows.iterator(chunk_size=2000):
        for attempt in attempts if isinstance(attempts, list) else ():
            label = attempt.get("deployment") if isinstance(attempt, dict) else None
            if label not in wanted:
                continue
            if attempt.get("outcome") == "ok":
                latency = attempt.get("latency_ms")
                if isinstance(latency, int | float):
                    latencies.setdefault(label, []).append(float(latency))
            else:
                failures[label] = failures.get(label, 0) + 1
    return {
        label: LiveStats(
            failures=failures.get(label, 0),
            p50_ms=statistics.median(latencies[label]) if label in latencies else None,
        )
        for label in wanted
        if label in failures or label in latencies
    }


def attach_live_state(deployments: list[Deployment]) -> None:
    """Read the live state of ``deployments`` (one Redis round trip, one query) and keep
    it on each row, for the columns of a changelist page."""
    breakers = cooldown.states([str(d.pk) for d in deployments])
    stats = live_stats(sorted({d.label for d in deployments}), since=timezone.now() - LIVE_WINDOW)
    for deployment in deployments:
        deployment._breaker = breakers.get(str(deployment.pk), cooldown.State())
        deployment._stats = stats.get(deployment.label, LiveStats())
