"""The admin index dashboard (SPEC 10) and every changelist, as staff see them."""

import html
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db.models import Count, Q, Sum
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Team
from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.usage.services import usage_rollup
from apps.operations.demo_data import seed_interactions, seed_tasks
from apps.operations.templatetags.admin_dashboard import usd
from apps.routing import cooldown
from apps.routing.models import Deployment, Provider, Route
from apps.tasks.models import Task
from tests.factories import TaskFactory, UserFactory
from tests.health.test_degraded import redis_cache_at

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _steady_clock():
    """Windows start at a bucket's edge (5 minutes, an hour, a day): a test does not start
    in the last seconds before one, so the page and the test agree on the window."""
    now = timezone.now()
    left = 300 - (now.minute % 5 * 60 + now.second + now.microsecond / 1e6)
    if left < 15:
        time.sleep(left + 1)


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(window: str) -> datetime:
    """Where the window starts, worked out here as SPEC 10's buckets say."""
    now = timezone.now().astimezone(UTC)
    if window == "1h":
        return now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) - (
            timedelta(minutes=55)
        )
    if window == "24h":
        return hour_start(now) - timedelta(hours=23)
    days = {"7d": 6, "30d": 29}[window]
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def interaction(
    owner,
    *,
    at,
    status="succeeded",
    cached=False,
    tokens=(10, 20),
    cost="0",
    model="echo-1",
    api_key=None,
    team=None,
    latency=100.0,
    attempts=(),
):
    row = AIInteraction.objects.create(
        owner=owner,
        status=status,
        mode="sync",
        provider="echo",
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        prompt="hi",
        prompt_hash="0" * 64,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=Decimal(cost),
        cached=cached,
        latency_ms=latency,
        api_key=api_key,
        team=team,
        attempts=list(attempts),
    )
    AIInteraction.objects.filter(pk=row.pk).update(created_at=at, updated_at=at)
    return row


def backdated_task(owner, *, status, at):
    task = TaskFactory(owner=owner, status=status)
    Task.objects.filter(pk=task.pk).update(created_at=at, updated_at=at)
    return task


@pytest.fixture
def known_rows(user):
    """Interactions on both sides of the 24-hour window's edges, and tasks."""
    now, start = timezone.now(), window_start("24h")
    interaction(user, at=now - timedelta(minutes=1), tokens=(1100, 2200), cost="0.0012")
    interaction(user, at=now - timedelta(minutes=2), status="failed", tokens=(5, 0))
    interaction(user, at=now - timedelta(hours=5), cached=True, tokens=(7, 9), latency=None)
    interaction(user, at=now - timedelta(hours=5), tokens=(13, 17), cost="0.0034", latency=300.0)
    interaction(user, at=start + timedelta(minutes=2), tokens=(1, 2), cost="0.0001")
    interaction(user, at=start - timedelta(minutes=2), tokens=(500, 500), cost="4")  # outside
    interaction(user, at=now - timedelta(hours=49), tokens=(1000, 1000), cost="9")  # outside
    backdated_task(user, status="queued", at=now - timedelta(days=3))
    backdated_task(user, status="queued", at=now)
    backdated_task(user, status="running", at=now)
    backdated_task(user, status="failed", at=now - timedelta(hours=1))
    backdated_task(user, status="failed", at=start - timedelta(minutes=5))  # outside
    backdated_task(user, status="succeeded", at=now)
    return start


def dashboard_page(client, query: str = "") -> str:
    response = client.get(f"/admin/{query}")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="operations-dashboard"' in page
    return page


def section(page: str) -> str:
    """The dashboard's own markup."""
    return page.split('id="operations-dashboard"', 1)[1].split("</section>", 1)[0]


def shown(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>\s*(?:<span[^>]*>)?([^<]*)<', page)
    assert found, element_id
    return html.unescape(found.group(1).strip())


def href(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*href="([^"]+)"', page) or re.search(
        rf'href="([^"]+)"[^>]*id="{element_id}"', page
    )
    assert found, element_id
    return html.unescape(found.group(1))


def listed(client, link: str) -> int:
    """How many rows the admin list at ``link`` shows (it must accept every filter)."""
    response = client.get(link)
    assert response.status_code == 200, link
    return response.context["cl"].result_count


