"""Usage per key, user, team and tag, and filtered by them: exact across the hourly rollup."""

import json
import statistics
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.accounts.models import Team, TeamMembership
from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction, HourlyTagUsage, HourlyUsage
from apps.ai_interactions.usage.selectors import interaction_usage
from apps.ai_interactions.usage.services import usage_rollup
from tests.ai.test_usage import TOTALS, USAGE, expected, record
from tests.factories import UserFactory
from tests.integration.conftest import ROOT, process_env

pytestmark = pytest.mark.django_db

# How each grouping names its groups in a result.
NAMED_BY = {"key": "key_id", "team": "team_id", "user": "user", "tag": "tag"}


def attributed(owner, *, at, key=None, tags=(), model="echo-1", number=0, saved_at=None):
    """An interaction made with ``key`` (and so for its team), tagged ``tags``."""
    row = record(
        owner, at=at, model=model, number=number, saved_at=saved_at, latency_ms=7.0 * number
    )
    AIInteraction.objects.filter(pk=row.pk).update(
        api_key=key, team_id=key.team_id if key else None, tags=list(tags)
    )
    return row


def rows_of(**filters):
    return list(AIInteraction.objects.filter(**filters).select_related("owner"))


def group_of(row, group_by):
    """The groups ``row`` counts in: one, or one per tag."""
    if group_by == "key":
        return [str(row.api_key_id) if row.api_key_id else None]
    if group_by == "team":
        return [str(row.team_id) if row.team_id else None]
    if group_by == "user":
        return [row.owner.username]
    return list(row.tags)


def want(rows, group_by):
    groups = {}
    for group in {group for row in rows for group in group_of(row, group_by)}:
        members = [row for row in rows if group in group_of(row, group_by)]
        groups |= expected(members, lambda row, group=group: group)
    return groups


def usage(client, group_by, **query):
    response = client.get(USAGE, {"group_by": group_by, **query})
    assert response.status_code == 200, response.json()
    assert response.json()["group_by"] == group_by
    return {row[NAMED_BY[group_by]]: row for row in response.json()["results"]}


def assert_sums(client, rows, group_by, **query):
    results = usage(client, group_by, **query)
    groups = want(rows, group_by)
    assert set(results) == set(groups)
    for name, group in groups.items():
        row = results[name]
        assert {total: row[total] for total in TOTALS} == {total: group[total] for total in TOTALS}
        assert Decimal(row["cost_usd"]) == group["cost"]
        assert row["latency_ms_mean"] == round(statistics.fmean(group["latencies"]), 2)
    return results


@pytest.fixture
def teams(user):
    research, ops = Team.objects.create(name="research"), Team.objects.create(name="ops")
    TeamMembership.objects.create(team=research, user=user)
    return research, ops


@pytest.fixture
def keys(user, teams):
    """``user``'s keys (one of team research, one of none) and another owner's (team ops)."""
    research, ops = teams
    other = UserFactory(username="someone-else")
    TeamMembership.objects.create(team=ops, user=other)
    research_key, _ = api_key_create(user=user, name="research key", team=research)
    batch_key, _ = api_key_create(user=user, name="batch key")
    other_key, _ = api_key_create(user=other, name="other key", team=ops)
    return research_key, batch_key, other_key


@pytest.fixture
def history(user, keys):
    """Rows over three days, current hour included: by key, team and tags, and untagged."""
    research_key, batch_key, other_key = keys
    now = timezone.now()
    number = 0
    for hours_ago in (0, 1, 3, 27, 50):
        for owner, key, tags, model in [
            (user, research_key, ("alpha", "beta"), "echo-1"),
            (user, research_key, ("beta",), "gpt-test"),
            (user, batch_key, ("alpha",), "echo-1"),
            (user, None, (), "gpt-test"),
            (other_key.user, other_key, ("alpha",), "echo-1"),
        ]:
            number += 1
            at = now - timedelta(hours=hours_ago, minutes=number % 50)
            attributed(owner, at=at, key=key, tags=tags, model=model, number=number)
    return keys


