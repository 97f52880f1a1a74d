"""The models ContextOS can call: the routes of the routing table (``apps.routing``),
as clients see them, and their prices."""

from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings

from apps.ai_interactions.providers.base import ModelInfo
from apps.governance.limits import model_allowed, scopes_for
from apps.routing.table import (
    ECHO_EMBEDDING_MODEL,
    ECHO_MODEL,
    RouteConfig,
    routing_table,
)
from contextos.exceptions import ValidationFailed

__all__ = [
    "ECHO_EMBEDDING_MODEL",
    "ECHO_MODEL",
    "UnknownModel",
    "cost_usd",
    "model_list",
    "model_list_for",
    "route_get",
]


def model_list() -> list[ModelInfo]:
    """Every route clients can ask for, with its first deployment's provider and prices;
    the default one is marked."""
    models = []
    for route in sorted(routing_table().routes.values(), key=lambda r: r.name):
        first = route.first
        if first is None and not route.fallbacks:
            continue
        models.append(
            ModelInfo(
                first.provider.name if first else "",
                route.name,
                first.input_price_per_mtok if first else "0",
                first.output_price_per_mtok if first else "0",
                default=route.name == settings.AI_DEFAULT_MODEL,
            )
        )
    return models


def model_list_for(*, api_key: Any, user: Any) -> list[ModelInfo]:
    """The models a key (or a user without one) may call: the one scope check that
    also guards every call (:func:`apps.governance.limits.check_model`)."""
    scopes = scopes_for(api_key=api_key, user=user)
    return [model for model in model_list() if model_allowed(scopes, model.model)]


class UnknownModel(ValidationFailed):
    """No route has that name (a 400 on the REST API, a 404 on ``/v1``)."""


def route_get(name: str | None) -> RouteConfig:
    """The route called ``name`` (the default when None); unknown names are a 400."""
    name = name or settings.AI_DEFAULT_MODEL
    route = routing_table().get(name)
    if route is None or (route.first is None and not route.fallbacks):
        raise UnknownModel(
            f"Unknown model {name!r}.",
            details={"model": [f"Unknown model {name!r}; see /api/v1/ai/models/."]},
        )
    return route


class _Priced(Protocol):
    input_price_per_mtok: str
    output_price_per_mtok: str


def cost_usd(priced: _Priced, *, input_tokens: int, output_tokens: int) -> Decimal:
    per_token = Decimal(1_000_000)
    return (
        Decimal(input_tokens) * Decimal(priced.input_price_per_mtok)
        + Decimal(output_tokens) * Decimal(priced.output_price_per_mtok)
    ) / per_token
