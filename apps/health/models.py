"""Heartbeats of the processes the web tier cannot see directly (beat)."""

from django.db import models


class ServiceHeartbeat(models.Model):
    name = models.CharField(max_length=50, primary_key=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at.isoformat()}"
