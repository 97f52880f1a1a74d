"""The audit trail: every staff action and every change to keys, providers, routes,
deployments, teams and limits, through the API, the admin or a command, is recorded once
with who, what, before and after, and the request it came from."""

import io
import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke
from apps.ai_interactions.models import AIInteraction
from apps.governance.models import AuditEntry
from apps.routing.models import Deployment, Provider, Route
from apps.tasks.models import Task, TaskStatus
from apps.tasks.services import task_retry, task_submit
from contextos.exceptions import Conflict
from tests.factories import InteractionFactory
from tests.routes import gpt4o_deployment, main_provider, provider_form

pytestmark = pytest.mark.django_db

TASKS = "/api/v1/tasks/"
KEYS = "/api/v1/keys/"
PROVIDER_KEY = "sk-provider-secret-value-9f3e"


@pytest.fixture
def failed_task(user) -> Task:
    task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={"seconds": 1})
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.FAILED, error={"message": "it broke", "type": "RuntimeError"}
    )
    task.refresh_from_db()
    return task


@pytest.fixture
def provider() -> Provider:
    return main_provider(PROVIDER_KEY)


@pytest.fixture
def deployment(provider) -> Deployment:
    return gpt4o_deployment(provider)


def the_entry(action: str, target) -> AuditEntry:
    """The one entry of ``action`` on ``target``; fails when there are none or several."""
    entries = list(AuditEntry.objects.filter(action=action, target_id=str(target.pk)))
    assert len(entries) == 1, [(e.action, e.before, e.after) for e in entries]
    return entries[0]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- Tasks -----------------------------------------------------------------------------


def test_retrying_a_failed_task_through_the_api_is_recorded_once(api_client, user, failed_task):
    response = api_client.post(f"{TASKS}{failed_task.pk}/retry/")
    assert response.status_code == 202
    entry = the_entry("task.retry", failed_task)
    assert entry.actor == user
    assert entry.target_type == "task"
    assert entry.before == {"status": "failed", "attempt": 1}
    assert entry.after == {"status": "queued", "attempt": 2}
    assert entry.request_id == response["X-Request-ID"]

    # Queued again, it cannot be retried: the refusal records nothing.
    assert api_client.post(f"{TASKS}{failed_task.pk}/retry/").status_code == 409
    the_entry("task.retry", failed_task)


def test_cancelling_a_task_through_the_api_is_recorded_once(api_client, user):
    task_id = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 1}}, format="json"
    ).json()["id"]
    response = api_client.post(f"{TASKS}{task_id}/cancel/", HTTP_X_REQUEST_ID="cancel-1")
    assert response.status_code == 202
    task = Task.objects.get(pk=task_id)
    entry = the_entry("task.cancel", task)
    assert entry.actor == user
    assert entry.before == {"status": "queued", "cancel_requested_at": None}
    assert entry.after["status"] == "cancelled"
    assert entry.after["cancel_requested_at"] == task.cancel_requested_at.isoformat()
    assert entry.request_id == "cancel-1" == response["X-Request-ID"]
    assert api_client.post(f"{TASKS}{task_id}/cancel/").status_code == 409
    the_entry("task.cancel", task)


def test_cancelling_a_running_task_twice_is_recorded_once(api_client, user):
    task_id = api_client.post(
        TASKS, {"type": "diagnostics.sleep", "params": {"seconds": 1}}, format="json"
    ).json()["id"]
    Task.objects.filter(pk=task_id).update(status=TaskStatus.RUNNING)
    assert api_client.post(f"{TASKS}{task_id}/cancel/").status_code == 202
    assert api_client.post(f"{TASKS}{task_id}/cancel/").status_code == 202
    entry = the_entry("task.cancel", Task.objects.get(pk=task_id))
    assert entry.before == {"status": "running", "cancel_requested_at": None}
    assert entry.after["status"] == "running"
    assert entry.after["cancel_requested_at"] is not None


def test_the_retry_service_records_the_staff_member_it_is_given(superuser, failed_task):
    """The path of the admin's Retry action (apps/tasks/admin.py calls task_retry)."""
    task_retry(task=failed_task, actor=superuser)
    entry = the_entry("task.retry", failed_task)
    assert entry.actor == superuser
    assert (entry.before["status"], entry.after["status"]) == ("failed", "queued")
    assert entry.request_id == ""  # no request: called directly


