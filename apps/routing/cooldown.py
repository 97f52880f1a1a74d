"""Cooling down: a circuit breaker per deployment, shared by every process through Redis.

``ROUTING_COOLDOWN_FAILURES`` failures in a row, or one 429, cool a deployment for
``ROUTING_COOLDOWN_SECONDS`` (or the provider's ``Retry-After``). When the period
ends, one request probes it: a success closes the breaker, a failure cools it again.
While Redis is away each process keeps its own state, with the same rules.

Keys, per deployment id: ``routing:until:<id>`` (the epoch second the cooling ends,
kept a while after it so the probe is one request), ``routing:fails:<id>`` (failures
in a row) and ``routing:probe:<id>`` (held by the request that probes).
"""

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from contextos.cache import redis_client

logger = logging.getLogger(__name__)

# How long the breaker's state outlives the cooling (a probe happens in that time).
_STATE_SECONDS = 300

_FAILED = """
local fails = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[2] == '1' or fails >= tonumber(ARGV[3]) then
  local ends = tonumber(ARGV[4])
  redis.call('SET', KEYS[1], ARGV[4], 'EX', math.ceil(ends - tonumber(ARGV[6])) + ARGV[5])
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class State:
    """A deployment's breaker as read at the start of a call."""

    until: float | None = None  # cooling (or, once past, waiting for a probe) until then
    fails: int = 0
    requests: int = 0  # calls sent to it this minute (counted for its RPM cap)
    tokens: int = 0  # their estimated tokens (for its TPM cap)

    def cooling(self, now: float) -> bool:
        return self.until is not None and now < self.until

    def needs_probe(self, now: float) -> bool:
        return self.until is not None and now >= self.until


