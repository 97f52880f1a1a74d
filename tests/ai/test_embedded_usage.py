"""Usage rollups on the embedded database (SQLite), where `make run` starts with no servers."""

import json
import subprocess
import sys

from tests.integration.conftest import ROOT, process_env

COMPARE = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from apps.ai_interactions.models import AIInteraction, HourlyUsage
from apps.ai_interactions.usage.selectors import interaction_usage
staff = get_user_model().objects.create(username="embedded-staff", is_staff=True)
now = timezone.now()
[usage] = interaction_usage(user=staff, group_by="model", start=now - timedelta(days=100), end=now)
print(json.dumps({
    "usage": usage["requests"],
    "rows": AIInteraction.objects.count(),
    "rollups": HourlyUsage.objects.count(),
}))
"""


def test_seeding_rolls_usage_up_on_the_embedded_database(tmp_path):
    env = process_env(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings.dev")
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)

    def manage(*args: str) -> str:
        command = [sys.executable, "manage.py", *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    manage("migrate", "--noinput", "-v", "0")
    manage("seed_demo_data", "--interactions", "300", "--tasks", "50", "--users", "2")
    counts = json.loads(manage("shell", "-c", COMPARE).strip().splitlines()[-1])
    assert counts["rollups"] > 0
    assert counts["usage"] == counts["rows"] == 300
