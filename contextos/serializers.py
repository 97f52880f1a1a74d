"""Serializers every app shares: the error body and strict input validation."""

from collections.abc import Mapping
from typing import Any

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
