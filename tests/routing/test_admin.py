"""The routing admin: providers with write-only keys shown as their last four characters,
routes with their deployments, and each deployment's live state."""

import time
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction
from apps.routing import cooldown
from apps.routing import selectors as routing_selectors
from apps.routing.models import Deployment, Provider, Route
from tests.factories import InteractionFactory
from tests.routes import gpt4o_deployment, main_provider, provider_form

pytestmark = pytest.mark.django_db

KEY = "sk-provider-secret-value-9f3e"


@pytest.fixture
def provider() -> Provider:
    return main_provider(KEY)


@pytest.fixture
def deployment(provider) -> Deployment:
    return gpt4o_deployment(provider)


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def assert_no_key(html: str, provider: Provider) -> None:
    assert KEY not in html
    assert provider.api_key_encrypted not in html


def test_providers_show_only_the_last_four_characters_of_their_key(superuser_client, provider):
    listing = page(superuser_client, "/admin/routing/provider/")
    assert "…9f3e" in listing
    assert "http://127.0.0.1:8001/v1" in listing
    assert_no_key(listing, provider)

    form = page(superuser_client, f"/admin/routing/provider/{provider.pk}/change/")
    assert "…9f3e" in form
    assert 'type="password" name="api_key"' in form
    assert_no_key(form, provider)


