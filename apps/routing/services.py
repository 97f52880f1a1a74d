"""Writes of the routing tables: making them match a file (``manage.py sync_models``), and
saving or deleting one provider, route or deployment (the admin).

Every row created, changed or removed is recorded in the audit log with its values before
and after; a provider's key never is: only that it changed, and its last four characters.

The file (YAML, see ``docs/models.example.yaml``) lists providers and routes, each
route with its deployments. A provider's ``api_key`` may only be an
``os.environ/NAME`` reference, read when the file is synced: keys are never written
in the file, never printed (a changed key prints "api key changed"), and stored
encrypted (:mod:`apps.routing.secrets`).

Fields a file leaves out take their defaults: the file says what each row it lists
is. Rows the file lacks are kept, unless ``prune`` (then they are removed, the
built-in echo provider and its routes included).
"""

import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.governance.audit import audit_record
from apps.routing.models import Deployment, Provider, ProviderKind, Route, Strategy
from apps.routing.secrets import UnreadableKey
from apps.routing.table import routing_bootstrap
from contextos.exceptions import ValidationFailed

NO_CHANGES = "No changes."
ENV_PREFIX = "os.environ/"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")

_TOP_KEYS = ("providers", "routes")
_PROVIDER_KEYS = (
    "name",
    "kind",
    "base_url",
    "api_key",
    "timeout",
    "max_attempts",
    "extra_headers",
    "enabled",
)
_ROUTE_KEYS = ("name", "strategy", "fallbacks", "deployments")
_DEPLOYMENT_KEYS = (
    "provider",
    "model",
    "weight",
    "priority",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "context_window",
    "rpm",
    "tpm",
    "enabled",
)
# Prices: the columns' precision (12 digits, 6 after the point).
_PRICE_PLACES = Decimal("0.000001")
_PRICE_LIMIT = Decimal(10) ** 6


class ModelsFileInvalid(ValidationFailed):
    """The file cannot be synced; ``errors`` lists every problem found (nothing is written)."""

    code = "invalid_models_file"

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors), details={"errors": errors})


@dataclass
class _ProviderSpec:
    name: str
    kind: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float | None
    max_attempts: int | None
    extra_headers: dict[str, str]
    enabled: bool


@dataclass
class _DeploymentSpec:
    provider: str
    model: str
    weight: int
    priority: int
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    context_window: int | None
    rpm: int | None
    tpm: int | None
    enabled: bool


@dataclass
class _RouteSpec:
    name: str
    strategy: str
    fallbacks: list[str]
    deployments: list[_DeploymentSpec]


# Compared and copied as they are (the key and extra headers are handled apart).
_PROVIDER_FIELDS = ("kind", "base_url", "timeout", "max_attempts", "enabled")
_ROUTE_FIELDS = ("strategy", "fallbacks")
_DEPLOYMENT_FIELDS = (
    "weight",
    "priority",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "context_window",
    "rpm",
    "tpm",
    "enabled",
)


def models_sync(
    document: Any,
    *,
    dry_run: bool = False,
    prune: bool = False,
    actor: AbstractBaseUser | None = None,
) -> list[str]:
    """Make providers, routes and deployments match ``document`` (a parsed models file).

    Returns one line per row created, changed or removed, or ``["No changes."]``.
    Raises :class:`ModelsFileInvalid` (nothing written) when the document is not valid,
    names an unknown provider or route, writes a key in the file, or references an
    environment variable that is not set. With ``dry_run`` the lines are the same and
    nothing is written (nor audited); every write happens in one transaction, each row
    changed recorded in the audit log as done by ``actor`` (None: the command).
    """
    with transaction.atomic():
        if not Provider.objects.exists():
            # The built-in echo models (and release-1 settings) exist, so they are kept.
            routing_bootstrap()
        providers, routes = _parse(document, prune=prune)
        lines = _apply(providers, routes, prune=prune, actor=actor)
        if dry_run:
            transaction.set_rollback(True)
    return lines or [NO_CHANGES]


# --- Reading the document -------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}")