def test_retry_action_in_the_tasks_admin_is_recorded_once(superuser_client, superuser, failed_task):
    response = superuser_client.post(
        "/admin/tasks/task/", {"action": "retry_tasks", "_selected_action": [failed_task.pk]}
    )
    assert response.status_code == 302
    entry = the_entry("task.retry", failed_task)
    assert entry.actor == superuser
    assert entry.after == {"status": "queued", "attempt": 2}
    assert entry.request_id == response["X-Request-ID"]


# --- AI interactions -------------------------------------------------------------------


def test_retrying_a_failed_interaction_through_the_api_is_recorded_once(api_client, user):
    interaction = InteractionFactory(
        owner=user, status="failed", error={"message": "upstream down", "type": "server_error"}
    )
    response = api_client.post(f"/api/v1/ai/interactions/{interaction.pk}/retry/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "succeeded"
    entry = the_entry("interaction.retry", interaction)
    assert entry.actor == user
    assert entry.target_type == "aiinteraction"
    assert entry.before["status"] == "failed"
    assert entry.after == {"status": "succeeded", "error": None}
    assert entry.request_id == response["X-Request-ID"]
    assert AIInteraction.objects.get(pk=interaction.pk).status == "succeeded"


# --- API keys --------------------------------------------------------------------------


def test_a_key_created_through_the_api_is_recorded_once(api_client, user):
    response = api_client.post(KEYS, {"name": "ci", "rpm_limit": 10}, format="json")
    assert response.status_code == 201, response.json()
    key = APIKey.objects.get(pk=response.json()["id"])
    entry = the_entry("key.create", key)
    assert entry.actor == user
    assert entry.after["name"] == "ci"
    assert entry.after["prefix"] == key.prefix
    assert entry.after["user"] == user.username
    assert entry.request_id == response["X-Request-ID"]
    assert response.json()["key"] not in json.dumps([entry.before, entry.after])
    limits = the_entry("limits.set", key)
    assert limits.after["rpm_limit"] == 10
    assert limits.request_id == entry.request_id


def test_a_key_renamed_through_the_api_is_recorded_once(api_client, user):
    key_id = api_client.post(KEYS, {"name": "old"}, format="json").json()["id"]
    response = api_client.patch(f"{KEYS}{key_id}/", {"name": "new"}, format="json")
    assert response.status_code == 200
    entry = the_entry("key.update", APIKey.objects.get(pk=key_id))
    assert (entry.actor, entry.before, entry.after) == (user, {"name": "old"}, {"name": "new"})
    assert entry.request_id == response["X-Request-ID"]


def test_revoking_a_key_through_the_api_is_recorded_once(api_client, user):
    key_id = api_client.post(KEYS, {"name": "short-lived"}, format="json").json()["id"]
    response = api_client.delete(f"{KEYS}{key_id}/")
    assert response.status_code == 200
    revoked_at = response.json()["revoked_at"]
    key = APIKey.objects.get(pk=key_id)
    entry = the_entry("key.revoke", key)
    assert entry.actor == user
    assert entry.before == {"revoked_at": None}
    assert entry.after == {"revoked_at": key.revoked_at.isoformat()}
    assert entry.request_id == response["X-Request-ID"]
    # Revoking again changes nothing (SPEC 9) and records nothing.
    again = api_client.delete(f"{KEYS}{key_id}/")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked_at
    the_entry("key.revoke", key)


def test_revoking_a_revoked_key_is_a_conflict_that_changes_nothing(user, superuser):
    key, _ = api_key_create(user=user, actor=superuser)
    api_key_revoke(api_key=key, actor=superuser)
    first = APIKey.objects.get(pk=key.pk).revoked_at
    with pytest.raises(Conflict) as refused:
        api_key_revoke(api_key=APIKey.objects.get(pk=key.pk), actor=superuser)
    assert refused.value.code == "already_revoked"
    assert APIKey.objects.get(pk=key.pk).revoked_at == first
    assert the_entry("key.revoke", key).actor == superuser


def test_keys_made_and_revoked_by_commands_are_recorded_without_an_actor(user):
    raw = run("create_api_key", user.username, "--name", "server").strip()
    key = APIKey.objects.get(prefix=raw[:12])
    created = the_entry("key.create", key)
    assert (created.actor, created.request_id) == (None, "")
    assert created.after["name"] == "server"
    assert raw not in json.dumps(created.after)

    assert f"Revoked {key.prefix}" in run("revoke_api_key", key.prefix)
    revoked = the_entry("key.revoke", key)
    assert (revoked.actor, revoked.request_id) == (None, "")
    assert "already revoked" in run("revoke_api_key", key.prefix)
    the_entry("key.revoke", key)


def test_keys_created_and_revoked_in_the_admin_are_recorded_once(superuser_client, superuser, user):
    response = superuser_client.post(
        "/admin/accounts/apikey/add/",
        {"user": user.pk, "name": "laptop", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code in (200, 302), response.content.decode()[:2000]
    key = APIKey.objects.get(name="laptop")
    created = the_entry("key.create", key)
    assert created.actor == superuser
    assert created.request_id == response["X-Request-ID"]
    response = superuser_client.post(
        "/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    assert response.status_code == 302
    assert APIKey.objects.get(pk=key.pk).is_revoked
    revoked = the_entry("key.revoke", key)
    assert (revoked.actor, revoked.request_id) == (superuser, response["X-Request-ID"])
    # Selected again, the revoked key is left as it was and nothing more is recorded.
    superuser_client.post(
        "/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    the_entry("key.revoke", key)


# --- Limits and teams by command -------------------------------------------------------


def test_a_limit_set_by_command_is_recorded_once_without_an_actor(user):
    run("set_limits", "user", user.username, "--rpm", "5")
    entry = the_entry("limits.set", user)
    assert (entry.actor, entry.request_id) == (None, "")
    assert (entry.before["rpm_limit"], entry.after["rpm_limit"]) == (None, 5)
    run("set_limits", "user", user.username, "--rpm", "5")  # no change: nothing recorded
    the_entry("limits.set", user)


def test_a_team_made_by_command_is_recorded(user):
    run("team", "create", "research")
    run("team", "add", "research", user.username)
    entries = AuditEntry.objects.filter(target_type="team").order_by("at", "id")
    assert [(e.action, e.actor) for e in entries] == [
        ("team.create", None),
        ("team.member_add", None),
    ]
    assert entries[1].after == {"user": user.username, "role": "member"}


# --- Providers, routes and deployments -------------------------------------------------


def test_a_provider_changed_in_the_admin_is_recorded_without_its_key(
    superuser_client, superuser, provider
):
    url = f"/admin/routing/provider/{provider.pk}/change/"
    new_key = "sk-rotated-in-the-admin-1c2d"
    response = superuser_client.post(
        url, provider_form(provider, base_url="http://other/v1", api_key=new_key)
    )
    assert response.status_code == 302
    entry = the_entry("provider.update", provider)
    assert entry.actor == superuser
    assert entry.before == {"base_url": "http://127.0.0.1:8001/v1", "api_key_last_four": "…9f3e"}
    assert entry.after == {
        "base_url": "http://other/v1",
        "api_key_last_four": "…1c2d",
        "api_key_changed": True,
    }
    assert entry.request_id == response["X-Request-ID"]
    provider.refresh_from_db()
    recorded = json.dumps([[e.before, e.after] for e in AuditEntry.objects.all()])
    for secret in (new_key, PROVIDER_KEY, provider.api_key_encrypted):
        assert secret not in recorded

    # Saved again unchanged (the key field left empty): nothing more is recorded.
    response = superuser_client.post(url, provider_form(provider, base_url="http://other/v1"))
    assert response.status_code == 302
    the_entry("provider.update", provider)


def test_a_deployment_changed_and_deleted_in_the_admin_is_recorded_once(
    superuser_client, superuser, deployment
):
    url = f"/admin/routing/deployment/{deployment.pk}/change/"
    form = {
        "route": deployment.route_id,
        "provider": deployment.provider_id,
        "model": deployment.model,
        "enabled": "on",
        "weight": "5",
        "priority": "0",
        "input_price_per_mtok": "2.50",
        "output_price_per_mtok": "12.00",
        "context_window": "128000",
        "rpm": "",
        "tpm": "",
    }
    response = superuser_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = the_entry("deployment.update", deployment)
    assert entry.actor == superuser
    assert entry.before == {"weight": 2, "output_price_per_mtok": "10.000000"}
    assert entry.after == {"weight": 5, "output_price_per_mtok": "12.000000"}
    assert entry.request_id == response["X-Request-ID"]

    response = superuser_client.post(
        f"/admin/routing/deployment/{deployment.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    deleted = the_entry("deployment.delete", deployment)
    assert deleted.actor == superuser
    assert deleted.before["model"] == "gpt-4o-2024-08-06"
    assert deleted.before["weight"] == 5
    assert deleted.after is None


def test_a_route_with_a_new_inline_deployment_is_recorded(superuser_client, superuser, deployment):
    route = deployment.route
    response = superuser_client.post(
        f"/admin/routing/route/{route.pk}/change/",
        {
            "name": route.name,
            "strategy": "priority",
            "fallbacks": "[]",
            "deployments-TOTAL_FORMS": "2",
            "deployments-INITIAL_FORMS": "1",
            "deployments-0-id": deployment.pk,
            "deployments-0-route": route.pk,
            "deployments-0-provider": deployment.provider_id,
            "deployments-0-model": deployment.model,
            "deployments-0-weight": "2",
            "deployments-0-priority": "0",
            "deployments-0-enabled": "on",
            "deployments-1-route": route.pk,
            "deployments-1-provider": deployment.provider_id,
            "deployments-1-model": "gpt-4o-mini",
            "deployments-1-weight": "1",
            "deployments-1-priority": "1",
            "deployments-1-enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = the_entry("route.update", route)
    assert (entry.before, entry.after) == ({"strategy": "weighted"}, {"strategy": "priority"})
    added = Deployment.objects.get(route=route, model="gpt-4o-mini")
    created = the_entry("deployment.create", added)
    assert created.actor == superuser
    assert (created.after["model"], created.after["priority"]) == ("gpt-4o-mini", 1)
    assert not AuditEntry.objects.filter(action="deployment.update").exists()


def test_a_provider_deleted_in_the_admin_keeps_its_deployments_in_the_log(
    superuser_client, provider, deployment
):
    response = superuser_client.post(
        "/admin/routing/provider/",
        {"action": "delete_selected", "_selected_action": [provider.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Provider.objects.filter(pk=provider.pk).exists()
    entry = the_entry("provider.delete", provider)
    assert entry.before["deployments"] == ["gpt-4o: main/gpt-4o-2024-08-06"]
    assert entry.before["api_key_last_four"] == "…9f3e"


def test_sync_models_records_each_row_it_writes_and_a_dry_run_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIN_KEY", PROVIDER_KEY)
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        "providers:\n"
        "  - {name: main, kind: openai, base_url: 'http://127.0.0.1:8001/v1',"
        " api_key: os.environ/MAIN_KEY}\n"
        "routes:\n"
        "  - name: gpt-4o\n"
        "    deployments:\n"
        "      - {provider: main, model: gpt-4o-2024-08-06, input_price_per_mtok: '2.50'}\n"
    )
    run("sync_models", str(models_file))
    provider = Provider.objects.get(name="main")
    created = the_entry("provider.create", provider)
    assert (created.actor, created.request_id) == (None, "")
    assert created.after["api_key_last_four"] == "…9f3e"
    the_entry("route.create", Route.objects.get(name="gpt-4o"))
    the_entry("deployment.create", Deployment.objects.get(model="gpt-4o-2024-08-06"))

    monkeypatch.setenv("MAIN_KEY", "sk-another-secret-0a0b")
    count = AuditEntry.objects.count()
    run("sync_models", str(models_file), "--dry-run")
    assert AuditEntry.objects.count() == count
    run("sync_models", str(models_file))
    changed = the_entry("provider.update", provider)
    assert changed.after == {"api_key_last_four": "…0a0b", "api_key_changed": True}
    recorded = json.dumps([[e.before, e.after] for e in AuditEntry.objects.all()])
    assert PROVIDER_KEY not in recorded
    assert "sk-another-secret-0a0b" not in recorded


# --- The audit log in the admin --------------------------------------------------------


def test_the_audit_log_is_searchable_by_request_id_and_read_only_for_a_superuser(
    superuser_client, api_client, failed_task
):
    request_id = api_client.post(f"{TASKS}{failed_task.pk}/retry/")["X-Request-ID"]
    entry = the_entry("task.retry", failed_task)
    changelist = reverse("admin:governance_auditentry_changelist")
    found = superuser_client.get(changelist, {"q": request_id}).content.decode()
    assert f"/admin/governance/auditentry/{entry.pk}/change/" in found
    by_type = superuser_client.get(changelist, {"target_type": "task", "action": "task.retry"})
    assert f"/admin/governance/auditentry/{entry.pk}/change/" in by_type.content.decode()
    assert "delete_selected" not in found

    change = reverse("admin:governance_auditentry_change", args=[entry.pk])
    page = superuser_client.get(change).content.decode()
    assert "&quot;attempt&quot;: 2" in page  # after, pretty-printed JSON
    assert 'name="_save"' not in page
    assert superuser_client.post(change, {"action": "forged"}).status_code == 403
    delete = reverse("admin:governance_auditentry_delete", args=[entry.pk])
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.action == "task.retry"