def test_an_empty_key_field_keeps_the_key_and_a_new_one_replaces_it(superuser_client, provider):
    url = f"/admin/routing/provider/{provider.pk}/change/"
    response = superuser_client.post(url, provider_form(provider, base_url="http://other/v1"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.base_url == "http://other/v1"
    assert provider.api_key == KEY

    new_key = "sk-rotated-in-the-admin-1c2d"
    response = superuser_client.post(url, provider_form(provider, api_key=new_key), follow=True)
    assert response.status_code == 200
    provider.refresh_from_db()
    assert provider.api_key == new_key
    assert provider.api_key_last_four == "…1c2d"
    assert new_key not in response.content.decode()
    form = page(superuser_client, url)
    assert new_key not in form
    assert "…1c2d" in form
    history = page(superuser_client, f"{url[: -len('change/')]}history/")
    assert new_key not in history
    assert all(new_key not in entry.change_message for entry in LogEntry.objects.all())

    response = superuser_client.post(url, provider_form(provider, clear_api_key="on"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == ""


def test_a_provider_added_in_the_admin_has_its_key_encrypted(superuser_client):
    response = superuser_client.post(
        "/admin/routing/provider/add/",
        provider_form(Provider(name="claude", kind="anthropic"), api_key=KEY),
    )
    assert response.status_code == 302
    provider = Provider.objects.get(name="claude")
    assert provider.api_key == KEY
    assert KEY not in provider.api_key_encrypted
    assert_no_key(page(superuser_client, "/admin/routing/provider/"), provider)


def test_no_admin_list_exports_a_provider_key(superuser_client, provider, deployment, user):
    # The provider and deployment lists offer no export; the interactions' CSV export
    # (the admin's only one) holds no key either.
    for url in ("/admin/routing/provider/", "/admin/routing/deployment/"):
        html = page(superuser_client, url)
        assert "export" not in html.lower()
        assert_no_key(html, provider)
    interaction = InteractionFactory(
        owner=user,
        provider="main",
        model="gpt-4o",
        deployment=deployment.label,
        attempts=[{"deployment": deployment.label, "outcome": "ok", "latency_ms": 12.0}],
    )
    response = superuser_client.post(
        "/admin/ai_interactions/aiinteraction/",
        {"action": "export_csv", "_selected_action": [str(interaction.pk)]},
    )
    assert response.status_code == 200
    exported = b"".join(response.streaming_content).decode()
    assert str(interaction.pk) in exported
    assert_no_key(exported, provider)


def test_routes_list_their_strategy_fallbacks_and_deployments(superuser_client, deployment):
    Route.objects.create(name="claude-sonnet")
    deployment.route.fallbacks = ["claude-sonnet"]
    deployment.route.save()
    listing = page(superuser_client, "/admin/routing/route/")
    assert '<td class="field-strategy">Weighted (spread by weight)</td>' in listing
    assert '<td class="field-fallback_routes">claude-sonnet</td>' in listing
    assert '<td class="field-deployment_count">1</td>' in listing
    form = page(superuser_client, f"/admin/routing/route/{deployment.route.pk}/change/")
    assert "gpt-4o-2024-08-06" in form  # the inline deployment


def test_a_route_cannot_fall_back_to_an_unknown_route(superuser_client, deployment):
    response = superuser_client.post(
        "/admin/routing/route/add/",
        {
            "name": "fast",
            "strategy": "priority",
            "fallbacks": '["nowhere"]',
            "deployments-TOTAL_FORMS": "0",
            "deployments-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Unknown route(s): nowhere." in response.content.decode()
    assert not Route.objects.filter(name="fast").exists()


def interaction(label: str, attempts: list[tuple[str, float]], *, age: timedelta | None = None):
    row = InteractionFactory(
        provider=label.split("/")[0],
        model="gpt-4o",
        deployment=label,
        attempts=[
            {"deployment": label, "outcome": outcome, "latency_ms": latency}
            for outcome, latency in attempts
        ],
    )
    if age is not None:
        AIInteraction.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    return row


def test_deployments_show_their_live_state(superuser_client, deployment, provider):
    label = deployment.label
    interaction(label, [("ok", 100.0)])
    interaction(label, [("server_error", 40.0), ("server_error", 45.0), ("ok", 300.0)])
    interaction(label, [("ok", 200.0)])
    interaction(label, [("timeout", 1000.0)] * 5 + [("ok", 5000.0)], age=timedelta(hours=1))
    # Another deployment's attempts on the same interaction count for it, not this one.
    interaction("other/model", [("rate_limited", 5.0)])
    cooldown.failed(str(deployment.pk), failures=1, rate_limited=True, retry_after=60)

    listing = page(superuser_client, "/admin/routing/deployment/")
    assert '<td class="field-prices">2.5 / 10</td>' in listing
    assert '<td class="field-context_window">128000</td>' in listing
    assert '<td class="field-failures_15_min">2</td>' in listing
    assert '<td class="field-p50_latency_15_min">200 ms</td>' in listing
    cooling = listing.split('<td class="field-cooling_down_until">')[1].split("</td>")[0]
    assert cooling != "—"
    assert str(timezone.localtime().year) in cooling
    assert_no_key(listing, provider)

    form = page(superuser_client, f"/admin/routing/deployment/{deployment.pk}/change/")
    assert "200 ms" in form
    assert_no_key(form, provider)


def test_a_deployment_without_calls_or_cooling_shows_dashes(superuser_client, deployment):
    listing = page(superuser_client, "/admin/routing/deployment/")
    assert '<td class="field-cooling_down_until">—</td>' in listing
    assert '<td class="field-failures_15_min">0</td>' in listing
    assert '<td class="field-p50_latency_15_min">—</td>' in listing


def test_a_cooling_that_ended_awaits_its_probe(superuser_client, deployment, settings):
    cooldown.failed(str(deployment.pk), failures=1, rate_limited=True, retry_after=0.01)
    time.sleep(0.05)
    listing = page(superuser_client, "/admin/routing/deployment/")
    assert "the next call probes it" in listing


def test_the_live_state_of_a_page_costs_the_same_queries_however_many_rows(
    superuser_client, deployment, provider
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            page(superuser_client, "/admin/routing/deployment/")
        return len(captured.captured_queries)

    few = queries()
    for n in range(5):
        Deployment.objects.create(route=deployment.route, provider=provider, model=f"m-{n}")
    assert queries() == few


def test_the_live_state_without_postgresql_counts_the_same(deployment, monkeypatch):
    label = deployment.label
    interaction(label, [("server_error", 10.0), ("ok", 100.0)])
    interaction(label, [("ok", 300.0)])
    interaction(label, [("timeout", 10.0)], age=timedelta(hours=1))
    since = timezone.now() - routing_selectors.LIVE_WINDOW
    from_sql = routing_selectors.live_stats([label, "nobody/none"], since=since)
    monkeypatch.setattr(connection, "vendor", "sqlite")
    computed = routing_selectors.live_stats([label, "nobody/none"], since=since)
    assert computed == from_sql == {label: routing_selectors.LiveStats(failures=1, p50_ms=200.0)}
