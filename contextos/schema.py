"""OpenAPI schema details of the kernel: strict input bodies refuse unknown fields, item
ids are UUIDs, error responses share one body."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.serializers import Serializer

from contextos.serializers import ErrorSerializer

# The id of an item route. The route takes any segment (see contextos.views), so
# the schema would say "any string"; what a client should send is a UUID.
ITEM_ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The object's UUID; any other value names no object (404).",
)


def error_responses(
    *codes: int, serializer: type[Serializer] = ErrorSerializer
) -> dict[int, type[Serializer]]:
    """``responses`` entries of ``@extend_schema``: each status in ``codes`` answers
    ``serializer``'s body (the one error body of ``/api/`` unless told otherwise)."""
    return dict.fromkeys(codes, serializer)


class StrictInputSerializerScheme(OpenApiSerializerExtension):
    target_class = "contextos.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}
