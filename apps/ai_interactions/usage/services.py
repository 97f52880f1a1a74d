"""Writes of AI usage: roll interactions up into ``HourlyUsage`` and ``HourlyTagUsage``."""

from datetime import UTC, datetime

from django.db import connection, transaction
from django.db.models import Min, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.ai_interactions.models import (
    AIInteraction,
    HourlyTagUsage,
    HourlyUsage,
    UsageRollupState,
    UsageSums,
)
from apps.ai_interactions.usage.selectors import (
    HOUR,
    ROLLUP_KEYS,
    ROLLUP_RECHECK,
    SUMMED_FIELDS,
    InteractionTag,
    changed_hours,
    each_tag,
    hour_start,
    usage_aggregates,
    usage_summed,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        elif low < high:
            merged.append((low, high))
    return merged


def _upsert(rollup: type[UsageSums], groups: QuerySet, keys: list[str], stamp: datetime) -> int:
    """Upsert the rows of ``rollup`` that ``groups`` (grouped by ``keys``) sum to, in SQL."""
    select, params = groups.query.sql_with_params()
    quote = connection.ops.quote_name
    values = [*usage_aggregates(), "computed_at"]
    columns = ", ".join(quote(name) for name in keys + values)
    updates = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in values)
    # Only quoted column names are formatted in; every value is a bound parameter.
    selected = ", ".join(quote(name) for name in keys + values[:-1])
    conflict = ", ".join(quote(name) for name in keys)
    insert = f"INSERT INTO {quote(rollup._meta.db_table)} ({columns}) "
    sql = (
        f"{insert}SELECT {selected}, %s FROM ({select}) AS usage_groups WHERE true "  # noqa: S608
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(stamp), *params])
        return cursor.rowcount


def _roll_up(low: datetime, high: datetime, stamp: datetime) -> int:
    """Upsert the rollup rows of the hours in [low, high); drop groups now empty."""
    rows = (
        AIInteraction.objects.filter(created_at__gte=low, created_at__lt=high)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .order_by()
    )
    keys = list(ROLLUP_KEYS)
    aggregates = usage_aggregates()
    written = _upsert(HourlyUsage, rows.values(*keys).annotate(**aggregates), keys, stamp)
    if connection.vendor == "postgresql":
        per_tag = rows.annotate(tag=InteractionTag()).values(*keys, "tag").annotate(**aggregates)
        written += _upsert(HourlyTagUsage, per_tag, [*keys, "tag"], stamp)
    else:
        # SQLite cannot expand a JSON list within a grouped query: sum per tag in Python.
        tagged = each_tag(rows.values(*keys, "tags", *SUMMED_FIELDS).iterator())
        per_tag_rows = [
            HourlyTagUsage(**group, computed_at=stamp)
            for group in usage_summed(tagged, [*keys, "tag"])
        ]
        HourlyTagUsage.objects.bulk_create(
            per_tag_rows,
            update_conflicts=True,
            unique_fields=[*keys, "tag"],
            update_fields=[*aggregates, "computed_at"],
        )
        written += len(per_tag_rows)
    for rollup in (HourlyUsage, HourlyTagUsage):
        stale = rollup.objects.filter(hour__gte=low, hour__lt=high).exclude(computed_at=stamp)
        stale.delete()
    return written


def usage_rollup(*, now: datetime | None = None, since: datetime | None = None) -> int:
    """Roll interactions up into ``HourlyUsage`` and ``HourlyTagUsage`` for closed hours.

    Returns the rollup rows written.

    Recomputes the hours closed since the last run, the hours holding rows
    saved since shortly before it (late commits, async calls finishing, retries),
    and every hour from ``since`` when given. Idempotent: running it again
    writes the same rows.
    """
    now = now or timezone.now()
    closed_before = hour_start(now)
    UsageRollupState.objects.get_or_create(pk=1)
    with transaction.atomic():
        state = UsageRollupState.objects.select_for_update().get(pk=1)
        ranges = []
        if state.rolled_up_to is None:
            earliest = AIInteraction.objects.aggregate(at=Min("created_at"))["at"]
            ranges.append((hour_start(earliest or now), closed_before))
        else:
            ranges.append((state.rolled_up_to, closed_before))
            changed = changed_hours(
                since=state.ran_at - ROLLUP_RECHECK, start=EPOCH, end=state.rolled_up_to
            )
            ranges += [(hour, hour + HOUR) for hour in changed]
        if since is not None:
            ranges.append((hour_start(since), closed_before))
        stamp = timezone.now()
        written = sum(_roll_up(low, high, stamp) for low, high in _merged(ranges))
        state.rolled_up_to = max(closed_before, state.rolled_up_to or closed_before)
        state.ran_at = now
        state.save()
    if written and connection.vendor == "postgresql":
        # Fresh statistics keep usage reads on the hour index and a hash aggregate.
        with connection.cursor() as cursor:
            for rollup in (HourlyUsage, HourlyTagUsage):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(rollup._meta.db_table)}")
    return written
