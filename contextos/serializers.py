"""Serializers every app shares: the error body, strict input validation, and the
value formats of hand-written representations."""

from collections.abc import Mapping
from datetime import datetime
from decimal import Context, Decimal
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from contextos.parsers import json_strings

NULL_CHARACTER_MESSAGE = "Null characters are not allowed."


class ErrorSerializer(serializers.Serializer):
    """The error body of every ``/api/`` error response."""

    error = serializers.CharField(help_text="Human-readable message.")
    code = serializers.CharField(help_text="Stable machine-readable code.")
    details = serializers.DictField(help_text="Field errors or other context.")
    request_id = serializers.CharField(allow_null=True)


class StrictInputSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not declare, naming them, and null
    characters anywhere in a field's value."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            # PostgreSQL text and JSON columns cannot hold U+0000, in any field or key.
            with_null = sorted(name for name, value in data.items() if has_null_character(value))
            if with_null:
                raise serializers.ValidationError(
                    {name: [NULL_CHARACTER_MESSAGE] for name in with_null}
                )
        return super().to_internal_value(data)


def has_null_character(value: Any) -> bool:
    return any("\x00" in text for text in json_strings(value))


# Hand-written ``to_representation`` methods (responses built on every request)
# write values as DRF's fields would; their tests compare them with DRF's output.


def iso_datetime(value: datetime | None) -> str | None:
    """As ``DateTimeField``: ISO 8601 in the current time zone, ``Z`` for UTC."""
    if not value:
        return None
    if timezone.is_aware(value):
        value = value.astimezone(timezone.get_current_timezone())
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def decimal_string(value: Decimal | None, *, max_digits: int, decimal_places: int) -> str | None:
    """As ``DecimalField(max_digits, decimal_places)``: a fixed-point string."""
    if value is None:
        return None
    quantum = Decimal(1).scaleb(-decimal_places)
    return f"{Decimal(value).quantize(quantum, context=Context(prec=max_digits)):f}"
