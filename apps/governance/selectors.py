"""Reads of governance: a holder's limits, the keys a user may see with their spend, teams."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q, QuerySet, Sum

from apps.accounts.models import APIKey, Team, TeamMembership
from apps.governance.admission import period_start
from apps.governance.models import Limits
from contextos.exceptions import NotFound


def limits_holder_field(holder: Any) -> str:
    """The field of :class:`Limits` that names ``holder``: ``api_key``, ``team`` or ``user``."""
    if isinstance(holder, APIKey):
        return "api_key"
    if isinstance(holder, Team):
        return "team"
    if isinstance(holder, AbstractBaseUser):
        return "user"
    raise TypeError(f"Limits belong to a key, a user or a team, not {type(holder).__name__}.")


def limits_of(holder: Any) -> Limits | None:
    """The limits row of a key, user or team, if it has one."""
    return Limits.objects.filter(**{limits_holder_field(holder): holder}).first()


def key_budget_period(api_key: APIKey) -> str:
    """The period a key's spend is counted over: its budget's, else the month."""
    limits = getattr(api_key, "limits", None)
    if limits is not None and limits.budget_usd is not None:
        return limits.budget_period
    return "month"


def key_list(*, user: AbstractBaseUser) -> QuerySet[APIKey]:
    """The keys ``user`` may see (their own; staff: every key), newest first, with limits."""
    keys = APIKey.objects.select_related("limits").order_by("-created_at")
    return keys if user.is_staff else keys.filter(user=user)


def key_get(*, user: AbstractBaseUser, key_id: UUID | str) -> APIKey:
    """The key ``key_id`` if ``user`` may see it; otherwise NotFound (never 403)."""
    try:
        api_key = APIKey.objects.select_related("limits").get(pk=key_id)
    except (APIKey.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such key.") from None
    if not user.is_staff and api_key.user_id != user.pk:
        raise NotFound("No such key.")
    return api_key


def key_spend(keys: list[APIKey], now: datetime | None = None) -> dict[Any, Decimal]:
    """Each key's spend in its current budget period (as ``admission.spend_usd`` counts
    it), in one query for them all."""
    from apps.ai_interactions.models import AIInteraction

    if not keys:
        return {}
    now = now or datetime.now(UTC)
    periods = {key_budget_period(api_key) for api_key in keys}
    starts = {period: period_start(period, now) for period in periods}
    rows = (
        AIInteraction.objects.filter(
            api_key_id__in=[api_key.pk for api_key in keys], created_at__gte=min(starts.values())
        )
        .values("api_key_id")
        .annotate(
            **{
                f"spent_{period}": Sum("cost_usd", filter=Q(created_at__gte=start))
                for period, start in starts.items()
            }
        )
    )
    by_key = {row["api_key_id"]: row for row in rows}
    spend = {}
    for api_key in keys:
        row = by_key.get(api_key.pk, {})
        spend[api_key.pk] = row.get(f"spent_{key_budget_period(api_key)}") or Decimal(0)
    return spend


def team_of_member(*, user: AbstractBaseUser, team_id: UUID | str) -> Team | None:
    """The team ``team_id`` if ``user`` belongs to it, else None."""
    try:
        membership = (
            TeamMembership.objects.select_related("team").filter(team_id=team_id, user=user).first()
        )
    except (ValueError, ValidationError):
        return None
    return membership.team if membership is not None else None


def team_get_by_name(name: str) -> Team | None:
    return Team.objects.filter(name=name).first()


def team_list() -> QuerySet[Team]:
    """Every team by name, with its memberships (and their users) loaded."""
    memberships = TeamMembership.objects.select_related("user").order_by("user__username")
    return Team.objects.prefetch_related(Prefetch("memberships", queryset=memberships))
