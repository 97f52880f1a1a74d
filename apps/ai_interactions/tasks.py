"""Celery entry points of the AI domain."""

from celery import shared_task

from apps.ai_interactions.services import usage_rollup


@shared_task(name="ai_interactions.rollup_usage", acks_late=True, reject_on_worker_lost=True)
def rollup_usage() -> int:
    """Roll closed hours of interactions up into hourly usage (scheduled hourly; idempotent)."""
    return usage_rollup()
