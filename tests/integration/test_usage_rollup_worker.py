"""A real worker runs the hourly usage rollup when beat sends it by name."""

from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from apps.ai_interactions.models import AIInteraction, HourlyUsage
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.worker


def test_worker_rolls_usage_up_by_task_name(start_worker, user):
    two_hours_ago = timezone.now() - timedelta(hours=2)
    for number in range(3):
        row = AIInteraction.objects.create(
            owner=user,
            status="succeeded",
            mode="sync",
            provider="echo",
            model="echo-1",
            messages=[{"role": "user", "content": "hi"}],
            prompt="hi",
            prompt_hash=f"{number:064d}",
            input_tokens=5,
            output_tokens=7,
            latency_ms=12.5,
        )
        AIInteraction.objects.filter(pk=row.pk).update(
            created_at=two_hours_ago, updated_at=two_hours_ago
        )
    worker = start_worker()
    result = current_app.send_task("ai_interactions.rollup_usage", queue=worker.queue)
    assert wait_for(lambda: result.ready(), timeout=60)
    assert result.get() == 1
    rolled = HourlyUsage.objects.get(owner=user)
    assert (rolled.requests, rolled.input_tokens, rolled.output_tokens) == (3, 15, 21)
    assert rolled.hour == two_hours_ago.replace(minute=0, second=0, microsecond=0)