def test_usage_by_key_team_user_and_tag_sums_to_the_rows_across_rollups(
    api_client, staff_client, user, history
):
    research_key, batch_key, _ = history
    for group_by in NAMED_BY:
        assert_sums(api_client, rows_of(owner=user), group_by)
        assert_sums(staff_client, rows_of(), group_by)

    assert usage_rollup() > 0
    rolled = HourlyUsage.objects.filter(api_key_id=research_key.pk, team_id=research_key.team_id)
    assert rolled.exists()
    assert HourlyTagUsage.objects.filter(
        owner=user, tag="beta", api_key_id=research_key.pk
    ).exists()
    for group_by in NAMED_BY:
        assert_sums(api_client, rows_of(owner=user), group_by)
        assert_sums(staff_client, rows_of(), group_by)

    # A row of a closed, rolled-up hour that committed late: counted at once, rolled up next run.
    closed_hour = AIInteraction.objects.filter(owner=user).earliest("created_at").created_at
    attributed(user, at=closed_hour, key=batch_key, tags=("beta", "gamma"), saved_at=timezone.now())
    for rolled_up in (False, True):
        if rolled_up:
            usage_rollup()
            hour = closed_hour.replace(minute=0, second=0, microsecond=0)
            assert HourlyTagUsage.objects.get(owner=user, tag="gamma", hour=hour).requests == 1
        for group_by in NAMED_BY:
            assert_sums(api_client, rows_of(owner=user), group_by)
            assert_sums(staff_client, rows_of(), group_by)
        assert usage(api_client, "tag")["gamma"]["requests"] == 1

    by_key = usage(api_client, "key")
    assert by_key[str(research_key.pk)]["key_name"] == "research key"
    assert by_key[str(batch_key.pk)]["key_name"] == "batch key"
    assert by_key[None]["key_name"] is None  # calls made without a key (session, tests)
    by_team = usage(api_client, "team")
    assert by_team[str(research_key.team_id)]["team_name"] == "research"
    assert by_team[None]["team_name"] is None
    assert set(usage(api_client, "user")) == {user.username}
    assert set(usage(staff_client, "user")) == {user.username, "someone-else"}
    # Each result names its group only by its own grouping's fields.
    assert set(by_key[None]) == {"key_id", "key_name", *TOTALS, "cost_usd"} | {
        "latency_ms_mean",
        "latency_ms_p95",
    }


def test_filters_narrow_the_totals(api_client, staff_client, user, history, teams):
    research_key, batch_key, other_key = history
    research, ops = teams
    usage_rollup()
    now = timezone.now()
    attributed(user, at=now - timedelta(minutes=1), key=research_key, tags=("beta",), number=400)
    mine = rows_of(owner=user)
    cases = [
        ({"key": research_key.pk}, lambda row: row.api_key_id == research_key.pk),
        ({"team": research.pk}, lambda row: row.team_id == research.pk),
        ({"tag": "beta"}, lambda row: "beta" in row.tags),
        ({"model": "gpt-test"}, lambda row: row.model == "gpt-test"),
        (
            {"tag": "alpha", "key": batch_key.pk, "model": "echo-1"},
            lambda row: "alpha" in row.tags and row.api_key_id == batch_key.pk,
        ),
    ]
    for query, keep in cases:
        inside = [row for row in mine if keep(row)]
        assert inside, query
        for group_by in ("key", "team", "user"):
            assert_sums(api_client, inside, group_by, **query)
        if "tag" in query:  # grouped by tag and filtered by one: that tag alone
            [(tag, row)] = usage(api_client, "tag", **query).items()
            assert (tag, row["requests"]) == (query["tag"], len(inside))
        else:
            assert_sums(api_client, inside, "tag", **query)
    # Staff filter by another owner's team.
    assert_sums(staff_client, rows_of(team_id=ops.pk), "key", team=ops.pk)
    assert set(usage(staff_client, "key", team=ops.pk)) == {str(other_key.pk)}
    # The existing groupings take the filters too.
    response = api_client.get(USAGE, {"group_by": "model", "key": research_key.pk})
    assert {row["model"] for row in response.json()["results"]} == {"echo-1", "gpt-test"}
    assert sum(row["requests"] for row in response.json()["results"]) == len(
        [row for row in mine if row.api_key_id == research_key.pk]
    )


def test_an_owner_cannot_see_another_owners_key_usage(api_client, staff_client, user, history):
    *_, other_key = history
    for rolled_up in (False, True):
        if rolled_up:
            usage_rollup()
        assert usage(api_client, "key", key=other_key.pk) == {}
        assert usage(api_client, "team", team=other_key.team_id) == {}
        assert str(other_key.pk) not in usage(api_client, "key")
        assert "someone-else" not in usage(api_client, "user")
        theirs = usage(staff_client, "key", key=other_key.pk)
        assert theirs[str(other_key.pk)]["requests"] == len(rows_of(api_key=other_key))
        assert theirs[str(other_key.pk)]["key_name"] == "other key"


