"""Celery entry points of the AI domain."""

from apps.ai_interactions.usage.services import usage_rollup
from contextos.jobs import periodic_job


@periodic_job("ai_interactions.rollup_usage", lock_seconds=3300)
def rollup_usage() -> int:
    """Roll closed hours of interactions up into hourly usage (scheduled hourly; idempotent)."""
    return usage_rollup()
