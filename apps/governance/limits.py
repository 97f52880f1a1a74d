"""Which limits apply to a call: the key's, its user's and its team's, held in each
process's memory (:class:`contextos.versioned.VersionedCache`) so a call reads none of
them from PostgreSQL, a key's default in-flight limit added (``API_MAX_PARALLEL_REQUESTS``);
and the one model-scope check behind listing and calling."""

from dataclasses import dataclass, replace
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from apps.governance.models import Limits
from contextos.exceptions import AppError
from contextos.versioned import VersionedCache

# Budgets are kept in Redis as whole nano-dollars (integers add exactly).
NANO = Decimal(1_000_000_000)


@dataclass(frozen=True)
class LimitConfig:
    allowed_models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    budget_nano: int | None = None
    period: str = "month"

    @property
    def empty(self) -> bool:
        return not self.allowed_models and all(
            value is None for value in (self.rpm, self.tpm, self.parallel, self.budget_nano)
        )

    def allows(self, model: str) -> bool:
        return not self.allowed_models or any(
            fnmatchcase(model, pattern) for pattern in self.allowed_models
        )


@dataclass(frozen=True)
class Scope:
    """One holder of limits a call counts for: ``kind`` is key, user or team."""

    kind: str
    id: str
    limits: LimitConfig


class ModelNotAllowed(AppError):
    status_code = 403
    code = "model_not_allowed"


_cache: VersionedCache[tuple[str, str], LimitConfig | None] = VersionedCache(
    "governance", check=lambda: settings.GOVERNANCE_CHECK_SECONDS
)


def _config(row: Limits | None) -> LimitConfig | None:
    if row is None:
        return None
    config = LimitConfig(
        allowed_models=tuple(m for m in row.allowed_models or () if isinstance(m, str)),
        rpm=row.rpm_limit,
        tpm=row.tpm_limit,
        parallel=row.max_parallel_requests,
        budget_nano=int(row.budget_usd * NANO) if row.budget_usd is not None else None,
        period=row.budget_period,
    )
    return None if config.empty else config


def _limits_of(kind: str, holder_id: Any) -> LimitConfig | None:
    field = {"key": "api_key_id", "user": "user_id", "team": "team_id"}[kind]
    return _cache.get(
        (kind, str(holder_id)),
        lambda: _config(Limits.objects.filter(**{field: holder_id}).first()),
    )


def scopes_for(*, api_key: Any, user: Any) -> list[Scope]:
    """The limited holders a call by ``api_key`` (or ``user`` without one) counts for."""
    return scopes_of(
        key_id=getattr(api_key, "pk", None),
        team_id=getattr(api_key, "team_id", None),
        user_id=getattr(user, "pk", None),
    )


def scopes_of(
    *, key_id: Any, team_id: Any, user_id: Any, in_flight_default: bool = False
) -> list[Scope]:
    """The same by ids (a recorded interaction has them all, with no query).

    With ``in_flight_default`` (a call its client waits for), a key whose own limits set no
    ``max_parallel_requests`` has ``API_MAX_PARALLEL_REQUESTS`` open calls at most.
    """
    holders = [
        (kind, holder_id)
        for kind, holder_id in (("key", key_id), ("team", team_id), ("user", user_id))
        if holder_id is not None
    ]
    scopes = []
    for kind, holder_id in holders:
        config = _limits_of(kind, holder_id)
        if kind == "key" and in_flight_default:
            config = _with_default_parallel(config)
        if config is not None:
            scopes.append(Scope(kind, str(holder_id), config))
    return scopes


def _with_default_parallel(config: LimitConfig | None) -> LimitConfig | None:
    default = settings.API_MAX_PARALLEL_REQUESTS
    if not default or (config is not None and config.parallel is not None):
        return config
    return replace(config or LimitConfig(), parallel=default)


def model_allowed(scopes: list[Scope], model: str) -> bool:
    return all(scope.limits.allows(model) for scope in scopes)


def check_model(scopes: list[Scope], model: str) -> None:
    """Refuse (403 ``model_not_allowed``) a model a scope does not allow."""
    if not model_allowed(scopes, model):
        raise ModelNotAllowed(
            f"This key may not call {model!r}.",
            details={"model": [f"{model!r} is not among the key's allowed models."]},
        )


def limits_clear() -> None:
    _cache.clear()


def connect_signals() -> None:
    for signal in (post_save, post_delete):
        signal.connect(_cache.changed, sender=Limits, dispatch_uid=f"governance.limits.{signal}")
