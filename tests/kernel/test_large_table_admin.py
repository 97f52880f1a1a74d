"""Changelists of large tables: date drill-down from bounds, owner filter, sorting, counts."""

import re
from datetime import UTC, datetime

import pytest
from django.db import connection

from apps.operations.demo_data import seed_interactions
from apps.tasks.models import Task
from contextos.admin import EstimatedCountPaginator
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TASKS = "/admin/tasks/task/"
INTERACTIONS = "/admin/ai_interactions/aiinteraction/"


def task(owner, at):
    row = Task.objects.create(owner=owner, type="diagnostics.sleep", status="succeeded")
    Task.objects.filter(pk=row.pk).update(created_at=at)
    return row


@pytest.fixture
def dated_tasks(user):
    return [
        task(user, datetime(2025, 3, 4, 10, tzinfo=UTC)),
        task(user, datetime(2025, 3, 9, 23, tzinfo=UTC)),
        task(user, datetime(2025, 6, 1, 1, tzinfo=UTC)),
    ]


def drill_titles(page: str) -> list[str]:
    """The periods offered by the date hierarchy (not its link back up)."""
    hierarchy = page.split('<nav class="toplinks">')[1].split("</nav>")[0]
    return [title.strip() for title in re.findall(r'<a href="[^"]*">([^<]+)</a>', hierarchy)]


def test_date_hierarchy_offers_every_period_between_the_first_and_last_row(
    admin_client, dated_tasks
):
    titles = drill_titles(admin_client.get(TASKS).content.decode())
    assert titles == ["March 2025", "April 2025", "May 2025", "June 2025"]
    in_march = admin_client.get(TASKS + "?created_at__year=2025&created_at__month=3")
    assert drill_titles(in_march.content.decode()) == [f"March {day}" for day in range(4, 10)]
    one_day = admin_client.get(
        TASKS + "?created_at__year=2025&created_at__month=3&created_at__day=9"
    )
    assert one_day.context["cl"].result_count == 1


def test_owner_filter_lists_only_owners_of_rows(admin_client, dated_tasks, user):
    idle = UserFactory(username="idle-user")
    page = admin_client.get(TASKS).content.decode()
    assert f"?owner__id__exact={user.pk}" in page
    assert f"?owner__id__exact={idle.pk}" not in page
    task(idle, datetime(2025, 3, 5, tzinfo=UTC))
    response = admin_client.get(f"{TASKS}?owner__id__exact={user.pk}")
    assert response.context["cl"].result_count == 3


def test_no_facet_counts_over_the_whole_table(admin_client, dated_tasks):
    page = admin_client.get(TASKS + "?_facets=True").content.decode()
    assert "Hide counts" not in page
    assert "Show counts" not in page
    assert "(3)" not in page


def test_lists_sort_only_by_creation_time(admin_client, dated_tasks):
    newest_first = [row.pk for row in reversed(dated_tasks)]
    status_column = 4  # action checkbox, id, type, owner, status
    response = admin_client.get(f"{TASKS}?o={status_column}")
    assert [row.pk for row in response.context["cl"].result_list] == newest_first
    oldest_first = admin_client.get(f"{TASKS}?o=7")  # created_at
    assert [row.pk for row in oldest_first.context["cl"].result_list] == newest_first[::-1]


def test_large_filtered_lists_take_the_planner_estimate(admin_client, user, monkeypatch):
    seed_interactions(count=2000, owners=[user])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ai_interactions_aiinteraction")
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_BELOW", 500)
    response = admin_client.get(INTERACTIONS + "?status__exact=succeeded")
    exact = response.context["cl"].queryset.count()
    assert exact > 500
    assert response.context["cl"].result_count == pytest.approx(exact, rel=0.2)
    nobody = admin_client.get(INTERACTIONS + "?q=no-such-user")
    assert nobody.status_code == 200
    assert nobody.context["cl"].result_count == 0
