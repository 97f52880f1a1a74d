"""The admin index dashboard and every changelist, as staff see them."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db.models import Count, Q, Sum
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.usage.services import usage_rollup
from apps.operations.demo_data import seed_interactions, seed_tasks
from tests.health.test_degraded import redis_cache_at

pytestmark = pytest.mark.django_db


def interaction(owner, *, hours_ago, status="succeeded", cached=False, tokens=(10, 20), cost="0"):
    at = timezone.now() - timedelta(hours=hours_ago)
    row = AIInteraction.objects.create(
        owner=owner,
        status=status,
        mode="sync",
        provider="echo",
        model="echo-1",
        messages=[{"role": "user", "content": "hi"}],
        prompt="hi",
        prompt_hash="0" * 64,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=Decimal(cost),
        cached=cached,
        latency_ms=100.0,
    )
    AIInteraction.objects.filter(pk=row.pk).update(created_at=at, updated_at=at)


@pytest.fixture
def known_interactions(user):
    interaction(user, hours_ago=0, tokens=(11, 22), cost="0.0012")
    interaction(user, hours_ago=0, status="failed", tokens=(5, 0))
    interaction(user, hours_ago=5, cached=True, tokens=(7, 9))
    interaction(user, hours_ago=5, tokens=(13, 17), cost="0.0034")
    interaction(user, hours_ago=12, tokens=(1, 2), cost="0.0001")
    interaction(user, hours_ago=49, tokens=(1000, 1000), cost="9")  # outside the window


def shown(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>\s*(?:<span[^>]*>)?([^<]*)<', page)
    assert found, element_id
    return found.group(1).strip()


@pytest.mark.parametrize("rolled_up", [False, True], ids=["live", "rolled-up"])
def test_dashboard_shows_the_last_24_hours_as_the_database_says(
    admin_client, known_interactions, rolled_up
):
    if rolled_up:
        usage_rollup()
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    page = response.content.decode()

    since = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    want = AIInteraction.objects.filter(created_at__gte=since).aggregate(
        requests=Count("id"),
        failed=Count("id", filter=Q(status="failed")),
        cached=Count("id", filter=Q(cached=True)),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost_usd"),
    )
    assert want["requests"] == 5
    assert shown(page, "dash-requests") == str(want["requests"])
    assert shown(page, "dash-failed") == str(want["failed"])
    assert shown(page, "dash-cache-hit") == f"{100 * want['cached'] / want['requests']:.1f}%"
    assert shown(page, "dash-input-tokens") == str(want["input_tokens"])
    assert shown(page, "dash-output-tokens") == str(want["output_tokens"])
    assert Decimal(shown(page, "dash-cost")) == want["cost"]
    bars = re.findall(r"<title>[^<]*UTC: (\d+) requests, (\d+) failed</title>", page)
    assert len(bars) == 24
    assert sum(int(requests) for requests, _ in bars) == want["requests"]
    assert sum(int(failed) for _, failed in bars) == want["failed"]
    assert "<script" not in page.split('id="operations-dashboard"')[1].split("</svg>")[0]
    assert "/admin/accounts/apikey/" in page  # the app list is still below


def test_dashboard_links_open_filtered_changelists(admin_client, known_interactions):
    page = admin_client.get("/admin/").content.decode()
    failed_link = re.search(r'id="dash-failed" href="([^"]+)"', page).group(1)
    response = admin_client.get(failed_link.replace("&amp;", "&"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    links = re.findall(r'href="(/admin/(?:tasks|ai_interactions)/[^"]+\?[^"]+)"', page)
    assert len(links) >= 6
    for link in links:
        response = admin_client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        assert "e=1" not in response.get("Location", ""), link


def test_admin_index_redirects_anonymous_users_to_the_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_dashboard_says_unavailable_when_redis_and_the_broker_are_down(
    admin_client, known_interactions, closed_port, monkeypatch
):
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{closed_port}/0")
    with override_settings(CACHES=redis_cache_at(closed_port)):
        response = admin_client.get("/admin/")
    assert response.status_code == 200
    page = response.content.decode()
    assert shown(page, "dash-workers") == "unavailable"
    assert shown(page, "dash-queues") == "unavailable"
    assert shown(page, "dash-requests") == "5"


def test_every_changelist_renders_for_staff(admin_client, user):
    seed_interactions(count=30, owners=[user])
    seed_tasks(count=30, owners=[user])
    assert len(admin.site._registry) >= 8
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = admin_client.get(url)
        assert response.status_code == 200, url
