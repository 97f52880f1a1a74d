"""Limits on a key, a user or a team, and the audit log of who changed what."""

from django.conf import settings
from django.db import models

from contextos.models import BaseModel


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day (UTC)"
    WEEK = "week", "Week (UTC, from Monday)"
    MONTH = "month", "Month (UTC)"
    TOTAL = "total", "Total"


# The limit fields, as the API, the commands and the admin name them.
LIMIT_FIELDS = (
    "allowed_models",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_usd",
    "budget_period",
)


class Limits(BaseModel):
    """The limits of exactly one key, user or team; each optional (the tightest of the
    key's, its user's and its team's applies)."""

    api_key = models.OneToOneField(
        "accounts.APIKey", on_delete=models.CASCADE, null=True, blank=True, related_name="limits"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="limits",
    )
    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, null=True, blank=True, related_name="limits"
    )
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Route names or glob patterns; empty: every model."
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)
    budget_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    budget_period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )

    class Meta:
        verbose_name_plural = "limits"
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(api_key__isnull=False, user__isnull=True, team__isnull=True)
                    | models.Q(api_key__isnull=True, user__isnull=False, team__isnull=True)
                    | models.Q(api_key__isnull=True, user__isnull=True, team__isnull=False)
                ),
                name="limits_of_one_holder",
            )
        ]

    def __str__(self) -> str:
        if self.api_key_id:
            return f"limits of key {self.api_key}"
        if self.user_id:
            return f"limits of user {self.user}"
        return f"limits of team {self.team}"


class AuditEntry(models.Model):
    """One change staff or a user made (a limit, a key, a retry...): who, what, the values
    before and after, and the request it came from. Written only by services."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: a command or the system.",
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-at"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type} {self.target_repr or self.target_id}"