def _parse(document: Any, *, prune: bool) -> tuple[list[_ProviderSpec], list[_RouteSpec]]:
    errors = _Errors()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ModelsFileInvalid(["the file must be a mapping with 'providers' and 'routes'"])
    _unknown_keys(errors, "the file", document, _TOP_KEYS)
    provider_items = _list_of_mappings(errors, "providers", document.get("providers"))
    route_items = _list_of_mappings(errors, "routes", document.get("routes"))

    providers: list[_ProviderSpec] = []
    for index, item in enumerate(provider_items):
        spec = _provider(errors, index, item)
        if spec is not None:
            if any(other.name == spec.name for other in providers):
                errors.add(f"provider {spec.name}", "listed more than once")
            providers.append(spec)

    routes: list[_RouteSpec] = []
    for index, item in enumerate(route_items):
        spec = _route(errors, index, item)
        if spec is not None:
            if any(other.name == spec.name for other in routes):
                errors.add(f"route {spec.name}", "listed more than once")
            routes.append(spec)

    # Names a deployment or a fallback may use: the file's, and (without prune) the
    # rows the sync keeps.
    known_providers = {p.name for p in providers}
    known_routes = {r.name for r in routes}
    if not prune:
        known_providers |= set(Provider.objects.values_list("name", flat=True))
        known_routes |= set(Route.objects.values_list("name", flat=True))
    for route in routes:
        for fallback in route.fallbacks:
            if fallback == route.name:
                errors.add(f"route {route.name}", "a route cannot be its own fallback")
            elif fallback not in known_routes:
                errors.add(f"route {route.name}", f"fallback {fallback!r} is not a known route")
        for deployment in route.deployments:
            if deployment.provider not in known_providers:
                errors.add(
                    f"route {route.name}",
                    f"deployment {deployment.model!r} names an unknown provider "
                    f"{deployment.provider!r}",
                )
    if errors.messages:
        raise ModelsFileInvalid(errors.messages)
    return providers, routes


def _unknown_keys(errors: _Errors, where: str, item: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(key) for key in item if key not in allowed)
    if unknown:
        errors.add(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(expected: {', '.join(allowed)})",
        )


def _list_of_mappings(errors: _Errors, where: str, value: Any) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(where, "must be a list")
        return []
    items = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            items.append(item)
        else:
            errors.add(f"{where}[{index}]", "must be a mapping")
    return items


def _name(errors: _Errors, where: str, item: dict, key: str, max_length: int) -> str | None:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        errors.add(where, f"'{key}' is required (text)")
        return None
    if len(value) > max_length:
        errors.add(where, f"'{key}' is longer than {max_length} characters")
        return None
    return value


