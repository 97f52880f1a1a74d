"""Usage totals stay exact across the hourly rollup: closed hours from rollups, the rest live."""

import itertools
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction, HourlyUsage
from apps.ai_interactions.usage.services import usage_rollup
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/ai/usage/"
TOTALS = ("requests", "succeeded", "failed", "cached", "input_tokens", "output_tokens")
OUTCOMES = itertools.cycle(
    [("succeeded", False), ("succeeded", True), ("failed", False), ("succeeded", False)]
)


def record(
    owner, *, at, model="echo-1", saved_at=None, latency_ms=120.0, number=0, deployment=None
):
    """An interaction created at ``at`` and last saved at ``saved_at`` (default: ``at``)."""
    status, cached = next(OUTCOMES)
    row = AIInteraction.objects.create(
        owner=owner,
        status=status,
        mode="sync",
        provider="openai" if model != "echo-1" else "echo",
        model=model,
        deployment=deployment if deployment is not None else f"primary/{model}",
        messages=[{"role": "user", "content": f"question {number}"}],
        prompt=f"question {number}",
        prompt_hash=f"{number:064d}",
        input_tokens=10 + number,
        output_tokens=0 if status == "failed" else 20 + 2 * number,
        cost_usd=Decimal(0) if cached else Decimal("0.00012345") * (number + 1),
        latency_ms=latency_ms,
        cached=cached,
    )
    AIInteraction.objects.filter(pk=row.pk).update(created_at=at, updated_at=saved_at or at)
    return row


def expected(rows, key):
    """The totals a direct aggregate over ``rows`` gives, per ``key(row)``."""
    groups = {}
    for row in rows:
        group = groups.setdefault(key(row), dict.fromkeys(TOTALS, 0) | {"cost": Decimal(0)})
        group["requests"] += 1
        group["succeeded"] += row.status == "succeeded"
        group["failed"] += row.status == "failed"
        group["cached"] += row.cached
        group["input_tokens"] += row.input_tokens
        group["output_tokens"] += row.output_tokens
        group["cost"] += row.cost_usd
        group.setdefault("latencies", []).append(row.latency_ms)
    return groups


def answered(client, group_by, **query):
    response = client.get(USAGE, {"group_by": group_by, **query})
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    key = {"day": ("day",), "deployment": ("model", "deployment")}.get(
        group_by, ("provider", "model")
    )
    return {tuple(row[name] for name in key): row for row in results}


def assert_exact(client, owner_rows):
    by_model = answered(client, "model")
    want = expected(owner_rows, lambda row: (row.provider, row.model))
    assert set(by_model) == set(want)
    for key, group in want.items():
        row = by_model[key]
        assert {name: row[name] for name in TOTALS} == {name: group[name] for name in TOTALS}
        assert Decimal(row["cost_usd"]) == group["cost"]
        assert row["latency_ms_mean"] == round(statistics.fmean(group["latencies"]), 2)
    by_day = answered(client, "day")
    want = expected(owner_rows, lambda row: (row.created_at.date().isoformat(),))
    assert {key: by_day[key]["requests"] for key in by_day} == {
        key: group["requests"] for key, group in want.items()
    }


@pytest.fixture
def history(user):
    """Rows of ``user`` and of someone else over the last three days, current hour included."""
    other = UserFactory()
    now = timezone.now()
    number = 0
    for hours_ago in (0, 1, 2, 5, 30, 49, 70):
        for owner, model in [(user, "echo-1"), (user, "gpt-test"), (other, "echo-1")]:
            number += 1
            at = now - timedelta(hours=hours_ago, minutes=number % 50)
            record(owner, at=at, model=model, latency_ms=10.0 * number, number=number)
    return other


def owned(owner):
    return list(AIInteraction.objects.filter(owner=owner))


def test_usage_is_exact_before_and_after_rollups_and_with_late_rows(api_client, user, history):
    assert_exact(api_client, owned(user))

    assert usage_rollup() > 0
    assert HourlyUsage.objects.filter(owner=user).exists()
    assert_exact(api_client, owned(user))

    # A row of a closed, rolled-up hour that committed late: counted at once, rolled up next run.
    now = timezone.now()
    neighbour = AIInteraction.objects.get(
        owner=user,
        model="gpt-test",
        created_at__range=(now - timedelta(hours=32), now - timedelta(hours=29)),
    )
    closed_hour = neighbour.created_at
    late = record(user, at=closed_hour, model="gpt-test", saved_at=timezone.now(), number=99)
    assert_exact(api_client, owned(user))
    usage_rollup()
    hour = closed_hour.replace(minute=0, second=0, microsecond=0)
    rolled = HourlyUsage.objects.get(owner=user, model="gpt-test", hour=hour)
    in_hour = AIInteraction.objects.filter(
        owner=user, model="gpt-test", created_at__gte=hour, created_at__lt=hour + timedelta(hours=1)
    )
    assert rolled.requests == in_hour.count() >= 2
    assert late.pk in set(in_hour.values_list("pk", flat=True))
    assert_exact(api_client, owned(user))


