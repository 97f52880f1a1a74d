"""Periodic tasks of the health domain."""

from typing import Any

from apps.health.services import heartbeat_record
from contextos.jobs import periodic_job


@periodic_job("health.beat_heartbeat", lock_seconds=50)
def beat_heartbeat() -> str:
    """Scheduled every minute by beat: its age tells whether beat and a worker are alive."""
    return heartbeat_record().beat_at.isoformat()


def send_heartbeat_on_beat_start(**_: Any) -> None:
    """Beat's first scheduled heartbeat is a minute away; report liveness at once."""
    beat_heartbeat.apply_async(expires=60)