def test_a_row_with_several_tags_counts_once_under_each(api_client, user):
    now = timezone.now()
    attributed(user, at=now - timedelta(hours=5), tags=("x", "y", "z"), number=1)
    attributed(user, at=now - timedelta(minutes=1), tags=("y",), number=2)
    attributed(user, at=now - timedelta(minutes=2), number=3)  # untagged: under no tag
    for rolled_up in (False, True):
        if rolled_up:
            usage_rollup()
        by_tag = usage(api_client, "tag")
        assert {tag: row["requests"] for tag, row in by_tag.items()} == {"x": 1, "y": 2, "z": 1}
        assert usage(api_client, "tag", tag="y")["y"]["requests"] == 2
        [day] = api_client.get(USAGE, {"group_by": "day", "tag": "x"}).json()["results"]
        assert day["requests"] == 1
    closed_hour = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    rolled = HourlyTagUsage.objects.filter(owner=user, hour=closed_hour)
    assert sorted(rolled.values_list("tag", "requests")) == [("x", 1), ("y", 1), ("z", 1)]


def test_names_are_looked_up_once_per_report(user, teams, django_assert_max_num_queries):
    research, _ = teams
    now = timezone.now()
    for number in range(12):
        key, _ = api_key_create(user=user, name=f"key {number}", team=research)
        for hours_ago in (0, 4):
            at = now - timedelta(hours=hours_ago, minutes=number)
            attributed(user, at=at, key=key, tags=(f"t{number}",), number=number)
    usage_rollup()
    for group_by in NAMED_BY:
        # Rollup state, changed hours, rollups, live rows and one query for the names.
        with django_assert_max_num_queries(5):
            results = interaction_usage(
                user=user, group_by=group_by, start=now - timedelta(days=1), end=timezone.now()
            )
        assert sum(row["requests"] for row in results) == 24


@pytest.mark.parametrize("query", [{"key": "not-a-uuid"}, {"group_by": "owner"}])
def test_invalid_filters_are_refused(api_client, query):
    response = api_client.get(USAGE, query)
    assert response.status_code == 400


EMBEDDED = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from apps.ai_interactions.models import AIInteraction, HourlyTagUsage
from apps.ai_interactions.usage.selectors import hour_start, interaction_usage
from apps.ai_interactions.usage.services import usage_rollup
owner = get_user_model().objects.create(username="embedded-owner")
now = timezone.now()
for number, (hours_ago, tags) in enumerate([(3, ["x", "y"]), (3, ["y"]), (0, ["x"]), (0, [])]):
    row = AIInteraction.objects.create(
        owner=owner, status="succeeded", mode="sync", provider="echo", model="echo-1",
        messages=[], prompt="-", prompt_hash="-", tags=tags, latency_ms=10.0 * number,
    )
    at = now - timedelta(hours=hours_ago, minutes=1)
    AIInteraction.objects.filter(pk=row.pk).update(created_at=at, updated_at=at)
def by_tag(**filters):
    start = now - timedelta(days=1)
    rows = interaction_usage(user=owner, group_by="tag", start=start, end=now, **filters)
    return {row["tag"]: row["requests"] for row in rows}
before = by_tag()
usage_rollup()
print(json.dumps({
    "before": before,
    "after": by_tag(),
    "only_x": by_tag(tag="x"),
    "rollups": HourlyTagUsage.objects.filter(hour=hour_start(now - timedelta(hours=3, minutes=1)))
    .count(),
}))
"""


def test_usage_per_tag_on_the_embedded_database(tmp_path):
    env = process_env(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings.dev")
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)

    def manage(*args: str) -> str:
        command = [sys.executable, "manage.py", *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    manage("migrate", "--noinput", "-v", "0")
    counts = json.loads(manage("shell", "-c", EMBEDDED).strip().splitlines()[-1])
    assert counts["before"] == counts["after"] == {"x": 2, "y": 2}
    assert counts["only_x"] == {"x": 2}
    assert counts["rollups"] == 2  # x and y in the closed hour
