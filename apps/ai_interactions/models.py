"""Every call to an AI provider, recorded: what was asked, what came back, what it cost."""

from concurrent.futures import Future
from decimal import Decimal
from typing import Any

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


class InteractionKind(models.TextChoices):
    CHAT = "chat"
    EMBEDDING = "embedding"


class AIInteraction(BaseModel):
    # Lookups by owner use ai_owner_created, which starts with it.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="ai_interactions",
        db_index=False,
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
    # A default in the database too: rows written by SQL (bulk seeding) are chat calls.
    kind = models.CharField(
        max_length=16,
        choices=InteractionKind.choices,
        default=InteractionKind.CHAT,
        db_default=InteractionKind.CHAT,
    )
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200, help_text="The route (model name) asked for.")
    # Which deployment (``provider/model``) answered, and whether a fallback route did.
    deployment = models.CharField(max_length=300, blank=True, default="", db_default="")
    fallback = models.BooleanField(default=False, db_default=False)
    # The key's team when it was called, and the tags the caller gave (attribution).
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    tags = models.JSONField(default=list, blank=True, db_default=[])
    # While running: the worst-case cost reserved against budgets (a spend rebuilt from
    # PostgreSQL counts it); 0 once the call has ended.
    reserved_usd = models.DecimalField(
        max_digits=14, decimal_places=8, default=Decimal(0), db_default=Decimal(0)
    )
    messages = models.JSONField()
    params = models.JSONField(default=dict, blank=True)
    prompt = models.TextField(help_text="Every message's content, for search and display.")
    prompt_hash = models.CharField(max_length=64, help_text="Digest of the cache key.")
    response = models.TextField(blank=True, help_text="The answer's text (empty for a tool call).")
    response_message = models.JSONField(
        null=True,
        blank=True,
        help_text="The whole answer message: content, tool_calls, refusal.",
    )
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

    # The whole completion (every choice, usage details) of the call that just answered,
    # in OpenAI's shape; not stored: what the gateway sends back.
    completion: dict | None = None
    # OpenAI's ``x-ratelimit-*`` headers of the limits the call counted against; not stored.
    rate_limit_headers: dict[str, str] | None = None
    # The write of the row as running, while it is under way on another thread; not stored.
    announced: Future | None = None
    # The check of an API key taken on trust, sent with the call's admission
    # (:class:`apps.accounts.key_cache.KeyConfirmation`); not stored.
    key_confirmation: Any = None

    class Meta:
        verbose_name = "AI interaction"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="ai_owner_created"),
            models.Index(fields=["-created_at"], name="ai_created"),
            models.Index(fields=["status", "-created_at"], name="ai_status_created"),
            models.Index(fields=["model", "-created_at"], name="ai_model_created"),
            models.Index(fields=["prompt_hash"], name="ai_prompt_hash"),
            # The usage rollup finds the hours whose rows changed since it last ran.
            models.Index(fields=["updated_at"], name="ai_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.id} ({self.status})"


# Upper bounds (ms) of the latency histogram kept per hour; the last bucket is open.
LATENCY_BUCKET_BOUNDS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LATENCY_BUCKETS = (
    *(f"latency_under_{bound}ms" for bound in LATENCY_BUCKET_BOUNDS_MS),
    f"latency_{LATENCY_BUCKET_BOUNDS_MS[-1]}ms_or_more",
)


class UsageSums(models.Model):
    """What a group of interactions in one closed hour sums to (the rollups' columns).

    The latency histogram (one count per ``LATENCY_BUCKETS`` field) lets a p95
    be estimated from rollups. Counts are 32-bit (summed faster than 64-bit);
    token sums are 64-bit.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    deployment = models.CharField(max_length=300, default="", db_default="")
    # The interactions' key and team ids, kept (not cascaded) when the key or team is deleted:
    # rolled-up hours keep counting them, as they keep counting deleted interactions.
    api_key_id = models.UUIDField(null=True, blank=True)
    team_id = models.UUIDField(null=True, blank=True)
    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    requests = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cached = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    latency_min_ms = models.FloatField(null=True, blank=True)
    latency_max_ms = models.FloatField(null=True, blank=True)
    latency_under_1ms = models.PositiveIntegerField(default=0)
    latency_under_5ms = models.PositiveIntegerField(default=0)
    latency_under_10ms = models.PositiveIntegerField(default=0)
    latency_under_25ms = models.PositiveIntegerField(default=0)
    latency_under_50ms = models.PositiveIntegerField(default=0)
    latency_under_100ms = models.PositiveIntegerField(default=0)
    latency_under_250ms = models.PositiveIntegerField(default=0)
    latency_under_500ms = models.PositiveIntegerField(default=0)
    latency_under_1000ms = models.PositiveIntegerField(default=0)
    latency_under_2500ms = models.PositiveIntegerField(default=0)
    latency_under_5000ms = models.PositiveIntegerField(default=0)
    latency_under_10000ms = models.PositiveIntegerField(default=0)
    latency_under_30000ms = models.PositiveIntegerField(default=0)
    latency_30000ms_or_more = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        abstract = True


class HourlyUsage(UsageSums):
    """One owner's interactions with one model, through one key, in one closed hour, summed.

    Written only by the usage rollup; usage reads these for closed hours and
    the interactions themselves for the rest. A key or team that is NULL never
    conflicts in the unique constraint: the rollup writes such a group afresh
    and drops its previous row with every row of the hour it did not write.
    """

    class Meta:
        verbose_name_plural = "hourly usage"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "owner",
                    "provider",
                    "model",
                    "deployment",
                    "api_key_id",
                    "team_id",
                    "hour",
                ],
                name="hourly_usage_unique",
            )
        ]
        indexes = [models.Index(fields=["hour"], name="hourly_usage_hour")]

    def __str__(self) -> str:
        return f"{self.model} {self.hour:%Y-%m-%d %H:00} ({self.requests})"


class HourlyTagUsage(UsageSums):
    """``HourlyUsage`` per tag: an interaction with several tags counts once under each.

    Usage grouped by tag, or filtered by one, reads these for closed hours.
    """

    # Text, as tags have no length limit: a longer one must not fail the rollup.
    tag = models.TextField()

    class Meta:
        verbose_name_plural = "hourly tag usage"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "owner",
                    "provider",
                    "model",
                    "deployment",
                    "api_key_id",
                    "team_id",
                    "tag",
                    "hour",
                ],
                name="hourly_tag_usage_unique",
            )
        ]
        indexes = [models.Index(fields=["hour"], name="hourly_tag_usage_hour")]

    def __str__(self) -> str:
        return f"{self.tag} {self.model} {self.hour:%Y-%m-%d %H:00} ({self.requests})"


class UsageRollupState(models.Model):
    """Where the usage rollup stands (one row, none before its first run).

    Every hour before ``rolled_up_to`` is in ``HourlyUsage`` as its
    interactions stood when the rollup ran at ``ran_at``.
    """

    rolled_up_to = models.DateTimeField(null=True, blank=True)
    ran_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"usage rolled up to {self.rolled_up_to}"
