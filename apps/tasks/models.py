"""Background tasks: the row is the source of truth for the API, not the broker."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from contextos.models import BaseModel


class TaskStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
RETRYABLE_STATUSES = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class Task(BaseModel):
    """One unit of background work submitted through the API, and its current attempt."""

    # Lookups by owner use the composite indexes below, which start with it.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    # The API key that submitted it: its limits and model scope govern the task's calls.
    api_key = models.ForeignKey(
        "accounts.APIKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    type = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    progress = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(
        null=True, blank=True, help_text='{"message": ..., "type": ...} when the task failed.'
    )
    error_traceback = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=1)
    # NULL, not "", when absent: the per-owner uniqueness applies to given keys only.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, editable=False)
    celery_task_id = models.CharField(max_length=255)
    worker = models.CharField(
        max_length=255, blank=True, help_text="The worker process running the current attempt."
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the running attempt."
    )
    dispatch_pending = models.BooleanField(
        default=False, help_text="Its Celery message could not be published yet."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="task_owner_created"),
            models.Index(fields=["owner", "status", "-created_at"], name="task_owner_status"),
            models.Index(fields=["status", "-created_at"], name="task_status_created"),
            models.Index(fields=["type", "-created_at"], name="task_type_created"),
            models.Index(fields=["-created_at"], name="task_created"),
            # Exact matches only (admin search, result links): no LIKE pattern index.
            models.Index(fields=["celery_task_id"], name="task_celery_task_id"),
            models.Index(
                fields=["started_at"],
                condition=Q(status="running"),
                name="task_running_started",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="queued"),
                name="task_queued_created",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_owner_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class TaskAttempt(models.Model):
    """A finished attempt of a task that was retried: its history stays visible."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=TaskStatus.choices)
    progress = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    error_traceback = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="taskattempt_task_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.task_id} ({self.status})"
