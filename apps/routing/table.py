"""The routing table: every route with its enabled deployments and their providers,
read from PostgreSQL once and kept in each process.

A call reads no routing row: the table is a :class:`contextos.versioned.VersionedCache`,
rebuilt when a process sees that the version in Redis (``routing:version``, bumped by
every save or deletion of a provider, route or deployment) changed, which it checks
at most every ``ROUTING_TABLE_CHECK_SECONDS``; without Redis it reloads at that pace.

On a database with no providers the release-1 settings (``OPENAI_*``,
``ANTHROPIC_*``, and the built-in echo models) create the same models as before,
as rows.
"""

import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save

from apps.routing.models import Deployment, Provider, ProviderKind, Route
from apps.routing.secrets import UnreadableKey
from contextos.versioned import VersionedCache

logger = logging.getLogger(__name__)

ECHO_MODEL = "echo-1"
# Echo's embedding model: deterministic unit vectors (any model of a provider that embeds will).
ECHO_EMBEDDING_MODEL = "echo-embed-1"
# Settings that the table built from release-1 settings depends on.
_SETTINGS = frozenset(
    {
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_MODELS",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_MODELS",
        "AI_DEFAULT_MODEL",
        "PROVIDER_KEYS_SECRET",
        "SECRET_KEY",
    }
)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float | None
    max_attempts: int | None
    extra_headers: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DeploymentConfig:
    id: str
    route: str
    provider: ProviderConfig
    model: str
    weight: int
    priority: int
    input_price_per_mtok: str
    output_price_per_mtok: str
    context_window: int | None
    rpm: int | None
    tpm: int | None

    @property
    def label(self) -> str:
        """``provider/model``, as interactions and their attempts name it."""
        return f"{self.provider.name}/{self.model}"

    def fits(self, tokens: int) -> bool:
        return self.context_window is None or tokens <= self.context_window


@dataclass(frozen=True)
class RouteConfig:
    name: str
    strategy: str
    fallbacks: tuple[str, ...]
    deployments: tuple[DeploymentConfig, ...]  # enabled ones, in priority order

    @property
    def first(self) -> DeploymentConfig | None:
        return self.deployments[0] if self.deployments else None


@dataclass(frozen=True)
class RoutingTable:
    routes: dict[str, RouteConfig]

    def get(self, name: str) -> RouteConfig | None:
        return self.routes.get(name)


_cache: VersionedCache[str, RoutingTable] = VersionedCache(
    "routing", check=lambda: settings.ROUTING_TABLE_CHECK_SECONDS
)


def routing_table() -> RoutingTable:
    """This process's routing table, reloaded when another process (or this one) changed it."""
    return _cache.get("table", lambda: RoutingTable(routes=_load()))


def routing_table_clear() -> None:
    """Forget this process's table (the next call reads the rows)."""
    _cache.clear()


def _load() -> dict[str, RouteConfig]:
    if not Provider.objects.exists():
        routing_bootstrap()
    providers: dict[str, ProviderConfig] = {}
    for provider in Provider.objects.filter(enabled=True):
        try:
            key = provider.api_key
        except UnreadableKey as error:
            logger.error("Provider %s: %s", provider.name, error)
            key = ""
        providers[provider.name] = ProviderConfig(
            name=provider.name,
            kind=provider.kind,
            base_url=provider.base_url,
            api_key=key,
            timeout=provider.timeout,
            max_attempts=provider.max_attempts,
            extra_headers=dict(provider.extra_headers or {}),
        )
    deployments: dict[str, list[DeploymentConfig]] = {}
    rows = (
        Deployment.objects.filter(enabled=True)
        .select_related("route", "provider")
        .order_by("priority", "provider__name", "model")
    )
    for row in rows:
        provider = providers.get(row.provider.name)
        if provider is None:
            continue
        deployments.setdefault(row.route.name, []).append(
            DeploymentConfig(
                id=str(row.pk),
                route=row.route.name,
                provider=provider,
                model=row.model,
                weight=row.weight,
                priority=row.priority,
                input_price_per_mtok=_price(row.input_price_per_mtok),
                output_price_per_mtok=_price(row.output_price_per_mtok),
                context_window=row.context_window,
                rpm=row.rpm,
                tpm=row.tpm,
            )
        )
    return {
        route.name: RouteConfig(
            name=route.name,
            strategy=route.strategy,
            fallbacks=tuple(name for name in route.fallbacks or () if isinstance(name, str)),
            deployments=tuple(deployments.get(route.name, ())),
        )
        for route in Route.objects.all()
    }


def _price(value: Decimal) -> str:
    """A stored price as written, without the column's trailing zeros ("2.5", "10", "0")."""
    return format(value.normalize(), "f")


# --- Release-1 settings as rows ------------------------------------------------------------


def settings_models() -> list[tuple[str, str, str, str, list[tuple[str, str, str]]]]:
    """The release-1 catalogue: ``(provider, kind, base_url, api_key, [(model, input
    price, output price)])`` for echo and each configured provider."""
    catalogue = [
        (
            "echo",
            ProviderKind.ECHO,
            "",
            "",
            [(ECHO_MODEL, "0", "0"), (ECHO_EMBEDDING_MODEL, "0", "0")],
        )
    ]
    for name, base_url, key, entries in (
        ("openai", settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.OPENAI_MODELS),
        (
            "anthropic",
            settings.ANTHROPIC_BASE_URL,
            settings.ANTHROPIC_API_KEY,
            settings.ANTHROPIC_MODELS,
        ),
    ):
        if entries:
            catalogue.append((name, name, base_url, key, [_priced(name, e) for e in entries]))
    return catalogue


def _priced(provider: str, entry: str) -> tuple[str, str, str]:
    name, _, prices = entry.partition(":")
    input_price, _, output_price = prices.partition(":")
    try:
        return name.strip(), str(Decimal(input_price or "0")), str(Decimal(output_price or "0"))
    except InvalidOperation:
        raise ValueError(f"{provider} model {entry!r}: prices must be decimals") from None


def routing_bootstrap() -> None:
    """Create the release-1 models (settings) as providers, routes and deployments.

    Runs on a database with no providers; two processes doing it at once end with
    one copy (the second finds the rows).
    """
    try:
        with transaction.atomic():
            for priority, (name, kind, base_url, key, models) in enumerate(settings_models()):
                provider = Provider(name=name, kind=kind, base_url=base_url or "")
                provider.set_api_key(key or "")
                provider.save()
                for model, input_price, output_price in models:
                    route, _ = Route.objects.get_or_create(name=model)
                    Deployment.objects.get_or_create(
                        route=route,
                        provider=provider,
                        model=model,
                        defaults={
                            "priority": priority,
                            "input_price_per_mtok": Decimal(input_price),
                            "output_price_per_mtok": Decimal(output_price),
                        },
                    )
    except IntegrityError:
        logger.info("Routing rows were created by another process meanwhile")


# --- Invalidation ---------------------------------------------------------------------------


def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in _SETTINGS or setting.startswith("ROUTING_"):
        routing_table_clear()


def connect_signals() -> None:
    for model in (Provider, Route, Deployment):
        for signal in (post_save, post_delete):
            signal.connect(
                _cache.changed, sender=model, dispatch_uid=f"routing.{model.__name__}.{signal}"
            )
    setting_changed.connect(_setting_changed, dispatch_uid="routing.settings")