# --- Tiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("rolled_up", [False, True], ids=["live", "rolled-up"])
def test_tiles_count_the_window_as_the_database_says(admin_client, known_rows, rolled_up):
    if rolled_up:
        usage_rollup()
    page = dashboard_page(admin_client)

    want = AIInteraction.objects.filter(created_at__gte=known_rows).aggregate(
        requests=Count("id"),
        failed=Count("id", filter=Q(status="failed")),
        cached=Count("id", filter=Q(cached=True)),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost_usd"),
    )
    assert want == {
        "requests": 5,
        "failed": 1,
        "cached": 1,
        "input_tokens": 1126,
        "output_tokens": 2228,
        "cost": Decimal("0.0047"),
    }
    assert f"since {known_rows:%Y-%m-%d %H:%M} UTC" in page
    assert shown(page, "dash-requests") == "5"
    assert shown(page, "dash-failed") == "1"
    assert shown(page, "dash-cache-hit") == "20.0%"
    assert shown(page, "dash-cost") == "$0.0047"
    assert shown(page, "dash-input-tokens") == "1,126"
    assert shown(page, "dash-output-tokens") == "2,228"
    # Latencies 100 ms (x3) and 300 ms: the p95 is in the histogram's 250-500 ms bucket,
    # capped at the slowest (300), interpolated at 0.8 of the way: 250 + 0.8 * 50.
    assert shown(page, "dash-p95") == "290 ms"
    assert shown(page, "dash-tasks-queued") == "2"
    assert shown(page, "dash-tasks-running") == "1"
    assert shown(page, "dash-tasks-failed") == "1"
    assert "/admin/accounts/apikey/" in page  # the app list is still there


def test_window_switching_changes_the_counts(admin_client, user):
    now = timezone.now()
    for age in (
        timedelta(minutes=20),
        timedelta(hours=3),
        timedelta(days=3),
        timedelta(days=20),
        timedelta(days=40),
    ):
        interaction(user, at=now - age, cost="1")
    usage_rollup()
    counts = {}
    for window in ("1h", "24h", "7d", "30d"):
        page = dashboard_page(admin_client, f"?window={window}")
        counts[window] = (shown(page, "dash-requests"), shown(page, "dash-cost"))
        want = AIInteraction.objects.filter(created_at__gte=window_start(window)).count()
        assert counts[window][0] == str(want)
        assert 'aria-current="page">' + window + "<" in page
    assert counts == {
        "1h": ("1", "$1.00"),
        "24h": ("2", "$2.00"),
        "7d": ("3", "$3.00"),
        "30d": ("4", "$4.00"),
    }
    assert shown(dashboard_page(admin_client), "dash-requests") == "2"  # 24 h by default


@pytest.mark.parametrize("window", ["2y", "", "24", "1H", "%3Cscript%3E", "30d&window=1h"])
def test_an_unknown_window_shows_the_default_not_an_error(admin_client, user, window):
    interaction(user, at=timezone.now() - timedelta(hours=3))
    interaction(user, at=timezone.now() - timedelta(days=3))
    page = dashboard_page(admin_client, f"?window={window}")
    want = "1" if window != "30d&window=1h" else "0"  # the last value given counts
    assert shown(page, "dash-requests") == want


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("12.345"), "$12.35"),
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.01"), "$0.01"),
        (Decimal("0.00420000"), "$0.0042"),
        (Decimal("0.004249"), "$0.0042"),
        (Decimal("0.00001234"), "$0.000012"),
        (Decimal("0.00000001"), "$0.00000001"),
        (Decimal(0), "$0.00"),
        (0.125, "$0.13"),
        (None, "—"),
    ],
)
def test_spend_is_dollars_for_people(amount, text):
    assert usd(amount) == text


# --- Top spenders, deployments --------------------------------------------------------


@pytest.mark.parametrize("rolled_up", [False, True], ids=["live", "rolled-up"])
def test_top_spenders_are_the_five_costliest_in_the_window(admin_client, rolled_up):
    now = timezone.now()
    users = [UserFactory(username=f"spender{n}") for n in range(6)]
    teams = [Team.objects.create(name=f"team{n}") for n in range(2)]
    keys = []
    for n, owner in enumerate(users):
        api_key, _ = api_key_create(user=owner, name=f"key{n}")
        keys.append(api_key)
    costs = ["3", "5", "1", "0.5", "2", "0.25"]  # per user / key, in the window
    for n, cost in enumerate(costs):
        team = teams[n % 2] if n < 4 else None
        for hours in (2, 30):  # the second is outside the 24-hour window
            interaction(
                users[n],
                at=now - timedelta(hours=hours),
                cost=cost if hours == 2 else "100",
                api_key=keys[n],
                team=team,
            )
    interaction(users[5], at=now - timedelta(hours=1), cost="50")  # no key, no team
    if rolled_up:
        usage_rollup()
    page = section(dashboard_page(admin_client))

    def order(kind: str) -> list[str]:
        return re.findall(rf'class="dash-top-{kind}" data-id="([^"]+)"', page)

    assert order("key") == [str(keys[n].pk) for n in (1, 0, 4, 2, 3)]
    assert order("user") == [str(users[n].pk) for n in (5, 1, 0, 4, 2)]
    # team0: keys 0 and 2 ($3 + $1), team1: keys 1 and 3 ($5 + $0.50)
    assert order("team") == [str(teams[1].pk), str(teams[0].pk)]
    team_row = page.split(f'data-id="{teams[1].pk}"')[1].split("</tr>")[0]
    assert ">2<" in team_row
    assert "$5.50" in team_row
    assert "spender5" in page.split('id="dash-top-users"')[1]
    assert "$50.25" in page.split('id="dash-top-users"')[1]


