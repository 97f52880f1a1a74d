"""OpenAPI schema details of the kernel: strict input bodies refuse unknown fields."""

from drf_spectacular.extensions import OpenApiSerializerExtension


class StrictInputSerializerScheme(OpenApiSerializerExtension):
    target_class = "contextos.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}
