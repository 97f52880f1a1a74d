"""The AI answer cache: answers in Redis, and one provider call per prompt at a time.

An answer (text, finish reason, tokens, model) is kept under
``ai:response:<prompt hash>`` for ``AI_CACHE_TTL`` seconds. Identical requests
that arrive together make one provider call: the first takes the prompt's
lock (``ai:lock:<prompt hash>``), the others poll until its answer is cached.
Looking up an answer and taking the lock is one round trip (a Lua script),
and so is caching the answer and releasing the lock, done once the caller's
response is out (:mod:`contextos.after_response`).

With Redis down, calls go on uncached and unlocked (logged). Without Redis
(the embedded default's database cache) the same is done with the cache's
atomic ``add`` for the lock, a few more round trips.
"""

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache as memoize
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache

from contextos.after_response import after_response
from contextos.cache import cache_key, django_redis_client
from contextos.exceptions import ServiceUnavailable
from contextos.timing import stage

logger = logging.getLogger(__name__)

# Polling interval of a request waiting for an identical one to be answered.
WAIT_INTERVAL = 0.05

# KEYS: answer, lock. ARGV: lock token, lock lifetime (ms).
# Returns {1, answer} on a hit, {0, 1} when the lock is this token's (taken now, or by an
# earlier look whose answer was lost), {0, 0} when another holds it.
_LOOKUP = """
local answer = redis.call('GET', KEYS[1])
if answer then return {1, answer} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 1} end
if redis.call('GET', KEYS[2]) == ARGV[1] then return {0, 1} end
return {0, 0}
"""
# KEYS: answer, lock. ARGV: lock token ('' for none), answer ('' for none), its lifetime (ms).
# Caches the answer, and deletes the lock only if it is still this request's.
_LAND = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


def response_cache_key(digest: str) -> str:
    return cache_key("ai", "response", digest)


def _lock_key(digest: str) -> str:
    return cache_key("ai", "lock", digest)


@memoize
def _scripts() -> tuple[Any, Any]:
    from redis.commands.core import Script

    # Run with an explicit client each time: none is registered here.
    return Script(None, _LOOKUP.encode()), Script(None, _LAND.encode())


def _keys(client: Any, digest: str) -> list[Any]:
    return [client.make_key(response_cache_key(digest)), client.make_key(_lock_key(digest))]


def cached_answer(digest: str) -> dict[str, Any] | None:
    return cache.get(response_cache_key(digest))  # a Redis outage reads as a miss


def _cached_value(answer: dict[str, Any], model: str) -> dict[str, Any]:
    # The model is kept with the answer so that ``ai_cache clear --model`` can find it.
    return {**answer, "model": model}


def _store(digest: str, value: dict[str, Any]) -> None:
    cache.set(response_cache_key(digest), value, timeout=settings.AI_CACHE_TTL)


class Flight:
    """One request's lookup of a prompt: the cached ``answer``, or the right to ask for it.

    Without a cached answer, give the provider's to :meth:`keep`; it is cached
    when the flight ends.
    """

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.answer: dict[str, Any] | None = None
        self.kept: dict[str, Any] | None = None
        self._token: str | None = None

    def keep(self, answer: dict[str, Any], *, model: str) -> None:
        self.kept = _cached_value(answer, model)


class FirstLook:
    """A prompt's first lookup (its answer, or its lock taken), sent along another
    script's round trip to Redis (the admission's); :func:`single_flight` starts from
    its outcome. When the call goes no further, :meth:`let_go` releases what it took."""

    def __init__(self, digest: str, client: Any) -> None:
        self.digest = digest
        self.token = secrets.token_hex(16)
        self.outcome: list[Any] | None = None  # the lookup script's, once answered
        self._client = client

    @classmethod
    def of(cls, digest: str, *, enabled: bool = True) -> "FirstLook | None":
        """The look of ``digest`` to send along, when there is a Redis cache to look in."""
        client = django_redis_client() if enabled else None
        return cls(digest, client) if client is not None else None

    def script_call(self) -> tuple[Any, list[Any], list[Any]]:
        lookup, _ = _scripts()
        return lookup, _keys(self._client, self.digest), [self.token, _lock_ms()]

    def answered(self, result: Any) -> None:
        # Failed, it is looked up again, with the same token: a lock it took is found.
        self.outcome = None if isinstance(result, Exception) else result

    def let_go(self) -> None:
        if self.outcome is not None and not self.outcome[0] and self.outcome[1]:
            flight = Flight(self.digest)
            flight._token = self.token
            _land(flight, self._client, self._client.get_client(write=True))


@contextmanager
def single_flight(
    digest: str, *, enabled: bool = True, looked: FirstLook | None = None
) -> Iterator[Flight]:
    """Look ``digest`` up; on a miss, hold its lock until the answer is kept (see module).

    Not ``enabled`` (a call with ``cache: false``), the flight finds and keeps nothing.
    ``looked``: the first lookup, already sent (:class:`FirstLook`).
    """
    client = django_redis_client()
    flight = Flight(digest)
    if not enabled:
        yield flight
        return
    if client is None:
        _take_with_add(flight)
        try:
            yield flight
        finally:
            _land_with_set(flight)
        return
    redis = client.get_client(write=True)
    try:
        with stage("cache"):
            _take(flight, client, redis, looked)
    except Exception as error:
        logger.warning(
            "AI answer cache unavailable (%s: %s); calling the provider uncached",
            error.__class__.__name__,
            error,
        )
        redis = None
    try:
        yield flight
    finally:
        if redis is not None:
            # Its caller's client need not wait: the answer is kept and the lock released
            # once the response is out (a request that waits for the lock meanwhile waits
            # a moment more, then finds the answer).
            after_response(partial(_land, flight, client, redis))