def test_deployment_health_shows_cooling_failures_and_median_latency(admin_client, user):
    route = Route.objects.create(name="gpt-dash")
    main = Provider.objects.create(name="main", kind="openai", base_url="http://127.0.0.1:9/v1")
    spare = Provider.objects.create(name="spare", kind="openai", base_url="http://127.0.0.1:9/v1")
    failing = Deployment.objects.create(route=route, provider=main, model="m1")
    healthy = Deployment.objects.create(route=route, provider=spare, model="m2", priority=1)
    now = timezone.now()
    attempts = [
        {"deployment": "main/m1", "outcome": "error", "latency_ms": 30},
        {"deployment": "spare/m2", "outcome": "ok", "latency_ms": 120},
    ]
    interaction(user, at=now - timedelta(minutes=3), attempts=attempts)
    interaction(user, at=now - timedelta(minutes=5), attempts=attempts[1:2])
    interaction(
        user,
        at=now - timedelta(minutes=6),
        attempts=[{"deployment": "spare/m2", "outcome": "ok", "latency_ms": 200}],
    )
    interaction(user, at=now - timedelta(minutes=40), attempts=attempts[:1])  # too old
    cooldown.failed(str(failing.pk), failures=1, rate_limited=True, retry_after=60)
    page = section(dashboard_page(admin_client))

    rows = dict(re.findall(r'class="dash-deployment" data-id="([^"]+)">(.*?)</tr>', page, re.S))
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in rows[str(failing.pk)].split("</td>")]
    assert cells[:5] == ["gpt-dash", "main/m1", "cooling down", "1", "—"]
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in rows[str(healthy.pk)].split("</td>")]
    assert cells[:5] == ["gpt-dash", "spare/m2", "ok", "0", "120 ms"]
    link = html.unescape(re.search(r'href="([^"]+)"', rows[str(failing.pk)]).group(1))
    response = admin_client.get(link)
    assert response.status_code == 200
    assert [d.pk for d in response.context["cl"].result_list] == [failing.pk]


# --- Links and charts ------------------------------------------------------------------


def test_every_number_links_to_the_list_of_exactly_what_it_counts(admin_client, known_rows):
    owner = AIInteraction.objects.first().owner
    team = Team.objects.create(name="counted")
    api_key, _ = api_key_create(user=owner, name="counted", team=team)
    interaction(
        owner, at=timezone.now() - timedelta(hours=2), cost="0.2", api_key=api_key, team=team
    )
    usage_rollup()
    page = dashboard_page(admin_client)
    start = known_rows
    in_window = AIInteraction.objects.filter(created_at__gte=start)

    assert listed(admin_client, href(page, "dash-requests")) == in_window.count() == 6
    assert listed(admin_client, href(page, "dash-failed")) == 1
    assert listed(admin_client, href(page, "dash-cache-hit")) == 1
    assert listed(admin_client, href(page, "dash-cost")) == 6
    assert listed(admin_client, href(page, "dash-tasks-queued")) == 2
    assert listed(admin_client, href(page, "dash-tasks-running")) == 1
    assert listed(admin_client, href(page, "dash-tasks-failed")) == 1

    dash = section(page)
    for kind, rows in (("key", 1), ("user", 6), ("team", 1)):
        row = dash.split(f'class="dash-top-{kind}"', 1)[1].split("</tr>", 1)[0]
        requests_link = html.unescape(re.findall(r'href="([^"]+)"', row)[1])
        assert listed(admin_client, requests_link) == rows, kind
    model_row = dash.split('class="dash-model"', 1)[1].split("</tr>", 1)[0]
    model_links = [html.unescape(link) for link in re.findall(r'href="([^"]+)"', model_row)]
    assert [listed(admin_client, link) for link in model_links[:3]] == [6, 1, 1]

    bars = re.findall(r'<a href="([^"]+)" class="ops-bar">\s*<title>[^<]*: ([\d,]+) requests', dash)
    assert len(bars) == 24
    for link, requests in bars:
        assert listed(admin_client, html.unescape(link)) == int(requests.replace(",", ""))

    # Every link of the dashboard opens a page (a filter the list does not accept would
    # redirect to ?e=1).
    links = {html.unescape(link) for link in re.findall(r'href="(/admin/[^"]*)"', dash)}
    assert len(links) > 40
    for link in links:
        response = admin_client.get(link)
        assert response.status_code == 200, link


