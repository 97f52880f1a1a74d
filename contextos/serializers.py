"""Serializers every app shares: the error body and strict input validation."""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The error body of every ``/api/`` error response."""

    error = serializers.CharField(help_text="Human-readable message.")
    code = serializers.CharField(help_text="Stable machine-readable code.")
    details = serializers.DictField(help_text="Field errors or other context.")
    request_id = serializers.CharField(allow_null=True)


class StrictInputSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not declare, naming them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
