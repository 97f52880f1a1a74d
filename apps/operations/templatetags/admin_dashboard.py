"""The admin index dashboard: reads :func:`apps.operations.selectors.dashboard` and lays it
out (tiles, links to the lists they count, inline SVG charts)."""

import math
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import template
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.operations.selectors import DAY, HOUR, Window, dashboard
from contextos.admin import money

register = template.Library()

INTERACTIONS, TASKS = "ai_interactions_aiinteraction", "tasks_task"
_USERS = f"{get_user_model()._meta.app_label}_{get_user_model()._meta.model_name}"
# Chart geometry, in SVG user units (about pixels at 1400 px: two charts side by side).
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 46
# Models with a colour of their own in the spend chart; the rest are "other".
SERIES = 7
X_LABELS = 8


def changelist(name: str, **filters: Any) -> str:
    """The admin list of ``name`` (``app_model``) with ``filters`` as its query string."""
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _since(moment: datetime) -> str:
    return moment.isoformat()


# --- Numbers for people ------------------------------------------------------------------


@register.filter
def usd(amount: Decimal | float | int | None) -> str:
    """Dollars as every admin page shows them (``contextos.admin.money``)."""
    return money(amount)


@register.filter
def count(value: int | None) -> str:
    """A count with thousands separated: ``12,345``."""
    return "—" if value is None else f"{value:,}"


@register.filter
def milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{100 * ratio:.1f}%"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


# --- Charts ------------------------------------------------------------------------------


def _scale(peak: float, *, whole: bool) -> list[float]:
    """Round tick values from 0 to at least ``peak`` (4 or 5 of them); whole numbers for
    counts."""
    if peak <= 0:
        return [0, 1]
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = 10 * magnitude
    for factor in (1, 2, 2.5, 5):
        if whole and factor == 2.5 and magnitude < 10:
            continue
        if factor * magnitude * 4 >= peak:
            step = factor * magnitude
            break
    if whole:
        step = max(1, round(step))
    return [step * index for index in range(math.ceil(peak / step - 1e-9) + 1)]


def _bucket_text(window: Window, start: datetime) -> tuple[str, str]:
    """A bucket's short axis label and its full description (for tooltips)."""
    if window.bucket >= DAY:
        return start.strftime("%b %d"), start.strftime("%Y-%m-%d (UTC)")
    end = start + window.bucket
    return start.strftime("%H:%M"), f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC"


def _frame(
    window: Window, buckets: list[dict[str, Any]], ticks: list[float], label: Any
) -> dict[str, Any]:
    """The axes of a chart: the count (or $) scale on the left, the time along the bottom."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = ticks[-1]
    step = plot_width / len(buckets)
    every = math.ceil(len(buckets) / X_LABELS)
    x_ticks = [
        {
            "x": round(LEFT + (index + 0.5) * step, 1),
            "label": _bucket_text(window, bucket["start"])[0],
        }
        for index, bucket in enumerate(buckets)
        if index % every == 0
    ]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": TOP + plot_height,
        "middle": TOP + plot_height / 2,
        "tick_label_y": TOP + plot_height + 16,
        "axis_label_y": HEIGHT - 6,
        "x_ticks": x_ticks,
        "y_ticks": [
            {"y": round(TOP + plot_height * (1 - tick / top), 1), "label": label(tick)}
            for tick in ticks
        ],
        "step": step,
        "bar_width": round(max(step * 0.72, 1.0), 1),
        "plot_height": plot_height,
        "peak": top,
    }


def _bar_x(frame: dict[str, Any], index: int) -> float:
    return round(LEFT + index * frame["step"] + (frame["step"] - frame["bar_width"]) / 2, 1)


def _y(frame: dict[str, Any], value: float) -> float:
    return round(frame["bottom"] - frame["plot_height"] * value / frame["peak"], 1)


def requests_chart(window: Window, buckets: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests per bucket, the failed part of each bar in the error colour."""
    ticks = _scale(max(bucket["requests"] for bucket in buckets), whole=True)
    frame = _frame(window, buckets, ticks, lambda tick: f"{int(tick):,}")
    bars = []
    for index, bucket in enumerate(buckets):
        span = {"created_at__gte": _since(bucket["start"]), "created_at__lt": _since(bucket["end"])}
        bars.append(
            {
                "x": _bar_x(frame, index),
                "y": _y(frame, bucket["requests"]),
                "height": round(frame["bottom"] - _y(frame, bucket["requests"]), 1),
                "failed_y": _y(frame, bucket["failed"]),
                "failed_height": round(frame["bottom"] - _y(frame, bucket["failed"]), 1),
                "title": (
                    f"{_bucket_text(window, bucket['start'])[1]}: "
                    f"{bucket['requests']:,} requests, {bucket['failed']:,} failed"
                ),
                "href": changelist(INTERACTIONS, **span),
                "failed_href": changelist(INTERACTIONS, status__exact="failed", **span),
            }
        )
    return {**frame, "bars": bars}


