"""Admitting a call against the limits of its key, user and team, in one Redis step.

Before a provider is called, :func:`admit` checks and takes, atomically (one Lua
script), for every scope that limits the call: a request of the minute's RPM, the
call's estimated tokens of the minute's TPM, a place among its parallel requests,
and a reservation of the call's worst-case cost against its budget. After the
call, :meth:`Admission.settle` gives back the place, corrects the tokens to the
real count and turns the reservation into the real cost (nothing for a cache hit).

A key's calls its client waits for have a parallel limit even without a row
(``API_MAX_PARALLEL_REQUESTS``, :func:`apps.governance.limits.scopes_of`), taken in the
same script. A reservation (and a parallel place) expires on its own after
``GOVERNANCE_RESERVATION_SECONDS`` when the process that took it died. A budget's
spend in Redis that is missing (flushed, evicted, a new period) is rebuilt from the
interactions in PostgreSQL before the call is admitted. With Redis down,
``GOVERNANCE_FAIL_MODE`` decides: ``closed`` refuses calls that need a budget or
TPM check (503), ``open`` lets them through and logs it; RPM and parallel limits
alone let a call through, as the throttle does.

An API key taken on trust (:mod:`apps.accounts.key_cache`) is confirmed first, in the
same script: its cached entry unchanged and the request counted for the key's rate
limit, or nothing is taken.
"""

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum

from apps.accounts.key_cache import KeyConfirmation
from apps.governance.limits import NANO, Scope
from contextos.after_response import after_response
from contextos.cache import ScriptCall, redis_client, script_sent, scripts_in_one_round_trip
from contextos.exceptions import AppError

logger = logging.getLogger(__name__)

_KEYS_PER_SCOPE = 6
# The script's first keys and its arguments 7-9 when no API key is to be confirmed.
_NO_KEY: tuple[list[str], list[object]] = (["", ""], ["", -1, 0])

# KEYS[1], KEYS[2], ARGV[7..9]: an API key taken on trust (ARGV[7] '' when none): its
# cache entry must hash to ARGV[7], and the request is counted at KEYS[2] against
# ARGV[8] (-1: no rate limit) with a lifetime of ARGV[9] s, before anything is taken.
_ADMIT = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local expires = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local keep = tonumber(ARGV[6])
if ARGV[7] ~= '' then
  if redis.sha1hex(redis.call('GET', KEYS[1]) or '') ~= ARGV[7] then
    return {'key_changed', 0, ''}
  end
  if tonumber(ARGV[8]) >= 0 then
    local count = redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], ARGV[9], 'NX')
    if count > tonumber(ARGV[8]) then
      return {'throttled', 0, ''}
    end
  end
end
for i = 0, n - 1 do
  local k = 2 + i * 6
  local a = 10 + i * 5
  local rpm, tpm, par = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local budget, worst = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if rpm >= 0 and tonumber(redis.call('GET', KEYS[k + 1]) or '0') + 1 > rpm then
    return {'rate_limited', i, 'requests'}
  end
  if tpm >= 0 and tonumber(redis.call('GET', KEYS[k + 2]) or '0') + tokens > tpm then
    return {'rate_limited', i, 'tokens'}
  end
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= par then
      return {'too_many_concurrent_requests', i, ''}
    end
  end
  if budget >= 0 then
    local spent = redis.call('GET', KEYS[k + 6])
    if not spent then
      return {'rebuild', i, ''}
    end
    local expired = redis.call('ZRANGEBYSCORE', KEYS[k + 5], '-inf', now)
    for _, id in ipairs(expired) do
      redis.call('HDEL', KEYS[k + 4], id)
    end
    if #expired > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', now)
    end
    local reserved = 0
    for _, value in ipairs(redis.call('HVALS', KEYS[k + 4])) do
      reserved = reserved + tonumber(value)
    end
    if tonumber(spent) + reserved + worst > budget then
      return {'budget_exceeded', i, ''}
    end
  end
