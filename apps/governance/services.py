"""Writes of governance: limits of keys, users and teams; teams and their members; the
self-service keys. Each change is recorded in the audit log (:mod:`apps.governance.audit`)."""

import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import APIKey, Team, TeamMembership, TeamRole
from apps.accounts.services import api_key_create, api_key_revoke, api_key_update
from apps.governance.audit import audit_record, json_ready
from apps.governance.models import LIMIT_FIELDS, BudgetPeriod, Limits
from apps.governance.selectors import limits_holder_field, limits_of, team_of_member
from contextos.exceptions import Conflict, ValidationFailed

# The largest value a PositiveIntegerField holds in PostgreSQL.
MAX_LIMIT = 2_147_483_647
BUDGET_QUANTUM = Decimal("0.000001")
MAX_BUDGET = Decimal("99999999.999999")
# A budget over a longer period lets a key spend less: ordering periods by length
# tells whether one budget is within another.
PERIOD_DAYS = {"day": 1, "week": 7, "month": 31, "total": math.inf}
_INT_LIMITS = ("rpm_limit", "tpm_limit", "max_parallel_requests")


# Limits


def limits_as_dict(limits: Limits | None) -> dict[str, Any]:
    """The limit fields of ``limits`` (a holder without a row: an empty row's values),
    the budget as a string."""
    row = limits if limits is not None else Limits()
    return {
        "allowed_models": list(row.allowed_models or []),
        "rpm_limit": row.rpm_limit,
        "tpm_limit": row.tpm_limit,
        "max_parallel_requests": row.max_parallel_requests,
        "budget_usd": None if row.budget_usd is None else str(_budget(row.budget_usd)),
        "budget_period": row.budget_period,
    }


def _budget(value: Any) -> Decimal:
    return Decimal(value).quantize(BUDGET_QUANTUM)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid {field}: {message}", details={field: [message]})


def _clean_limit(field: str, value: Any) -> Any:
    """``value`` as stored in ``field``; None clears the field."""
    if field == "allowed_models":
        if value is None:
            return []
        if not isinstance(value, list | tuple) or not all(
            isinstance(name, str) and name.strip() for name in value
        ):
            raise _invalid(field, "A list of model names or glob patterns, none empty.")
        return [name.strip() for name in value]
    if field == "budget_period":
        if value is None:
            return BudgetPeriod.MONTH
        if value not in BudgetPeriod.values:
            raise _invalid(field, f"One of {', '.join(BudgetPeriod.values)}.")
        return value
    if value is None:
        return None
    if field == "budget_usd":
        try:
            budget = _budget(value)
        except (InvalidOperation, TypeError, ValueError):
            raise _invalid(field, "A number of dollars.") from None
        if not Decimal(0) <= budget <= MAX_BUDGET:
            raise _invalid(field, f"Between 0 and {MAX_BUDGET}.")
        return budget
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, "A whole number.")
    if not 1 <= value <= MAX_LIMIT:
        raise _invalid(field, f"Between 1 and {MAX_LIMIT}.")
    return value


