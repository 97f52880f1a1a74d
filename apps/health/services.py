"""Writes of the health domain."""

from django.utils import timezone

from apps.health.models import ServiceHeartbeat

BEAT = "beat"


def heartbeat_record(*, name: str = BEAT) -> ServiceHeartbeat:
    heartbeat, _ = ServiceHeartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now()}
    )
    return heartbeat
