"""Every call to an AI provider, recorded: what was asked, what came back, what it cost."""

from decimal import Decimal

from django.conf import settings
from django.db import models

from contextos.models import BaseModel


class InteractionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED_STATUSES = (InteractionStatus.SUCCEEDED, InteractionStatus.FAILED)


class InteractionMode(models.TextChoices):
    SYNC = "sync"
    ASYNC = "async"
    BATCH = "batch"
    GATEWAY = "gateway"


class AIInteraction(BaseModel):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ai_interactions"
    )
    api_key = models.ForeignKey(
        "accounts.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task = models.ForeignKey(
        "tasks.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=InteractionStatus.choices, default=InteractionStatus.QUEUED
    )
    mode = models.CharField(max_length=16, choices=InteractionMode.choices)
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=200)
    messages = models.JSONField()
    params = models.JSONField(default=dict, blank=True)
    prompt = models.TextField(help_text="Every message's content, for search and display.")
    prompt_hash = models.CharField(max_length=64, help_text="Digest of the cache key.")
    response = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=50, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    latency_ms = models.FloatField(null=True, blank=True)
    cached = models.BooleanField(default=False)
    error = models.JSONField(null=True, blank=True)
    provider_error_type = models.CharField(max_length=50, blank=True)
    provider_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.JSONField(default=list, blank=True, help_text="Each call to the provider.")
    metadata = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "AI interaction"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="ai_owner_created"),
            models.Index(fields=["-created_at"], name="ai_created"),
            models.Index(fields=["status", "-created_at"], name="ai_status_created"),
            models.Index(fields=["model", "-created_at"], name="ai_model_created"),
            models.Index(fields=["prompt_hash"], name="ai_prompt_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.id} ({self.status})"
