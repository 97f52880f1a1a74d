"""Describes API key authentication in the OpenAPI schema: a Bearer key, or ``x-api-key``."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

KEY_SHAPE = "An API key: `ctx_` followed by at least 32 letters and digits."


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.APIKeyAuthentication"
    name = ["apiKey", "apiKeyHeader"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list]]:
        # Either one: the two are alternatives, not a pair sent together.
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "bearer", "description": KEY_SHAPE},
            {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": f"{KEY_SHAPE} Used when there is no `Authorization` header "
                "(as Anthropic's clients send it).",
            },
        ]