def test_a_finished_async_call_updates_its_rolled_up_hour(api_client, user, history):
    usage_rollup()
    row = AIInteraction.objects.filter(owner=user, status="failed").earliest("created_at")
    row.status = "succeeded"
    row.output_tokens = 500
    row.save()  # saved now: its hour is read live until the next rollup
    assert_exact(api_client, owned(user))
    usage_rollup()
    assert_exact(api_client, owned(user))


def test_usage_is_per_owner_and_staff_see_everyone(api_client, staff_client, user, history):
    usage_rollup()
    assert_exact(api_client, owned(user))
    staff = answered(staff_client, "model")
    want = expected(AIInteraction.objects.all(), lambda row: (row.provider, row.model))
    assert {key: row["requests"] for key, row in staff.items()} == {
        key: group["requests"] for key, group in want.items()
    }
    assert (
        staff[("echo", "echo-1")]["requests"]
        > answered(api_client, "model")[("echo", "echo-1")]["requests"]
    )


def test_a_range_with_partial_hours_counts_only_rows_inside_it(api_client, user, history):
    usage_rollup()
    start = timezone.now() - timedelta(hours=49, minutes=30)
    end = timezone.now() - timedelta(hours=1, minutes=15)
    inside = [row for row in owned(user) if start <= row.created_at < end]
    query = {"from": start.isoformat(), "to": end.isoformat()}
    results = answered(api_client, "model", **query)
    want = expected(inside, lambda row: (row.provider, row.model))
    assert {key: row["requests"] for key, row in results.items()} == {
        key: group["requests"] for key, group in want.items()
    }


def test_rerunning_the_rollup_writes_the_same_rows(user, history):
    now = timezone.now()
    usage_rollup(now=now)
    first = list(HourlyUsage.objects.order_by("hour", "model", "owner").values())
    usage_rollup(now=now, since=now - timedelta(days=5))
    again = list(HourlyUsage.objects.order_by("hour", "model", "owner").values())
    ignore = {"id", "computed_at"}
    assert [{k: v for k, v in row.items() if k not in ignore} for row in again] == [
        {k: v for k, v in row.items() if k not in ignore} for row in first
    ]


def test_p95_from_rollups_is_an_estimate_within_its_bucket(api_client, user):
    now = timezone.now()
    latencies = [float(ms) for ms in range(100, 2100, 20)]  # 100 rows, 100..2080 ms
    for number, latency in enumerate(latencies):
        record(user, at=now - timedelta(hours=3, seconds=number), latency_ms=latency, number=number)
    usage_rollup()
    [row] = answered(api_client, "model").values()
    exact = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
    assert row["latency_ms_mean"] == round(statistics.fmean(latencies), 2)
    assert 1000 <= row["latency_ms_p95"] <= 2500  # the bucket holding the exact value
    assert abs(row["latency_ms_p95"] - exact) < 50


def test_rolled_up_hours_keep_counting_deleted_interactions(api_client, user, history):
    usage_rollup()
    before = answered(api_client, "model")[("echo", "echo-1")]["requests"]
    old = AIInteraction.objects.filter(owner=user, model="echo-1").earliest("created_at")
    assert api_client.delete(f"/api/v1/ai/interactions/{old.pk}/").status_code == 204
    assert answered(api_client, "model")[("echo", "echo-1")]["requests"] == before


def test_usage_per_deployment_sums_to_the_rows_across_rollups(api_client, user, history):
    now = timezone.now()
    for number, hours_ago in enumerate((0, 3, 26)):  # a fallback answered some calls
        at = now - timedelta(hours=hours_ago, minutes=5)
        record(user, at=at, model="gpt-test", deployment="backup/claude", number=200 + number)

    for rolled_up in (False, True):
        if rolled_up:
            usage_rollup()
        by_deployment = answered(api_client, "deployment")
        want = expected(owned(user), lambda row: (row.model, row.deployment))
        assert set(by_deployment) == set(want) >= {("gpt-test", "backup/claude")}
        for key, group in want.items():
            row = by_deployment[key]
            assert (row["requests"], Decimal(row["cost_usd"])) == (
                group["requests"],
                group["cost"],
            )