def _minute() -> int:
    return int(time.time() // 60)


def _usage_keys(deployment_id: str, minute: int) -> tuple[str, str]:
    return f"routing:rpm:{deployment_id}:{minute}", f"routing:tpm:{deployment_id}:{minute}"


def _keys(deployment_id: str) -> tuple[str, str, str]:
    return (
        f"routing:until:{deployment_id}",
        f"routing:fails:{deployment_id}",
        f"routing:probe:{deployment_id}",
    )


class _Local:
    """The same breaker in this process's memory (when Redis is away)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.until: dict[str, float] = {}
        self.fails: dict[str, int] = {}
        self.probing: dict[str, float] = {}
        self.usage: dict[tuple[str, int], list[int]] = {}  # (id, minute) -> [requests, tokens]


_local = _Local()
_script = None


def _state_keys(deployment_ids: list[str], minute: int) -> list[str]:
    return [key for i in deployment_ids for key in (*_keys(i)[:2], *_usage_keys(i, minute))]


def _states_of(deployment_ids: list[str], values: list[Any]) -> dict[str, State]:
    return {
        deployment_id: State(
            until=float(values[4 * n]) if values[4 * n] is not None else None,
            fails=int(values[4 * n + 1] or 0),
            requests=int(values[4 * n + 2] or 0),
            tokens=int(values[4 * n + 3] or 0),
        )
        for n, deployment_id in enumerate(deployment_ids)
    }


class StatesLook:
    """The deployments' states read along another script's round trip to Redis (the
    admission's): :func:`states` of the same deployments, this minute, is then free."""

    def __init__(self, deployment_ids: list[str]) -> None:
        self.deployment_ids = deployment_ids
        self.minute = _minute()
        self.values: list[Any] | None = None  # read as they came (a cache hit reads none)

    def script_call(self) -> tuple[Any, list[Any], list[Any]]:
        return _mget_script(), _state_keys(self.deployment_ids, self.minute), []

    def answered(self, result: Any) -> None:
        self.values = None if isinstance(result, Exception) else result

    def of(self, deployment_ids: list[str]) -> dict[str, State] | None:
        """The states read, when they are those of ``deployment_ids`` this minute."""
        if self.values is None or self.minute != _minute():
            return None
        read = _states_of(self.deployment_ids, self.values)
        if not all(deployment_id in read for deployment_id in deployment_ids):
            return None
        return {deployment_id: read[deployment_id] for deployment_id in deployment_ids}


@functools.cache
def _mget_script() -> Any:
    from redis.commands.core import Script

    return Script(None, b"return redis.call('MGET', unpack(KEYS))")


def states(deployment_ids: list[str], looked: StatesLook | None = None) -> dict[str, State]:
    """The breaker and this minute's usage of each deployment: one round trip to Redis,
    none when ``looked`` read them already."""
    if looked is not None and (read := looked.of(deployment_ids)) is not None:
        return read
    minute = _minute()
    try:
        client = redis_client()
        if client is not None:
            return _states_of(deployment_ids, client.mget(_state_keys(deployment_ids, minute)))
    except Exception as exc:
        logger.warning("Cooling down per process: Redis unavailable (%s)", exc.__class__.__name__)
    with _local.lock:
        return {
            i: State(
                until=_local.until.get(i),
                fails=_local.fails.get(i, 0),
                requests=_local.usage.get((i, minute), [0, 0])[0],
                tokens=_local.usage.get((i, minute), [0, 0])[1],
            )
            for i in deployment_ids
        }


def count_call(deployment_id: str, tokens: int) -> None:
    """Count a call (and its estimated tokens) against a capped deployment's minute."""
    minute = _minute()
    requests_key, tokens_key = _usage_keys(deployment_id, minute)
    try:
        client = redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            pipe.incr(requests_key)
            pipe.incrby(tokens_key, tokens)
            pipe.expire(requests_key, 120)
            pipe.expire(tokens_key, 120)
            pipe.execute()
            return
    except Exception as exc:
        logger.warning(
            "Deployment caps per process: Redis unavailable (%s)", exc.__class__.__name__
        )
    with _local.lock:
        for key in [key for key in _local.usage if key[1] < minute]:
            del _local.usage[key]
        usage = _local.usage.setdefault((deployment_id, minute), [0, 0])
        usage[0] += 1
        usage[1] += tokens


def claim_probe(deployment_id: str, seconds: float) -> bool:
    """Whether this request is the one to probe a deployment whose cooling has ended."""
    probe_key = _keys(deployment_id)[2]
    try:
        client = redis_client()
        if client is not None:
            return bool(client.set(probe_key, "1", nx=True, px=max(1, int(seconds * 1000))))
    except Exception as exc:
        logger.warning("Cooling down per process: Redis unavailable (%s)", exc.__class__.__name__)
    now = time.time()
    with _local.lock:
        if _local.probing.get(deployment_id, 0) > now:
            return False
        _local.probing[deployment_id] = now + seconds
        return True


def failed(
    deployment_id: str, *, failures: int, rate_limited: bool, retry_after: float | None
) -> bool:
    """Count ``failures`` of a deployment; True when that cooled it down."""
    now = time.time()
    period = (
        retry_after
        if rate_limited and retry_after is not None
        else settings.ROUTING_COOLDOWN_SECONDS
    )
    until = now + period
    threshold = settings.ROUTING_COOLDOWN_FAILURES
    try:
        client = redis_client()
        if client is not None:
            global _script
            if _script is None:
                _script = client.register_script(_FAILED)
            cooled = _script(
                keys=list(_keys(deployment_id)),
                args=[
                    failures,
                    "1" if rate_limited else "0",
                    threshold,
                    repr(until),
                    _STATE_SECONDS,
                    repr(now),
                ],
                client=client,
            )
            return bool(cooled)
    except Exception as exc:
        logger.warning("Cooling down per process: Redis unavailable (%s)", exc.__class__.__name__)
    with _local.lock:
        fails = _local.fails.get(deployment_id, 0) + failures
        if rate_limited or fails >= threshold:
            _local.until[deployment_id] = until
            _local.fails.pop(deployment_id, None)
            _local.probing.pop(deployment_id, None)
            return True
        _local.fails[deployment_id] = fails
        return False


def succeeded(deployment_id: str, state: State) -> None:
    """A deployment answered: its breaker closes (only a write when it was open or counting)."""
    if state.until is None and not state.fails:
        return
    try:
        client = redis_client()
        if client is not None:
            client.delete(*_keys(deployment_id))
            return
    except Exception as exc:
        logger.warning("Cooling down per process: Redis unavailable (%s)", exc.__class__.__name__)
    with _local.lock:
        _local.until.pop(deployment_id, None)
        _local.fails.pop(deployment_id, None)
        _local.probing.pop(deployment_id, None)


def reset() -> None:
    """Forget this process's breakers (tests)."""
    with _local.lock:
        _local.until.clear()
        _local.fails.clear()
        _local.probing.clear()
        _local.usage.clear()