def _lock_seconds() -> float:
    # Longer than the provider may take with every retry.
    return settings.AI_PROVIDER_TIMEOUT * settings.AI_PROVIDER_MAX_ATTEMPTS + 10


def _lock_ms() -> int:
    return int(_lock_seconds() * 1000)


def _take(flight: Flight, client: Any, redis: Any, looked: FirstLook | None = None) -> None:
    """Find the cached answer, or take the lock, waiting while another request holds it;
    ``looked``'s outcome, when it has one, is the first look."""
    lookup, _ = _scripts()
    keys = _keys(client, flight.digest)
    first = looked.outcome if looked is not None else None

    def answered_or_locked(token: str, hold: float) -> bool:
        nonlocal first
        if first is not None:
            (hit, value), first = first, None
        else:
            hit, value = lookup(keys=keys, args=[token, int(hold * 1000)], client=redis)
        if hit:
            flight.answer = client.decode(value)
        elif value:
            flight._token = token
        return bool(hit or value)

    _wait_for_answer_or_lock(answered_or_locked, looked.token if looked is not None else None)


def _wait_for_answer_or_lock(
    answered_or_locked: Callable[[str, float], bool], token: str | None = None
) -> None:
    """Look until an answer is cached or the lock is ``token``'s (a new one by default);
    past the lock's lifetime (its holder died), go on without it."""
    token = token or secrets.token_hex(16)
    hold = _lock_seconds()
    deadline = time.monotonic() + hold
    while not answered_or_locked(token, hold):
        if time.monotonic() >= deadline:
            logger.warning("Waited %.0f s for the AI cache lock; calling the provider", hold)
            return
        time.sleep(WAIT_INTERVAL)


def _land(flight: Flight, client: Any, redis: Any) -> None:
    """Cache the kept answer and release the lock, in one round trip."""
    if flight.kept is None and flight._token is None:
        return
    _, land = _scripts()
    answer = client.encode(flight.kept) if flight.kept is not None else b""
    try:
        with stage("cache"):  # a stream's: its response is out with its last chunk
            land(
                keys=_keys(client, flight.digest),
                args=[flight._token or "", answer, settings.AI_CACHE_TTL * 1000],
                client=redis,
            )
    except Exception as error:
        logger.warning(
            "Could not cache the AI answer for %s (%s: %s)",
            flight.digest,
            error.__class__.__name__,
            error,
        )


def _take_with_add(flight: Flight) -> None:
    """:func:`_take` for a cache without scripts: a lookup, then ``add`` of the lock."""

    def answered_or_locked(token: str, hold: float) -> bool:
        flight.answer = cached_answer(flight.digest)
        if flight.answer is not None:
            return True
        if not cache.add(_lock_key(flight.digest), token, timeout=int(hold)):
            return False
        flight._token = token
        # Answered and unlocked by another request between the lookup and the add.
        flight.answer = cached_answer(flight.digest)
        return True

    _wait_for_answer_or_lock(answered_or_locked)


def _land_with_set(flight: Flight) -> None:
    """:func:`_land` for a cache without scripts: cache the answer, then release the lock."""
    if flight.kept is not None:
        _store(flight.digest, flight.kept)
    if flight._token is not None and cache.get(_lock_key(flight.digest)) == flight._token:
        cache.delete(_lock_key(flight.digest))


# --- Operations: stats and clearing (ai_cache) -------------------------------------------


def _redis() -> Any:
    client = django_redis_client()
    if client is None:
        raise ServiceUnavailable("The AI answer cache needs Redis (REDIS_URL).")
    return client


def _cached_answer_keys(*, model: str | None) -> Iterator[list[bytes]]:
    """Batches of the Redis keys of cached answers (by SCAN), for ``model`` or all."""
    client = _redis()
    redis = client.get_client(write=True)
    batch: list[bytes] = []
    for key in redis.scan_iter(match=client.make_key(response_cache_key("*")), count=1000):
        batch.append(key)
        if len(batch) == 500:
            yield _of_model(client, redis, batch, model)
            batch = []
    if batch:
        yield _of_model(client, redis, batch, model)


def _of_model(client: Any, redis: Any, keys: list[bytes], model: str | None) -> list[bytes]:
    if model is None:
        return keys
    values = redis.mget(keys)
    return [
        key
        for key, value in zip(keys, values, strict=True)
        if value is not None and (client.decode(value) or {}).get("model") == model
    ]


def response_cache_stats(*, model: str | None = None) -> dict[str, int]:
    """How many answers are cached (for ``model`` or all) and the memory they take."""
    redis = _redis().get_client(write=True)
    keys = used = 0
    for batch in _cached_answer_keys(model=model):
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key)
        used += sum(size or 0 for size in pipe.execute())
        keys += len(batch)
    return {"keys": keys, "bytes": used}


def response_cache_clear(*, model: str | None = None) -> int:
    """Delete cached answers (for ``model`` or all) by SCAN, never KEYS or FLUSHDB."""
    redis = _redis().get_client(write=True)
    removed = 0
    for batch in _cached_answer_keys(model=model):
        if batch:
            removed += redis.unlink(*batch)
    return removed