def limits_validate(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` of limits as they would be stored, or ValidationFailed naming each field
    that is not a limit or holds no valid value."""
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"Not a limit: {', '.join(unknown)}.",
            details={name: ["Not a limit."] for name in unknown},
        )
    cleaned, details = {}, {}
    for field, value in changes.items():
        try:
            cleaned[field] = _clean_limit(field, value)
        except ValidationFailed as error:
            details.update(error.details)
    if details:
        raise ValidationFailed(f"Invalid limits: {', '.join(sorted(details))}.", details=details)
    return cleaned


def limits_set(
    *,
    holder: APIKey | AbstractBaseUser | Team,
    changes: dict[str, Any],
    actor: AbstractBaseUser | None = None,
    request_id: str = "",
) -> Limits:
    """Set some limits of a key, user or team (``None`` clears one), creating its row if
    needed; a change is recorded in the audit log with the limits before and after."""
    cleaned = limits_validate(changes)
    holder_field = limits_holder_field(holder)
    with transaction.atomic():
        limits = Limits.objects.select_for_update().filter(**{holder_field: holder}).first()
        before = limits_as_dict(limits)
        if limits is None:
            limits = Limits(**{holder_field: holder})
        for field, value in cleaned.items():
            setattr(limits, field, value)
        after = limits_as_dict(limits)
        if after == before:
            return limits
        limits.save()
        audit_record(
            action="limits.set",
            target=holder,
            actor=actor,
            before=before,
            after=after,
            request_id=request_id,
        )
    return limits


def _looser(
    proposed: dict[str, Any], given: Iterable[str], bound: dict[str, Any], *, whose: str
) -> dict[str, str]:
    """The fields among ``given`` whose ``proposed`` value lets a key do more than ``bound``
    (limits in :func:`limits_as_dict` form) allows, each with the reason. A value of None
    (or no models) given where ``bound`` has a limit lifts it, which is looser too."""
    given = set(given)
    problems: dict[str, str] = {}
    allowed = bound["allowed_models"]
    if "allowed_models" in given and allowed:
        wanted = proposed["allowed_models"]
        outside = [p for p in wanted if not any(fnmatchcase(p, c) for c in allowed)]
        if not wanted or outside:
            problems["allowed_models"] = (
                f"{', '.join(outside) or 'Every model'} is not within the models {whose} "
                f"allows ({', '.join(allowed)})."
            )
    for field in (*_INT_LIMITS, "budget_usd"):
        limit, value = bound[field], proposed[field]
        if field not in given or limit is None:
            continue
        if value is None:
            problems[field] = f"Cannot be lifted: {whose} has a limit of {limit}."
        elif Decimal(value) > Decimal(limit):
            problems[field] = f"At most {limit}, the limit of {whose}."
    periods = proposed["budget_period"], bound["budget_period"]
    if (
        given & {"budget_usd", "budget_period"}
        and proposed["budget_usd"] is not None
        and bound["budget_usd"] is not None
        and PERIOD_DAYS[periods[0]] < PERIOD_DAYS[periods[1]]
    ):
        problems.setdefault(
            "budget_period",
            f"A budget per {periods[0]} is looser than the budget per {periods[1]} of {whose}.",
        )
    return problems


def _refuse_looser(problems: dict[str, str]) -> None:
    if problems:
        raise ValidationFailed(
            "A key's limits may not be looser than the limits that apply to you: "
            + ", ".join(sorted(problems))
            + ".",
            code="limits_too_loose",
            details={field: [reason] for field, reason in sorted(problems.items())},
        )


def _caller_bounds(
    *, user: AbstractBaseUser, caller_key: APIKey | None, team: Team | None
) -> list[tuple[str, dict[str, Any]]]:
    bounds = [("your user", limits_as_dict(limits_of(user)))]
    if caller_key is not None:
        bounds.append(("the key you called with", limits_as_dict(limits_of(caller_key))))
    if team is not None:
        bounds.append((f"team {team.name}", limits_as_dict(limits_of(team))))
    return bounds


def _budget_period_alone(proposed: dict[str, Any], given: Iterable[str]) -> None:
    if "budget_period" in given and proposed["budget_usd"] is None:
        raise _invalid("budget_period", "Give budget_usd with budget_period.")


# Self-service keys


def key_issue(
    *,
    user: AbstractBaseUser,
    caller_key: APIKey | None = None,
    name: str = "",
    expires_at: datetime | None = None,
    team_id: UUID | str | None = None,
    limits: dict[str, Any] | None = None,
) -> tuple[APIKey, str]:
    """Create a key for ``user`` (who called with ``caller_key``, if any), optionally in
    one of their teams and with limits no looser than theirs; return it with its raw value.

    A limit left out (or None) stays unset on the key.
    """
    given = {
        field: value for field, value in (limits or {}).items() if value is not None and value != []
    }
    team = None
    if team_id is not None:
        team = team_of_member(user=user, team_id=team_id)
        if team is None:
            raise _invalid("team", "Not a team you belong to.")
    if expires_at is not None and expires_at <= timezone.now():
        raise _invalid("expires_at", "Must be in the future.")
    proposed = {**limits_as_dict(None), **{f: _clean_limit(f, v) for f, v in given.items()}}
    proposed["budget_usd"] = json_ready(proposed["budget_usd"])
    _budget_period_alone(proposed, given)
    problems: dict[str, str] = {}
    for whose, bound in _caller_bounds(user=user, caller_key=caller_key, team=team):
        for field, reason in _looser(proposed, given, bound, whose=whose).items():
            problems.setdefault(field, reason)
    _refuse_looser(problems)
    with transaction.atomic():
        api_key, raw_key = api_key_create(
            user=user, name=name, expires_at=expires_at, team=team, actor=user
        )
        if given:
            limits_set(holder=api_key, changes=given, actor=user)
    return api_key, raw_key


def key_change(
    *,
    api_key: APIKey,
    actor: AbstractBaseUser,
    caller_key: APIKey | None = None,
    name: str | None = None,
    limits: dict[str, Any] | None = None,
) -> APIKey:
    """Rename ``api_key`` and tighten its limits; a limit loosened (or lifted) beyond the
    key's own, or beyond the caller's, is refused."""
    limits = limits or {}
    current = limits_as_dict(limits_of(api_key))
    proposed = {**current, **{f: _clean_limit(f, v) for f, v in limits.items()}}
    proposed["budget_usd"] = json_ready(proposed["budget_usd"])
    _budget_period_alone(proposed, limits)
    problems = _looser(proposed, limits, current, whose="this key now")
    # Lifting a limit the key does not have changes nothing: only values set are bounded.
    setting = [field for field, value in limits.items() if value is not None and value != []]
    for whose, bound in _caller_bounds(user=actor, caller_key=caller_key, team=api_key.team):
        for field, reason in _looser(proposed, setting, bound, whose=whose).items():
            problems.setdefault(field, reason)
    _refuse_looser(problems)
    with transaction.atomic():
        if name is not None and name != api_key.name:
            api_key_update(api_key=api_key, name=name, expires_at=api_key.expires_at, actor=actor)
        if limits:
            limits_set(holder=api_key, changes=limits, actor=actor)
    return api_key


def key_revoke(*, api_key: APIKey, actor: AbstractBaseUser | None = None) -> APIKey:
    """Revoke ``api_key`` (it stops working in every process at its next request).

    The keys API promises that revoking a revoked key changes nothing: it is answered
    with the key as it stands, and nothing is recorded.
    """
    try:
        return api_key_revoke(api_key=api_key, actor=actor)
    except Conflict as error:
        if error.code != "already_revoked":
            raise
    api_key.refresh_from_db()
    return api_key


# Teams


def team_create(*, name: str, actor: AbstractBaseUser | None = None) -> Team:
    """Create the team ``name`` (unique)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise _invalid("name", "1 to 100 characters.")
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name)
            audit_record(action="team.create", target=team, actor=actor, after={"name": name})
    except IntegrityError:
        raise Conflict(f"A team named {name!r} exists already.") from None
    return team


def team_rename(*, team: Team, name: str, actor: AbstractBaseUser | None = None) -> Team:
    before = {"name": Team.objects.get(pk=team.pk).name}
    name = name.strip()
    if name == before["name"]:
        return team
    with transaction.atomic():
        team.name = name
        team.save(update_fields=["name", "updated_at"])
        audit_record(
            action="team.update", target=team, actor=actor, before=before, after={"name": name}
        )
    return team


def team_delete(*, team: Team, actor: AbstractBaseUser | None = None) -> None:
    """Delete ``team``: its keys stay, counting for their user only."""
    members = sorted(team.memberships.values_list("user__username", flat=True))
    with transaction.atomic():
        audit_record(
            action="team.delete",
            target=team,
            actor=actor,
            before={"name": team.name, "members": members},
        )
        for api_key in APIKey.objects.filter(team=team):
            # Saved one by one: each save drops the key's cached copy (key cache signals).
            api_key.team = None
            api_key.save(update_fields=["team", "updated_at"])
        team.delete()


def team_member_add(
    *,
    team: Team,
    user: AbstractBaseUser,
    role: str = TeamRole.MEMBER,
    actor: AbstractBaseUser | None = None,
) -> TeamMembership:
    """Make ``user`` a member of ``team`` with ``role`` (or change their role)."""
    if role not in TeamRole.values:
        raise _invalid("role", f"One of {', '.join(TeamRole.values)}, not {role!r}.")
    with transaction.atomic():
        membership = TeamMembership.objects.select_for_update().filter(team=team, user=user).first()
        if membership is not None and membership.role == role:
            return membership
        before = None
        if membership is None:
            membership = TeamMembership(team=team, user=user, role=role)
        else:
            before = {"user": user.get_username(), "role": membership.role}
            membership.role = role
        membership.save()
        audit_record(
            action="team.member_add" if before is None else "team.member_role",
            target=team,
            actor=actor,
            before=before,
            after={"user": user.get_username(), "role": role},
        )
    return membership


def team_member_remove(
    *, team: Team, user: AbstractBaseUser, actor: AbstractBaseUser | None = None
) -> bool:
    """Take ``user`` out of ``team``; their keys in the team leave it too. False when
    they were not a member."""
    with transaction.atomic():
        membership = TeamMembership.objects.select_for_update().filter(team=team, user=user).first()
        if membership is None:
            return False
        detached = []
        for api_key in APIKey.objects.filter(team=team, user=user):
            api_key.team = None
            api_key.save(update_fields=["team", "updated_at"])
            detached.append(api_key.prefix)
        membership.delete()
        audit_record(
            action="team.member_remove",
            target=team,
            actor=actor,
            before={"user": user.get_username(), "role": membership.role},
            after={"keys_left_team": detached} if detached else None,
        )
    return True
