"""Providers, routes and deployments: which upstream answers a model name, as data."""

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from apps.routing import secrets
from contextos.models import BaseModel


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic Messages"
    ECHO = "echo", "Echo (built in)"


class Strategy(models.TextChoices):
    PRIORITY = "priority", "Priority (in order)"
    WEIGHTED = "weighted", "Weighted (spread by weight)"
    LATENCY = "latency", "Latency (fastest recent first)"


class Provider(BaseModel):
    """An upstream server and its credentials. The API key is stored encrypted
    (:mod:`apps.routing.secrets`) and shown only as its last four characters."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    base_url = models.CharField(max_length=500, blank=True)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_last_four = models.CharField(max_length=8, blank=True, editable=False)
    timeout = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds per attempt; empty: AI_PROVIDER_TIMEOUT.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Attempts per deployment before moving on; empty: AI_PROVIDER_MAX_ATTEMPTS.",
    )
    extra_headers = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return secrets.decrypt(self.api_key_encrypted)

    def set_api_key(self, value: str) -> None:
        self.api_key_encrypted = secrets.encrypt(value)
        self.api_key_last_four = secrets.last_four(value)


class Route(BaseModel):
    """The public model name clients ask for, how its deployments are chosen, and the
    routes to try (in order) when every one of them fails."""

    name = models.CharField(max_length=200, unique=True)
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.PRIORITY)
    fallbacks = models.JSONField(
        default=list, blank=True, help_text="Names of other routes, tried in order."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(BaseModel):
    """One upstream model of one provider serving a route, with its prices and limits."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="deployments")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    model = models.CharField(max_length=200, help_text="The model id the provider knows.")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    priority = models.IntegerField(default=0, help_text="Under 'priority', lower is tried first.")
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    context_window = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens; empty: no limit known."
    )
    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute cap.")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute cap.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["route__name", "priority", "provider__name", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "provider", "model"], name="deployment_route_provider_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.route_id and self.route.name}: {self.label}"

    @property
    def label(self) -> str:
        """``provider/model``, as interactions and their attempts name it."""
        return f"{self.provider.name}/{self.model}"
