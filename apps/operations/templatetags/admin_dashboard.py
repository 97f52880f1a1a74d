"""The admin index dashboard: the last 24 hours of AI usage, the queues and the workers."""

import contextvars
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone

from apps.ai_interactions.usage.selectors import HOUR, USAGE_TOTALS, hour_start, interaction_usage
from apps.health.selectors import celery_overview

register = template.Library()

HOURS = 24
CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 720, 120, 2


def _changelist(name: str, **filters: Any) -> str:
    return f"{reverse(f'admin:{name}_changelist')}?{urlencode(filters)}"


def _chart(per_hour: list[dict[str, Any]], start: datetime) -> dict[str, Any]:
    """Bars of requests (and failures) per hour, laid out for an inline SVG."""
    counts = {row["hour"]: row for row in per_hour}
    width = CHART_WIDTH / HOURS
    hours = [start + index * HOUR for index in range(HOURS)]
    peak = max((counts[hour]["requests"] for hour in hours if hour in counts), default=0)
    bars = []
    for index, hour in enumerate(hours):
        row = counts.get(hour, {"requests": 0, "failed": 0})
        height = CHART_HEIGHT * row["requests"] / peak if peak else 0
        failed = CHART_HEIGHT * row["failed"] / peak if peak else 0
        bars.append(
            {
                "x": round(index * width + BAR_GAP / 2, 1),
                "width": round(width - BAR_GAP, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "height": round(height, 1),
                "failed_y": round(CHART_HEIGHT - failed, 1),
                "failed_height": round(failed, 1),
                "hour": hour,
                "requests": row["requests"],
                "failed": row["failed"],
            }
        )
    return {"bars": bars, "peak": peak, "width": CHART_WIDTH, "height": CHART_HEIGHT}


@register.inclusion_tag("admin/operations_dashboard.html", takes_context=True)
def operations_dashboard(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    if not request.user.has_perm("ai_interactions.view_aiinteraction"):
        return {"shown": False}
    # The broker is asked in the background while the database answers. Workers
    # online is the health check's count, as on /metrics: cached for every process,
    # so the page waits for a ping (a second or so) only when none is cached.
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(contextvars.copy_context().run, celery_overview)
        now = timezone.now()
        start = hour_start(now) - (HOURS - 1) * HOUR
        per_model = interaction_usage(user=request.user, group_by="model", start=start, end=now)
        per_hour = interaction_usage(user=request.user, group_by="hour", start=start, end=now)
        broker = asked.result()
    totals = {name: sum(row[name] for row in per_model) for name in USAGE_TOTALS}
    requests = totals["requests"]
    since = start.isoformat()
    return {
        "shown": True,
        "start": start,
        "totals": totals,
        "cache_hit_percent": round(100 * totals["cached"] / requests, 1) if requests else None,
        "per_model": per_model,
        "chart": _chart(per_hour, start),
        "workers": broker["workers"],
        "queues": broker["queues"],
        "links": {
            "interactions": _changelist("ai_interactions_aiinteraction", created_at__gte=since),
            "failed_interactions": _changelist(
                "ai_interactions_aiinteraction", status__exact="failed", created_at__gte=since
            ),
            "cached_interactions": _changelist(
                "ai_interactions_aiinteraction", cached__exact=1, created_at__gte=since
            ),
            "failed_tasks": _changelist(
                "tasks_task", status__exact="failed", created_at__gte=since
            ),
            "queued_tasks": _changelist("tasks_task", status__exact="queued"),
            "running_tasks": _changelist("tasks_task", status__exact="running"),
        },
    }