def _provider(errors: _Errors, index: int, item: dict) -> _ProviderSpec | None:
    where = f"providers[{index}]"
    name = _name(errors, where, item, "name", 64)
    if name is not None:
        where = f"provider {name}"
        if not _SLUG.fullmatch(name):
            errors.add(where, "'name' may only hold letters, digits, '-' and '_'")
    count = len(errors.messages)
    _unknown_keys(errors, where, item, _PROVIDER_KEYS)
    kind = item.get("kind")
    if kind not in ProviderKind.values:
        errors.add(where, f"'kind' must be one of {', '.join(ProviderKind.values)}")
    base_url = item.get("base_url") or ""
    if not isinstance(base_url, str) or len(base_url) > 500:
        errors.add(where, "'base_url' must be text of at most 500 characters")
    api_key = _api_key(errors, where, item.get("api_key"))
    timeout = item.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0.1
    ):
        errors.add(where, "'timeout' must be a number of seconds, 0.1 or more")
    max_attempts = _count(errors, where, item, "max_attempts", minimum=1)
    headers = item.get("extra_headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        errors.add(where, "'extra_headers' must map header names to text values")
    enabled = _flag(errors, where, item)
    if name is None or len(errors.messages) > count:
        return None
    return _ProviderSpec(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=api_key or "",
        timeout=float(timeout) if timeout is not None else None,
        max_attempts=max_attempts,
        extra_headers=dict(headers),
        enabled=enabled,
    )


def _api_key(errors: _Errors, where: str, value: Any) -> str | None:
    """The key an ``os.environ/NAME`` reference names. The value is never repeated in an
    error: a literal there is a key."""
    if value is None or value == "":
        return ""
    reference = value[len(ENV_PREFIX) :] if isinstance(value, str) else ""
    if (
        not isinstance(value, str)
        or not value.startswith(ENV_PREFIX)
        or not _ENV_NAME.fullmatch(reference)
    ):
        errors.add(
            where,
            "'api_key' must be an os.environ/NAME reference to an environment variable; "
            "a key is never written in the file",
        )
        return None
    key = os.environ.get(reference, "")
    if not key:
        errors.add(where, f"'api_key': the environment variable {reference} is not set")
        return None
    return key


def _count(errors: _Errors, where: str, item: dict, key: str, *, minimum: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.add(where, f"'{key}' must be a whole number, {minimum} or more")
        return None
    return value


def _flag(errors: _Errors, where: str, item: dict) -> bool:
    value = item.get("enabled", True)
    if not isinstance(value, bool):
        errors.add(where, "'enabled' must be true or false")
        return True
    return value


def _route(errors: _Errors, index: int, item: dict) -> _RouteSpec | None:
    where = f"routes[{index}]"
    name = _name(errors, where, item, "name", 200)
    if name is not None:
        where = f"route {name}"
    count = len(errors.messages)
    _unknown_keys(errors, where, item, _ROUTE_KEYS)
    strategy = item.get("strategy") or Strategy.PRIORITY.value
    if strategy not in Strategy.values:
        errors.add(where, f"'strategy' must be one of {', '.join(Strategy.values)}")
    fallbacks = item.get("fallbacks") or []
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        errors.add(where, "'fallbacks' must be a list of route names")
        fallbacks = []
    elif len(set(fallbacks)) != len(fallbacks):
        errors.add(where, "'fallbacks' names a route more than once")
    deployments = []
    for position, entry in enumerate(
        _list_of_mappings(errors, f"{where} deployments", item.get("deployments"))
    ):
        deployment = _deployment(errors, f"{where} deployments[{position}]", entry)
        if deployment is None:
            continue
        if any(
            (d.provider, d.model) == (deployment.provider, deployment.model) for d in deployments
        ):
            errors.add(
                where,
                f"deployment {deployment.provider}/{deployment.model} is listed more than once",
            )
        deployments.append(deployment)
    if name is None or len(errors.messages) > count:
        return None
    return _RouteSpec(name=name, strategy=strategy, fallbacks=fallbacks, deployments=deployments)


def _deployment(errors: _Errors, where: str, item: dict) -> _DeploymentSpec | None:
    count = len(errors.messages)
    _unknown_keys(errors, where, item, _DEPLOYMENT_KEYS)
    provider = _name(errors, where, item, "provider", 64)
    model = _name(errors, where, item, "model", 200)
    weight = _count(errors, where, item, "weight", minimum=1)
    priority = item.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        errors.add(where, "'priority' must be a whole number")
    prices = {key: _price(errors, where, item, key) for key in _DEPLOYMENT_FIELDS[2:4]}
    limits = {key: _count(errors, where, item, key, minimum=0) for key in _DEPLOYMENT_FIELDS[4:7]}
    enabled = _flag(errors, where, item)
    if provider is None or model is None or len(errors.messages) > count:
        return None
    return _DeploymentSpec(
        provider=provider,
        model=model,
        weight=weight if weight is not None else 1,
        priority=priority,
        enabled=enabled,
        **prices,
        **limits,
    )


def _price(errors: _Errors, where: str, item: dict, key: str) -> Decimal:
    value = item.get(key, 0)
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidOperation
        price = Decimal(str(value).strip())
        if not price.is_finite() or price < 0 or price >= _PRICE_LIMIT:
            raise InvalidOperation
        if price != price.quantize(_PRICE_PLACES):
            raise InvalidOperation
    except InvalidOperation:
        errors.add(
            where,
            f"'{key}' must be a price in USD per million tokens, such as \"2.50\" "
            "(0 or more, under 1000000, at most 6 decimals)",
        )
        return Decimal(0)
    return price


# --- Applying it ----------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    if value == "":
        return '""'
    return str(value)


def _differences(row: Any, spec: Any, fields: tuple[str, ...]) -> list[str]:
    changes = []
    for name in fields:
        old, new = getattr(row, name), getattr(spec, name)
        if old != new:
            changes.append(f"{name} {_shown(old)} -> {_shown(new)}")
            setattr(row, name, new)
    return changes


def _key_differs(provider: Provider, key: str) -> bool:
    try:
        return provider.api_key != key
    except UnreadableKey:
        return True  # unreadable with the current secret: setting it again repairs it


def _apply(
    providers: list[_ProviderSpec],
    routes: list[_RouteSpec],
    *,
    prune: bool,
    actor: AbstractBaseUser | None,
) -> list[str]:
    lines: list[str] = []
    rows = {p.name: p for p in Provider.objects.select_for_update()}
    for spec in providers:
        provider = rows.get(spec.name)
        if provider is None:
            provider = Provider(name=spec.name)
            _differences(provider, spec, _PROVIDER_FIELDS)
            provider.extra_headers = spec.extra_headers
            provider_save(provider=provider, api_key=spec.api_key, actor=actor)
            rows[spec.name] = provider
            lines.append(f"Created provider {spec.name}")
            continue
        changes = _differences(provider, spec, _PROVIDER_FIELDS)
        if (provider.extra_headers or {}) != spec.extra_headers:
            # Header values may be credentials too: only their names are shown.
            changes.append(
                f"extra_headers changed ({', '.join(sorted(spec.extra_headers)) or 'none'})"
            )
            provider.extra_headers = spec.extra_headers
        key_changed = _key_differs(provider, spec.api_key)
        if key_changed:
            changes.append("api key changed")
        if changes:
            provider_save(
                provider=provider, api_key=spec.api_key if key_changed else None, actor=actor
            )
            lines.append(f"Changed provider {spec.name} ({', '.join(changes)})")

    route_rows = {r.name: r for r in Route.objects.select_for_update()}
    for spec in routes:
        route = route_rows.get(spec.name)
        if route is None:
            route = Route(name=spec.name)
            _differences(route, spec, _ROUTE_FIELDS)
            route_save(route=route, actor=actor)
            route_rows[spec.name] = route
            lines.append(f"Created route {spec.name}")
            continue
        changes = _differences(route, spec, _ROUTE_FIELDS)
        if changes:
            route_save(route=route, actor=actor)
            lines.append(f"Changed route {spec.name} ({', '.join(changes)})")

    existing = {
        (d.route.name, d.provider.name, d.model): d
        for d in Deployment.objects.select_related("route", "provider").select_for_update()
    }
    wanted = set()
    for route_spec in routes:
        for spec in route_spec.deployments:
            identity = (route_spec.name, spec.provider, spec.model)
            wanted.add(identity)
            label = f"{route_spec.name}: {spec.provider}/{spec.model}"
            deployment = existing.get(identity)
            if deployment is None:
                deployment = Deployment(
                    route=route_rows[route_spec.name],
                    provider=rows[spec.provider],
                    model=spec.model,
                )
                _differences(deployment, spec, _DEPLOYMENT_FIELDS)
                deployment_save(deployment=deployment, actor=actor)
                lines.append(f"Created deployment {label}")
                continue
            changes = _differences(deployment, spec, _DEPLOYMENT_FIELDS)
            if changes:
                deployment_save(deployment=deployment, actor=actor)
                lines.append(f"Changed deployment {label} ({', '.join(changes)})")

    if prune:
        lines += _prune(
            deployments=[d for identity, d in existing.items() if identity not in wanted],
            routes=[r for name, r in route_rows.items() if name not in {s.name for s in routes}],
            providers=[p for name, p in rows.items() if name not in {s.name for s in providers}],
            actor=actor,
        )
    return lines


def _prune(
    *,
    deployments: list[Deployment],
    routes: list[Route],
    providers: list[Provider],
    actor: AbstractBaseUser | None,
) -> list[str]:
    lines = []
    for deployment in sorted(deployments, key=lambda d: (d.route.name, d.label)):
        lines.append(f"Removed deployment {deployment.route.name}: {deployment.label}")
        deployment_delete(deployment=deployment, actor=actor)
    for route in sorted(routes, key=lambda r: r.name):
        lines.append(f"Removed route {route.name}")
        route_delete(route=route, actor=actor)
    for provider in sorted(providers, key=lambda p: p.name):
        lines.append(f"Removed provider {provider.name}")
        provider_delete(provider=provider, actor=actor)
    return lines


# --- One row at a time (the admin, and the sync above) --------------------------------


def provider_values(provider: Provider) -> dict[str, Any]:
    """A provider as the audit log records it. Its key never: only its last four
    characters. Its extra headers' values may be credentials too: only their names."""
    headers = provider.extra_headers
    return {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "timeout": provider.timeout,
        "max_attempts": provider.max_attempts,
        "extra_headers": sorted(headers) if isinstance(headers, dict) else [],
        "enabled": provider.enabled,
        "api_key_last_four": provider.api_key_last_four,
    }


def route_values(route: Route) -> dict[str, Any]:
    """A route as the audit log records it."""
    return {
        "name": route.name,
        "strategy": route.strategy,
        "fallbacks": list(route.fallbacks or []),
    }


def _price_text(value: Any) -> str:
    return str(Decimal(str(value)).quantize(_PRICE_PLACES))


def deployment_values(deployment: Deployment) -> dict[str, Any]:
    """A deployment as the audit log records it (prices as text with six decimals)."""
    return {
        "route": deployment.route.name,
        "provider": deployment.provider.name,
        "model": deployment.model,
        "weight": deployment.weight,
        "priority": deployment.priority,
        "input_price_per_mtok": _price_text(deployment.input_price_per_mtok),
        "output_price_per_mtok": _price_text(deployment.output_price_per_mtok),
        "context_window": deployment.context_window,
        "rpm": deployment.rpm,
        "tpm": deployment.tpm,
        "enabled": deployment.enabled,
    }


def _deployments_of(**lookup: Any) -> list[str]:
    return [
        str(deployment)
        for deployment in Deployment.objects.filter(**lookup).select_related("route", "provider")
    ]


def _record_save(
    *,
    kind: str,
    target: Provider | Route | Deployment,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    actor: AbstractBaseUser | None,
    secrets_changed: dict[str, bool] | None = None,
) -> None:
    """Record ``kind.create`` with every value, or ``kind.update`` with the values that
    changed (nothing when none did). ``secrets_changed`` flags values never recorded
    (``api_key_changed``...) that changed, with the fields that stand for them."""
    if before is None:
        audit_record(action=f"{kind}.create", target=target, actor=actor, after=after)
        return
    flags = {name: True for name, changed in (secrets_changed or {}).items() if changed}
    fields = [field for field in after if before.get(field) != after[field]]
    if "api_key_changed" in flags and "api_key_last_four" not in fields:
        fields.append("api_key_last_four")
    if "extra_header_values_changed" in flags and "extra_headers" not in fields:
        fields.append("extra_headers")
    if not fields and not flags:
        return
    audit_record(
        action=f"{kind}.update",
        target=target,
        actor=actor,
        before={field: before.get(field) for field in fields},
        after={**{field: after[field] for field in fields}, **flags},
    )


def provider_save(
    *, provider: Provider, api_key: str | None = None, actor: AbstractBaseUser | None = None
) -> Provider:
    """Create ``provider`` or save the changes made to it, and record them in the audit log.

    ``api_key``: None keeps the provider's key, ``""`` removes it, anything else replaces
    it (stored encrypted; the audit log records only that it changed and its last four
    characters).
    """
    with transaction.atomic():
        stored = (
            None
            if provider._state.adding
            else Provider.objects.select_for_update().filter(pk=provider.pk).first()
        )
        if stored is None:
            key_changed = bool(api_key)
        else:
            key_changed = api_key is not None and _key_differs(stored, api_key)
        if key_changed:
            provider.set_api_key(api_key)
        provider.save()
        _record_save(
            kind="provider",
            target=provider,
            before=None if stored is None else provider_values(stored),
            after=provider_values(provider),
            actor=actor,
            secrets_changed={
                "api_key_changed": key_changed,
                "extra_header_values_changed": stored is not None
                and (stored.extra_headers or {}) != (provider.extra_headers or {}),
            },
        )
    return provider


def route_save(*, route: Route, actor: AbstractBaseUser | None = None) -> Route:
    """Create ``route`` or save the changes made to it, and record them in the audit log."""
    with transaction.atomic():
        stored = (
            None
            if route._state.adding
            else Route.objects.select_for_update().filter(pk=route.pk).first()
        )
        route.save()
        _record_save(
            kind="route",
            target=route,
            before=None if stored is None else route_values(stored),
            after=route_values(route),
            actor=actor,
        )
    return route


def deployment_save(*, deployment: Deployment, actor: AbstractBaseUser | None = None) -> Deployment:
    """Create ``deployment`` or save the changes made to it, and record them in the audit
    log."""
    with transaction.atomic():
        stored = (
            None
            if deployment._state.adding
            else Deployment.objects.select_for_update()
            .select_related("route", "provider")
            .filter(pk=deployment.pk)
            .first()
        )
        deployment.save()
        _record_save(
            kind="deployment",
            target=deployment,
            before=None if stored is None else deployment_values(stored),
            after=deployment_values(deployment),
            actor=actor,
        )
    return deployment


def provider_delete(*, provider: Provider, actor: AbstractBaseUser | None = None) -> None:
    """Delete ``provider`` with its deployments; the audit log keeps what they were."""
    with transaction.atomic():
        audit_record(
            action="provider.delete",
            target=provider,
            actor=actor,
            before={**provider_values(provider), "deployments": _deployments_of(provider=provider)},
        )
        provider.delete()


def route_delete(*, route: Route, actor: AbstractBaseUser | None = None) -> None:
    """Delete ``route`` with its deployments; the audit log keeps what they were."""
    with transaction.atomic():
        audit_record(
            action="route.delete",
            target=route,
            actor=actor,
            before={**route_values(route), "deployments": _deployments_of(route=route)},
        )
        route.delete()


def deployment_delete(*, deployment: Deployment, actor: AbstractBaseUser | None = None) -> None:
    """Delete ``deployment``; the audit log keeps what it was."""
    with transaction.atomic():
        audit_record(
            action="deployment.delete",
            target=deployment,
            actor=actor,
            before=deployment_values(deployment),
        )
        deployment.delete()
