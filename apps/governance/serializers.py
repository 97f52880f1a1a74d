"""Input and output shapes of the self-service keys API."""

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from apps.accounts.models import APIKey
from apps.governance.models import LIMIT_FIELDS, BudgetPeriod
from apps.governance.services import MAX_BUDGET, MAX_LIMIT
from contextos.serializers import StrictInputSerializer, decimal_string, iso_datetime


class ModelPatternField(serializers.CharField):
    """A route name or glob pattern: a non-empty string (numbers are not names)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _limit(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=MAX_LIMIT, allow_null=True, required=False, help_text=help_text
    )


class KeyLimitsInputSerializer(StrictInputSerializer):
    allowed_models = serializers.ListField(
        child=ModelPatternField(max_length=200),
        allow_null=True,
        required=False,
        max_length=200,
        help_text="Route names or glob patterns (`gpt-4o*`); empty or null: no limit.",
    )
    rpm_limit = _limit("Requests per minute.")
    tpm_limit = _limit("Tokens per minute.")
    max_parallel_requests = _limit("Requests in progress at once.")
    budget_usd = serializers.DecimalField(
        max_digits=14,
        decimal_places=6,
        min_value=Decimal(0),
        max_value=MAX_BUDGET,
        allow_null=True,
        required=False,
        help_text="Dollars the key may spend per `budget_period`.",
    )
    budget_period = serializers.ChoiceField(
        choices=BudgetPeriod.choices,
        allow_null=True,
        required=False,
        help_text="The budget's period (UTC); `month` unless given. Needs `budget_usd`.",
    )

    def limits(self) -> dict[str, Any]:
        """The limit fields the client sent."""
        return {f: v for f, v in self.validated_data.items() if f in LIMIT_FIELDS}


class KeyCreateSerializer(KeyLimitsInputSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    team = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="One of your teams' ids."
    )


class KeyUpdateSerializer(KeyLimitsInputSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


# Fields declared for the schema; ``to_representation`` writes them out (a key joins
# its limits row and its spend, which the view passes in ``context["spend"]``).
class KeySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters, to recognise it.")
    team = serializers.UUIDField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField(), allow_null=True)
    rpm_limit = serializers.IntegerField(allow_null=True)
    tpm_limit = serializers.IntegerField(allow_null=True)
    max_parallel_requests = serializers.IntegerField(allow_null=True)
    budget_usd = serializers.DecimalField(max_digits=14, decimal_places=6, allow_null=True)
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, allow_null=True)
    spend_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=8,
        help_text="Spent in the current budget period (the month when the key has no budget).",
    )

    def to_representation(self, api_key: APIKey) -> dict[str, Any]:
        limits = getattr(api_key, "limits", None)
        budget = None if limits is None else limits.budget_usd
        return {
            "id": str(api_key.pk),
            "name": api_key.name,
            "prefix": api_key.prefix,
            "team": None if api_key.team_id is None else str(api_key.team_id),
            "expires_at": iso_datetime(api_key.expires_at),
            "revoked_at": iso_datetime(api_key.revoked_at),
            "created_at": iso_datetime(api_key.created_at),
            "last_used_at": iso_datetime(api_key.last_used_at),
            "allowed_models": (list(limits.allowed_models) or None) if limits else None,
            "rpm_limit": limits.rpm_limit if limits else None,
            "tpm_limit": limits.tpm_limit if limits else None,
            "max_parallel_requests": limits.max_parallel_requests if limits else None,
            "budget_usd": decimal_string(budget, max_digits=14, decimal_places=6),
            "budget_period": None if budget is None else limits.budget_period,
            "spend_usd": decimal_string(
                self.context["spend"].get(api_key.pk, Decimal(0)), max_digits=20, decimal_places=8
            ),
        }


class KeyCreatedSerializer(KeySerializer):
    key = serializers.CharField(help_text="The raw key: shown in this answer only.")

    def to_representation(self, api_key: APIKey) -> dict[str, Any]:
        return {**super().to_representation(api_key), "key": self.context["raw_key"]}
