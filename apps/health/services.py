"""Writes of the health domain."""

import logging

from django.utils import timezone

from apps.health.models import ServiceHeartbeat

logger = logging.getLogger(__name__)

BEAT = "beat"


def heartbeat_record(*, name: str = BEAT) -> ServiceHeartbeat:
    heartbeat, _ = ServiceHeartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now()}
    )
    logger.info("Heartbeat recorded for %s", name)
    return heartbeat