def spend_chart(
    window: Window, buckets: list[dict[str, Any]], models: list[dict[str, Any]]
) -> dict[str, Any]:
    """Spend per bucket, stacked by model (the costliest ``SERIES`` in colours of their own,
    the rest as one "other" series)."""
    costly = [row["model"] for row in models if row["cost_usd"] > 0]
    named = costly if len(costly) <= SERIES + 1 else costly[:SERIES]
    others = costly[len(named) :]
    series = [{"name": model, "index": index} for index, model in enumerate(named)]
    if others:
        series.append({"name": f"other ({len(others)} models)", "index": SERIES})
    ticks = _scale(float(max(bucket["cost_usd"] for bucket in buckets)), whole=False)
    frame = _frame(window, buckets, ticks, lambda tick: usd(Decimal(str(round(tick, 10)))))
    bars = []
    for index, bucket in enumerate(buckets):
        span = {"created_at__gte": _since(bucket["start"]), "created_at__lt": _since(bucket["end"])}
        when = _bucket_text(window, bucket["start"])[1]
        amounts = [(model, bucket["cost_by_model"].get(model, Decimal(0))) for model in named]
        other = sum(
            (bucket["cost_by_model"].get(model, Decimal(0)) for model in others), Decimal(0)
        )
        segments, below = [], Decimal(0)
        for position, (model, amount) in enumerate([*amounts, (None, other)]):
            if amount <= 0:
                continue
            y_top = _y(frame, float(below + amount))
            filters = {**span, "model": model} if model is not None else span
            segments.append(
                {
                    "series": position if model is not None else SERIES,
                    "y": y_top,
                    "height": round(_y(frame, float(below)) - y_top, 1),
                    "title": (
                        f"{when}: {model or 'other models'} {usd(amount)} "
                        f"(of {usd(bucket['cost_usd'])})"
                    ),
                    "href": changelist(INTERACTIONS, **filters),
                }
            )
            below += amount
        bars.append({"x": _bar_x(frame, index), "segments": segments})
    return {**frame, "bars": bars, "series": series}


# --- The dashboard -----------------------------------------------------------------------


def _window_links(request: Any, current: Window, windows: list[Window]) -> list[dict[str, Any]]:
    return [
        {
            "name": window.name,
            "label": window.label,
            "href": f"{request.path}?{urlencode({'window': window.name})}",
            "current": window.name == current.name,
        }
        for window in windows
    ]


def _spender_rows(top: dict[str, list[dict[str, Any]]], since: str) -> dict[str, list[dict]]:
    """Each spender with its admin page and the list of its calls in the window."""
    parameters = {
        "keys": "api_key__id__exact",
        "users": "owner__id__exact",
        "teams": "team__id__exact",
    }
    pages = {"keys": "accounts_apikey", "users": _USERS, "teams": "accounts_team"}
    arranged = {}
    for kind, rows in top.items():
        arranged[kind] = [
            {
                **row,
                "page": (
                    reverse(f"admin:{pages[kind]}_change", args=[row["id"]])
                    if row["id"] is not None
                    else None
                ),
                "href": changelist(
                    INTERACTIONS, **{parameters[kind]: row["id"], "created_at__gte": since}
                ),
            }
            for row in rows
        ]
    return arranged


@register.inclusion_tag("admin/operations_dashboard.html", takes_context=True)
def operations_dashboard(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    if not request.user.has_perm("ai_interactions.view_aiinteraction"):
        return {"shown": False}
    data = dashboard(window=request.GET.get("window"), user=request.user)
    window, usage, tasks = data["window"], data["usage"], data["tasks"]
    totals = usage["totals"]
    since = _since(data["start"])
    in_window = changelist(INTERACTIONS, created_at__gte=since)
    beat = data["beat"]
    return {
        "shown": True,
        "window": window,
        "windows": _window_links(request, window, data["windows"]),
        "start": data["start"],
        "bucket_text": "5 minutes"
        if window.bucket < HOUR
        else ("hour" if window.bucket < DAY else "day"),
        "totals": totals,
        "cache_hit": _percent(totals["cache_hit_ratio"]),
        "failure_share": _percent(
            totals["failed"] / totals["requests"] if totals["requests"] else None
        ),
        "models": [
            {
                **row,
                "cache_hit": _percent(row["cache_hit_ratio"]),
                "href": changelist(INTERACTIONS, model=row["model"], created_at__gte=since),
                "failed_href": changelist(
                    INTERACTIONS, model=row["model"], status__exact="failed", created_at__gte=since
                ),
                "cached_href": changelist(
                    INTERACTIONS, model=row["model"], cached__exact=1, created_at__gte=since
                ),
            }
            for row in usage["models"]
        ],
        "requests_chart": requests_chart(window, usage["buckets"]),
        "spend_chart": spend_chart(window, usage["buckets"], usage["models"]),
        "tasks": tasks,
        "top": _spender_rows(data["top"], since),
        "workers": data["workers"],
        "queues": data["queues"],
        "beat": {**beat, "ago": _ago(beat["age_seconds"])},
        "deployments": [
            {**row, "href": changelist("routing_deployment", id__exact=row["id"])}
            for row in data["deployments"]
        ],
        "deployment_minutes": int(data["deployment_window"] / timedelta(minutes=1)),
        "links": {
            "interactions": in_window,
            "failed_interactions": changelist(
                INTERACTIONS, status__exact="failed", created_at__gte=since
            ),
            "cached_interactions": changelist(INTERACTIONS, cached__exact=1, created_at__gte=since),
            "queued_tasks": changelist(TASKS, status__exact="queued"),
            "running_tasks": changelist(TASKS, status__exact="running"),
            "failed_tasks": changelist(TASKS, status__exact="failed", created_at__gte=since),
            "deployments": changelist("routing_deployment"),
            "keys": changelist("accounts_apikey"),
            "users": changelist(_USERS),
            "teams": changelist("accounts_team"),
            "beat": changelist("django_celery_beat_periodictask", task="health.beat_heartbeat"),
        },
    }
