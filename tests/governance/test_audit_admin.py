"""The governance admin: teams with their members and limits are changed through the
services (so every change is audited), and the audit log cannot be changed or deleted,
not even by a superuser."""

import pytest
from django.urls import reverse

from apps.accounts.models import Team, TeamMembership
from apps.governance.models import AuditEntry, Limits
from apps.governance.services import audit_record, limits_set, team_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry(user) -> AuditEntry:
    limits_set(holder=user, changes={"rpm_limit": 10})
    return AuditEntry.objects.get()


def test_audit_log_lists_and_shows_entries_read_only(superuser_client, entry):
    listing = superuser_client.get(reverse("admin:governance_auditentry_changelist"))
    assert listing.status_code == 200
    assert "limits.set" in listing.content.decode()
    page = superuser_client.get(reverse("admin:governance_auditentry_change", args=[entry.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "rpm_limit" in html
    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert "deletelink" not in html


def test_audit_log_refuses_add_change_and_delete_for_a_superuser(superuser_client, entry):
    change = reverse("admin:governance_auditentry_change", args=[entry.pk])
    posted = superuser_client.post(change, {"action": "forged", "target_id": "x", "_save": "Save"})
    assert posted.status_code == 403
    delete = reverse("admin:governance_auditentry_delete", args=[entry.pk])
    assert superuser_client.get(delete).status_code == 403
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    assert superuser_client.get(reverse("admin:governance_auditentry_add")).status_code == 403
    bulk = superuser_client.post(
        reverse("admin:governance_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.action == "limits.set"
    assert AuditEntry.objects.count() == 1


def test_limits_saved_in_the_admin_are_audited(superuser_client, superuser, user):
    add = superuser_client.post(
        reverse("admin:governance_limits_add"),
        {
            "user": user.pk,
            "allowed_models": '["gpt-4o*"]',
            "rpm_limit": "30",
            "budget_usd": "2.5",
            "budget_period": "day",
        },
    )
    assert add.status_code == 302, add.content.decode()[:2000]
    limits = Limits.objects.get(user=user)
    assert (limits.rpm_limit, limits.budget_period) == (30, "day")
    change = superuser_client.post(
        reverse("admin:governance_limits_change", args=[limits.pk]),
        {
            "allowed_models": '["gpt-4o*"]',
            "rpm_limit": "",
            "tpm_limit": "500",
            "budget_usd": "2.5",
            "budget_period": "day",
        },
    )
    assert change.status_code == 302
    entries = list(AuditEntry.objects.filter(action="limits.set").order_by("at", "id"))
    assert [e.actor for e in entries] == [superuser, superuser]
    assert entries[0].after["rpm_limit"] == 30
    assert entries[0].after["budget_usd"] == "2.500000"
    assert entries[1].before["rpm_limit"] == 30
    assert entries[1].after["rpm_limit"] is None
    assert entries[1].after["tpm_limit"] == 500


def test_limits_admin_refuses_a_bad_value_and_two_holders(superuser_client, user):
    team = team_create(name="ops")
    response = superuser_client.post(
        reverse("admin:governance_limits_add"),
        {"user": user.pk, "team": team.pk, "allowed_models": "[]", "budget_period": "month"},
    )
    assert response.status_code == 200
    assert "exactly one" in response.content.decode()
    response = superuser_client.post(
        reverse("admin:governance_limits_add"),
        {"user": user.pk, "allowed_models": "[]", "rpm_limit": "0", "budget_period": "month"},
    )
    assert response.status_code == 200
    assert not Limits.objects.exists()


def test_team_with_members_saved_in_the_admin_is_audited(superuser_client, superuser, user):
    other = UserFactory()
    response = superuser_client.post(
        reverse("admin:accounts_team_add"),
        {
            "name": "research",
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "0",
            "memberships-0-user": user.pk,
            "memberships-0-role": "member",
            "memberships-1-user": other.pk,
            "memberships-1-role": "admin",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    team = Team.objects.get(name="research")
    roles = dict(TeamMembership.objects.filter(team=team).values_list("user__username", "role"))
    assert roles == {user.username: "member", other.username: "admin"}
    membership = TeamMembership.objects.get(team=team, user=other)
    response = superuser_client.post(
        reverse("admin:accounts_team_change", args=[team.pk]),
        {
            "name": "research",
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "2",
            "memberships-0-id": TeamMembership.objects.get(team=team, user=user).pk,
            "memberships-0-team": team.pk,
            "memberships-0-user": user.pk,
            "memberships-0-role": "admin",
            "memberships-1-id": membership.pk,
            "memberships-1-team": team.pk,
            "memberships-1-user": other.pk,
            "memberships-1-role": "admin",
            "memberships-1-DELETE": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert dict(TeamMembership.objects.filter(team=team).values_list("user__username", "role")) == {
        user.username: "admin"
    }
    entries = AuditEntry.objects.filter(target_id=str(team.pk)).order_by("at", "id")
    assert [e.action for e in entries] == [
        "team.create",
        "team.member_add",
        "team.member_add",
        "team.member_remove",
        "team.member_role",
    ]
    assert {e.actor for e in entries} == {superuser}


def test_audit_record_takes_the_current_request_id(user):
    from contextos.context import request_id_var

    token = request_id_var.set("req-123")
    try:
        entry = audit_record(action="task.retry", target=user, actor=user, after={"n": 1})
    finally:
        request_id_var.reset(token)
    assert (entry.request_id, entry.target_type, entry.target_id) == (
        "req-123",
        "user",
        str(user.pk),
    )
    assert audit_record(action="x", target=user, request_id="given").request_id == "given"


def test_deleting_a_team_in_the_admin_is_audited_and_its_keys_stay(superuser_client, user):
    from apps.accounts.models import APIKey
    from apps.accounts.services import api_key_create
    from apps.governance.services import team_member_add

    team = team_create(name="short-lived")
    team_member_add(team=team, user=user)
    key, _ = api_key_create(user=user, team=team)
    response = superuser_client.post(
        reverse("admin:accounts_team_delete", args=[team.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Team.objects.filter(pk=team.pk).exists()
    assert APIKey.objects.get(pk=key.pk).team is None
    entry = AuditEntry.objects.get(action="team.delete")
    assert entry.before == {"name": "short-lived", "members": [user.username]}