def test_charts_are_inline_svg_with_labelled_axes(admin_client, known_rows):
    page = dashboard_page(admin_client, "?window=7d")
    dash = section(page)
    requests_chart = dash.split('id="dash-chart"', 1)[1].split("</svg>", 1)[0]
    spend_chart = dash.split('id="dash-spend-chart"', 1)[1].split("</svg>", 1)[0]
    for chart, unit in ((requests_chart, "requests"), (spend_chart, "spend (USD)")):
        assert f">{unit}</text>" in chart
        assert ">time (UTC)</text>" in chart
        assert ">0</text>" in chart or ">$0.00</text>" in chart
    titles = re.findall(r"<title>(\d{4}-\d\d-\d\d) \(UTC\): ([\d,]+) requests", requests_chart)
    assert len(titles) == 7
    in_window = AIInteraction.objects.filter(created_at__gte=window_start("7d")).count()
    assert sum(int(count) for _, count in titles) == in_window == 7
    days = [(window_start("7d") + timedelta(days=n)).strftime("%b %d") for n in range(7)]
    assert [day in requests_chart for day in days] == [True] * 7  # a tick per day
    assert re.search(r"<title>[^<]*echo-1 \$0\.0\d+ \(of \$0\.0\d+\)</title>", spend_chart)
    assert "echo-1</span>" in dash.split('id="dash-spend-chart"', 1)[1]  # the legend
    assert "<script" not in dash
    assert " style=" not in dash  # styles live in contextos/dashboard.css
    assert "contextos/dashboard.css" in page
    assert "//" not in dash.replace("</", "")  # nothing from another host


@pytest.mark.parametrize("window", ["1h", "24h", "30d"])
def test_buckets_suit_the_window(admin_client, user, window):
    interaction(user, at=timezone.now())
    dash = section(dashboard_page(admin_client, f"?window={window}"))
    requests_chart = dash.split('id="dash-chart"', 1)[1].split("</svg>", 1)[0]
    titles = re.findall(
        r"<title>([^<]*): ([\d,]+) requests, ([\d,]+) failed</title>", requests_chart
    )
    assert len(titles) == {"1h": 12, "24h": 24, "30d": 30}[window]
    assert titles[-1][1] == "1"  # the current bucket is the last
    start = window_start(window)
    first = start.strftime("%Y-%m-%d (UTC)" if window == "30d" else "%Y-%m-%d %H:%M to ")
    assert titles[0][0].startswith(first)


def test_the_index_page_is_full_width_with_the_app_list_and_recent_actions(admin_client):
    page = dashboard_page(admin_client)
    assert 'id="content" class="colM"' in page  # not Django's column beside a sidebar
    assert "ops-index" in page
    assert page.index('id="operations-dashboard"') < page.index('id="content-main"')
    assert 'id="recent-actions-module"' in page


def test_the_dashboard_reads_a_bounded_number_of_queries(
    admin_client, known_rows, django_assert_max_num_queries
):
    owner = AIInteraction.objects.first().owner
    route = Route.objects.create(name="many")
    for n in range(6):  # keys, teams, models and deployments in numbers: no query per row
        provider = Provider.objects.create(name=f"p{n}", kind="openai", base_url="http://x/v1")
        Deployment.objects.create(route=route, provider=provider, model=f"m{n}")
        team = Team.objects.create(name=f"many{n}")
        api_key, _ = api_key_create(user=UserFactory(), name=f"many{n}", team=team)
        interaction(
            api_key.user, at=timezone.now(), model=f"m{n}", api_key=api_key, team=team, cost="1"
        )
        interaction(owner, at=timezone.now() - timedelta(days=2), model=f"m{n}")
    usage_rollup()
    admin_client.get("/admin/")  # the session and the worker count are read once
    with django_assert_max_num_queries(20):
        admin_client.get("/admin/?window=30d")


# --- Access and outages ---------------------------------------------------------------


def test_admin_index_redirects_anonymous_users_to_the_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_dashboard_says_unavailable_when_redis_and_the_broker_are_down(
    admin_client, known_rows, closed_port, monkeypatch
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
