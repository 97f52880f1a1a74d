"""seed_demo_data: bulk demo interactions and tasks, spread out, with usage rolled up."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction, HourlyUsage, UsageRollupState
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db


def test_seeds_interactions_and_tasks_spread_over_owners_statuses_and_days(capsys):
    call_command("seed_demo_data", interactions=3000, tasks=2000, users=3)
    assert "Inserted 3000 interactions for 3 users" in capsys.readouterr().out
    assert AIInteraction.objects.count() == 3000
    assert Task.objects.count() == 2000
    for model in (AIInteraction, Task):
        assert model.objects.values("owner").distinct().count() == 3
        assert model.objects.values("status").distinct().count() >= 3
        oldest = model.objects.earliest("created_at").created_at
        assert timezone.now() - oldest > timedelta(days=60)
        assert model.objects.filter(updated_at__lt=timezone.now() - timedelta(days=1)).exists()
    assert Task.objects.values("type").distinct().count() >= 3
    assert Task.objects.filter(status="failed", error__isnull=False).exists()

    closed = AIInteraction.objects.filter(
        created_at__lt=UsageRollupState.objects.get().rolled_up_to
    )
    assert HourlyUsage.objects.aggregate(total=Sum("requests"))["total"] == closed.count()


def test_needs_something_to_seed():
    with pytest.raises(CommandError):
        call_command("seed_demo_data")
