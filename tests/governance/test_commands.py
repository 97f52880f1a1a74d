"""Operators manage teams and limits from the command line; every change is audited."""

import io

import pytest
from django.core.management import CommandError, call_command

from apps.accounts.models import TeamMembership
from apps.accounts.services import api_key_create
from apps.governance.models import AuditEntry, Limits
from apps.governance.services import team_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_team_create_add_list_remove(user):
    assert "Created team research" in run("team", "create", "research")
    other = UserFactory()
    run("team", "add", "research", user.username)
    run("team", "add", "research", other.username, "--role", "admin")
    listing = run("team", "list")
    assert f"{user.username} (member)" in listing
    assert f"{other.username} (admin)" in listing
    key, _ = api_key_create(user=user, team=TeamMembership.objects.first().team)
    assert "Removed" in run("team", "remove", "research", user.username)
    key.refresh_from_db()
    assert key.team is None  # a key leaves the team with its user
    assert user.username not in run("team", "list")
    actions = list(AuditEntry.objects.order_by("at", "id").values_list("action", flat=True))
    assert actions == [
        "team.create",
        "team.member_add",
        "team.member_add",
        "key.create",
        "team.member_remove",
    ]
    assert all(entry.actor is None for entry in AuditEntry.objects.all())


def test_team_errors_are_command_errors(user):
    run("team", "create", "research")
    with pytest.raises(CommandError, match="exists already"):
        call_command("team", "create", "research")
    with pytest.raises(CommandError, match="No team"):
        call_command("team", "add", "nothing", user.username)
    with pytest.raises(CommandError, match="No user"):
        call_command("team", "add", "research", "nobody")
    with pytest.raises(CommandError, match="not a member"):
        call_command("team", "remove", "research", user.username)


def test_set_limits_on_a_key_prints_them_and_audits_the_change_once(user):
    key, _ = api_key_create(user=user)
    output = run(
        "set_limits",
        "key",
        key.prefix,
        "--rpm",
        "60",
        "--budget-usd",
        "12.5",
        "--budget-period",
        "week",
        "--allowed-models",
        "gpt-4o, claude-*",
    )
    assert "rpm_limit: 60" in output
    assert "budget_usd: 12.500000" in output
    assert "budget_period: week" in output
    assert "allowed_models: gpt-4o, claude-*" in output
    assert "tpm_limit: -" in output
    entries = AuditEntry.objects.filter(action="limits.set", target_id=str(key.pk))
    assert entries.count() == 1
    entry = entries.get()
    assert entry.actor is None
    assert entry.target_type == "apikey"
    assert entry.before["rpm_limit"] is None
    assert entry.after["rpm_limit"] == 60
    assert entry.before["budget_usd"] is None
    assert entry.after["budget_usd"] == "12.500000"
    assert entry.after["allowed_models"] == ["gpt-4o", "claude-*"]
    # The same values again change nothing and record nothing.
    run("set_limits", "key", key.prefix, "--rpm", "60")
    assert entries.count() == 1


def test_set_limits_clear_and_user_and_team(user):
    run("set_limits", "user", user.username, "--tpm", "1000", "--max-parallel", "2")
    output = run(
        "set_limits", "user", user.username, "--clear", "tpm", "--clear", "max_parallel_requests"
    )
    assert "tpm_limit: -" in output
    assert "max_parallel_requests: -" in output
    limits = Limits.objects.get(user=user)
    assert (limits.tpm_limit, limits.max_parallel_requests) == (None, None)
    entries = AuditEntry.objects.filter(action="limits.set", target_id=str(user.pk)).order_by(
        "at", "id"
    )
    assert [e.after["tpm_limit"] for e in entries] == [1000, None]
    team = team_create(name="ops")
    assert "rpm_limit: 5" in run("set_limits", "team", "ops", "--rpm", "5")
    assert Limits.objects.get(team=team).rpm_limit == 5
    # No option: the limits as they stand, nothing recorded.
    before = AuditEntry.objects.count()
    assert "rpm_limit: 5" in run("set_limits", "team", "ops")
    assert AuditEntry.objects.count() == before


def test_set_limits_refuses_bad_values_and_unknown_holders(user):
    with pytest.raises(CommandError, match="rpm_limit"):
        call_command("set_limits", "user", user.username, "--rpm", "0")
    with pytest.raises(CommandError, match="budget_usd"):
        call_command("set_limits", "user", user.username, "--budget-usd", "-3")
    with pytest.raises(CommandError, match="No API key"):
        call_command("set_limits", "key", "ctx_nothing", "--rpm", "1")
    with pytest.raises(CommandError, match="No team"):
        call_command("set_limits", "team", "nothing", "--rpm", "1")
    api_key_create(user=user)
    api_key_create(user=user)
    with pytest.raises(CommandError, match="more than one"):
        call_command("set_limits", "key", "ctx_", "--rpm", "1")
    assert not Limits.objects.exists()
    assert not AuditEntry.objects.filter(action="limits.set").exists()