end
local used = {}
for i = 0, n - 1 do
  local k = 2 + i * 6
  local a = 10 + i * 5
  local rpm, tpm, par = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local budget, worst = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local requests, spent_tokens = -1, -1
  if rpm >= 0 then
    requests = redis.call('INCR', KEYS[k + 1])
    redis.call('EXPIRE', KEYS[k + 1], 120)
  end
  if tpm >= 0 then
    spent_tokens = redis.call('INCRBY', KEYS[k + 2], tokens)
    redis.call('EXPIRE', KEYS[k + 2], 120)
  end
  if par >= 0 then
    redis.call('ZADD', KEYS[k + 3], expires, rid)
    redis.call('EXPIRE', KEYS[k + 3], keep)
  end
  if budget >= 0 then
    redis.call('HSET', KEYS[k + 4], rid, worst)
    redis.call('ZADD', KEYS[k + 5], expires, rid)
    redis.call('EXPIRE', KEYS[k + 4], keep)
    redis.call('EXPIRE', KEYS[k + 5], keep)
  end
  used[#used + 1] = requests
  used[#used + 1] = spent_tokens
end
return {'ok', used}
"""

_SETTLE = """
local rid = ARGV[1]
local token_delta = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local k = i * 6
  local flags = ARGV[5 + i]
  local counted = string.sub(flags, 1, 1) == '1' and token_delta ~= 0
  if counted and redis.call('EXISTS', KEYS[k + 2]) == 1 then
    redis.call('INCRBY', KEYS[k + 2], token_delta)
  end
  if string.sub(flags, 2, 2) == '1' then
    redis.call('ZREM', KEYS[k + 3], rid)
  end
  if string.sub(flags, 3, 3) == '1' then
    redis.call('HDEL', KEYS[k + 4], rid)
    redis.call('ZREM', KEYS[k + 5], rid)
    if cost > 0 and redis.call('EXISTS', KEYS[k + 6]) == 1 then
      redis.call('INCRBY', KEYS[k + 6], cost)
    end
  end
end
return 1
"""


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


class BudgetExceeded(AppError):
    status_code = 429
    code = "budget_exceeded"


class TooManyConcurrentRequests(AppError):
    status_code = 429
    code = "too_many_concurrent_requests"


class GovernanceUnavailable(AppError):
    status_code = 503
    code = "governance_unavailable"


def period_start(period: str, now: datetime) -> datetime:
    """The start (UTC) of the budget period holding ``now``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return datetime(2000, 1, 1, tzinfo=UTC)  # total


def _prefix(scope: Scope) -> str:
    return f"gov:{scope.kind}:{scope.id}"


def _keys(scope: Scope, minute: int, now: datetime) -> list[str]:
    prefix = _prefix(scope)
    start = period_start(scope.limits.period, now)
    return [
        f"{prefix}:rpm:{minute}",
        f"{prefix}:tpm:{minute}",
        f"{prefix}:inflight",
        f"{prefix}:reserved",
        f"{prefix}:reserved_until",
        f"{prefix}:spent:{scope.limits.period}:{int(start.timestamp())}",
    ]


def _counted(scope: Scope) -> bool:
    limits = scope.limits
    return any(v is not None for v in (limits.rpm, limits.tpm, limits.parallel, limits.budget_nano))


@dataclass
class Admission:
    """A call let through: what it took, to be settled once it is answered."""

    request_id: str = ""
    scopes: list[Scope] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    # The worst case reserved against budgets (0 when no budget applies): the call's row
    # carries it while running, so a spend rebuilt from PostgreSQL counts it.
    reserved: Decimal = Decimal(0)

    def settle(self, *, tokens: int, cost: Decimal) -> None:
        """Give back the parallel place, count the real tokens and the real cost.

        The settlement is sent now and its reply read once the response is out
        (:func:`contextos.cache.script_sent`): Redis runs it on arrival, before the
        client can hear the answer and call again, and the client does not wait for a
        round trip that tells it nothing. Outside a request it is read at once.
        """
        if self.settled or not self.scopes:
            return
        self.settled = True
        flags = [
            "".join(
                "1" if v is not None else "0"
                for v in (s.limits.tpm, s.limits.parallel, s.limits.budget_nano)
            )
            for s in self.scopes
        ]
        try:
            client = redis_client()
            reply = script_sent(
                client,
                _script(client, _SETTLE),
                keys=self.keys,
                args=[
                    self.request_id,
                    tokens - self.tokens,
                    int(cost * NANO),
                    len(self.scopes),
                    *flags,
                ],
            )
        except Exception as exc:
            _not_settled(exc)
            return
        after_response(partial(_settled, reply))


def _settled(reply: Callable[[], object]) -> None:
    try:
        reply()
    except Exception as exc:
        _not_settled(exc)


def _not_settled(exc: Exception) -> None:
    # The reservation and place expire on their own; the spend is in PostgreSQL.
    logger.warning("Governance not settled (%s)", exc.__class__.__name__)


_scripts: dict[str, Any] = {}


def _script(client: Any, source: str) -> Any:
    """The script, sent once and then called by its digest (EVALSHA)."""
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = client.register_script(source)
    return script


def admit(
    scopes: list[Scope],
    *,
    tokens: int,
    worst_cost: Decimal,
    along: Sequence[ScriptCall] = (),
    confirming: KeyConfirmation | None = None,
) -> Admission:
    """Take the call's share of every limit that applies, or refuse it (429/503).

    The scripts ``along`` are sent in the admission's round trip to Redis and given their
    results whatever the admission's outcome; with no limit to count and no key to
    confirm, they are not sent.
    ``confirming`` is the call's API key taken on trust: confirmed first, in the same
    script, nothing taken if it cannot be (it raises).
    """
    counted = [scope for scope in scopes if _counted(scope)]
    if not counted and confirming is None:
        return Admission()
    client = redis_client()
    if client is None:  # the embedded default: no shared counters to hold a budget
        if confirming is not None:
            confirming.unanswered(None)
        return _unavailable(counted, None)
    worst_nano = math.ceil(worst_cost * NANO)
    for attempt in range(3):
        confirm_keys, confirm_args = (
            (confirming.script_keys(), confirming.script_args()) if confirming else _NO_KEY
        )
        now = datetime.now(UTC)
        epoch = now.timestamp()
        minute = int(epoch // 60)
        keys = [key for scope in counted for key in _keys(scope, minute, now)]
        request_id = uuid.uuid4().hex
        arguments: list[object] = [
            repr(epoch),
            request_id,
            repr(epoch + settings.GOVERNANCE_RESERVATION_SECONDS),
            tokens,
            len(counted),
            int(settings.GOVERNANCE_RESERVATION_SECONDS) + 60,
            *confirm_args,
        ]
        for scope in counted:
            limits = scope.limits
            arguments += [
                -1 if limits.rpm is None else limits.rpm,
                -1 if limits.tpm is None else limits.tpm,
                -1 if limits.parallel is None else limits.parallel,
                -1 if limits.budget_nano is None else limits.budget_nano,
                worst_nano,
            ]
        script_keys = [*confirm_keys, *keys]
        try:
            if along and attempt == 0:
                outcome = _admitted_along(client, script_keys, arguments, along)
            else:
                outcome = _script(client, _ADMIT)(keys=script_keys, args=arguments, client=client)
        except Exception as exc:
            if confirming is not None:
                confirming.unanswered(exc)
            return _unavailable(counted, exc)
        verdict = outcome[0].decode() if isinstance(outcome[0], bytes) else outcome[0]
        if confirming is not None:
            confirming.answered(verdict)  # raises unless the key is confirmed
            confirming = None  # counted once: not sent again when the spend is rebuilt
        if verdict == "rebuild":
            scope = counted[int(outcome[1])]
            _rebuild_spend(client, scope, keys[int(outcome[1]) * _KEYS_PER_SCOPE + 5], now)
            continue
        if verdict != "ok":
            _refuse(verdict, counted[int(outcome[1])], outcome[2], epoch)
        if not counted:
            return Admission()
        budgeted = any(scope.limits.budget_nano is not None for scope in counted)
        return Admission(
            request_id=request_id,
            scopes=counted,
            keys=keys,
            tokens=tokens,
            headers=_headers(counted, outcome[1], epoch),
            reserved=worst_cost if budgeted else Decimal(0),
        )
    raise GovernanceUnavailable("The budget's spend could not be read; try again.")


def confirm_key(confirming: KeyConfirmation) -> None:
    """Confirm an API key taken on trust by a request that ends before a call is admitted
    (refused, invalid): the admission's script with nothing to take; raises as it does."""
    admit([], tokens=0, worst_cost=Decimal(0), confirming=confirming)


def _admitted_along(
    client: Any, keys: list[str], arguments: list[object], along: Sequence[ScriptCall]
) -> Any:
    """The admission script's outcome, the scripts ``along`` sent in the same round trip."""
    outcome, *results = scripts_in_one_round_trip(
        client, [(_script(client, _ADMIT), keys, arguments), *(c.script_call() for c in along)]
    )
    for call, result in zip(along, results, strict=True):
        call.answered(result)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _refuse(verdict: str, scope: Scope, what: object, epoch: float) -> None:
    holder = {"key": "this key", "user": "your user", "team": "your team"}[scope.kind]
    if verdict == "budget_exceeded":
        raise BudgetExceeded(
            f"The budget of {holder} for this {scope.limits.period} would be exceeded.",
            details={"scope": scope.kind},
        )
    if verdict == "too_many_concurrent_requests":
        raise TooManyConcurrentRequests(
            f"Too many requests of {holder} are in progress (at most "
            f"{scope.limits.parallel} at once); try again when one ends.",
            details={
                "scope": scope.kind,
                "max_parallel_requests": scope.limits.parallel,
                "retry_after": 1,
            },
        )
    unit = what.decode() if isinstance(what, bytes) else str(what)
    wait = max(1, math.ceil(60 - epoch % 60))
    raise RateLimited(
        f"The {unit}-per-minute limit of {holder} is reached; retry in {wait} s.",
        details={"scope": scope.kind, "limit": unit, "retry_after": wait},
    )


def _headers(scopes: list[Scope], used: list, epoch: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers of the tightest RPM and TPM that apply."""
    reset = f"{max(1, math.ceil(60 - epoch % 60))}s"
    headers: dict[str, str] = {}
    for unit, position, limit_of in (
        ("requests", 0, lambda s: s.limits.rpm),
        ("tokens", 1, lambda s: s.limits.tpm),
    ):
        tightest = None
        for number, scope in enumerate(scopes):
            limit = limit_of(scope)
            if limit is None:
                continue
            remaining = max(0, limit - int(used[2 * number + position]))
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining)
        if tightest is not None:
            headers[f"x-ratelimit-limit-{unit}"] = str(tightest[0])
            headers[f"x-ratelimit-remaining-{unit}"] = str(tightest[1])
            headers[f"x-ratelimit-reset-{unit}"] = reset
    return headers


def _unavailable(scopes: list[Scope], exc: Exception | None) -> Admission:
    needs_redis = any(s.limits.budget_nano is not None or s.limits.tpm is not None for s in scopes)
    reason = exc.__class__.__name__ if exc is not None else "no Redis configured"
    if needs_redis and settings.GOVERNANCE_FAIL_MODE == "closed":
        logger.warning("Governance refused a call: its limits cannot be checked (%s)", reason)
        raise GovernanceUnavailable(
            "Budgets and token limits cannot be checked right now; try again shortly."
        )
    if needs_redis:
        logger.warning("Governance let a call through unchecked (open mode; %s)", reason)
    return Admission()


def spend_usd(scope: Scope, now: datetime | None = None, *, with_reserved: bool = False) -> Decimal:
    """A scope's spend in its current budget period, from the interactions; with the
    worst cases still reserved by running calls when ``with_reserved``."""
    from apps.ai_interactions.models import AIInteraction, InteractionStatus

    now = now or datetime.now(UTC)
    field_name = {"key": "api_key_id", "user": "owner_id", "team": "team_id"}[scope.kind]
    rows = AIInteraction.objects.filter(
        **{field_name: scope.id}, created_at__gte=period_start(scope.limits.period, now)
    )
    totals = rows.aggregate(
        spent=Sum("cost_usd"),
        reserved=Sum(
            "reserved_usd",
            filter=Q(
                status=InteractionStatus.RUNNING,
                created_at__gte=now - timedelta(seconds=settings.GOVERNANCE_RESERVATION_SECONDS),
            ),
        ),
    )
    spent = totals["spent"] or Decimal(0)
    return spent + (totals["reserved"] or Decimal(0)) if with_reserved else spent


def _rebuild_spend(client: object, scope: Scope, key: str, now: datetime) -> None:
    """Put a scope's spend of the period back in Redis, from PostgreSQL."""
    spent = int(spend_usd(scope, now, with_reserved=True) * NANO)
    ttl = None if scope.limits.period == "total" else 40 * 86400
    client.set(key, spent, nx=True, ex=ttl)
    logger.info(
        "Rebuilt the %s spend of %s %s from the database", scope.limits.period, scope.kind, scope.id
    )
