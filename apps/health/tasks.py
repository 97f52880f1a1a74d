"""Periodic tasks of the health domain."""

from celery import shared_task

from apps.health.services import heartbeat_record


@shared_task(name="health.beat_heartbeat", ignore_result=False)
def beat_heartbeat() -> str:
    """Scheduled every minute by beat: its age tells whether beat and a worker are alive."""
    return heartbeat_record().beat_at.isoformat()
