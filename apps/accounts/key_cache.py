"""Authenticated API keys, kept in the shared cache for ``API_KEY_CACHE_SECONDS``.

Every API request authenticates; reading its key and user from PostgreSQL is
a query and two model instances each time. The key, with its user, is kept
under ``auth:apikey:<sha256 of the key>`` (the digest the database stores,
never the key) and revocation, expiry and the user's state are checked on
that copy at every request, as on a database row.

Any save or deletion of a key or of its user (revocation, a new expiry,
deactivation) replaces the entry by a short-lived tombstone at once and
again when the transaction commits; while it lasts, requests read the
database and cannot cache a copy read before the change. A change therefore
holds from the next request in every process. The entry's lifetime bounds
what a change made around the models (raw SQL, a Redis partition during the
change) can miss.

Only Redis is used: the embedded default's cache is a table of the database,
where reading a cached key would cost the query it saves, so keys are read
from the database each time (and every process sees a change at once).

A process also keeps the keys it has read from that cache, with a fingerprint of
the entry (:func:`known_key`). A call of the gateway takes such a key on trust
and confirms it in the one round trip that admits the call
(:func:`apps.governance.admission.admit`): the entry must still be the one this
process read, else nothing is taken and the request is served again with its key
read afresh (:class:`KeyUnconfirmed`). The round trip that read the key is saved;
no call reaches a provider on a key changed before it was admitted.
"""

import copy
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from rest_framework.exceptions import Throttled

from apps.accounts.models import APIKey
from contextos.cache import cache_key, django_redis_client
from contextos.throttling import Window

# Longer than any request takes between reading a key and caching it.
TOMBSTONE_SECONDS = 10
_TOMBSTONE = "forgotten"

# The keys this process has read from the cache: digest -> (until, entry, fingerprint, key).
_known: dict[str, tuple[float, str, str, APIKey]] = {}
_KNOWN_AT_MOST = 10_000


class KeyUnconfirmed(Exception):
    """A key taken on trust is no longer the one cached (changed, revoked, dropped), or
    could not be checked: its request is to be served again, its key read afresh."""


@dataclass
class KeyConfirmation:
    """What confirms a key taken on trust, in a script's round trip: its cache entry,
    whose bytes must hash to ``fingerprint``, and the request counted in its rate-limit
    ``window`` (``API_RATE_LIMIT``; None: no limit)."""

    digest: str
    entry: str
    fingerprint: str
    window: Window | None
    confirmed: bool = False

    def script_keys(self) -> list[str]:
        # The counter is made of a digest and numbers: a valid key, not checked again.
        return [self.entry, cache.make_key(self.window.counter) if self.window else self.entry]

    def script_args(self) -> list[object]:
        if self.window is None:
            return [self.fingerprint, -1, 0]
        return [self.fingerprint, self.window.limit, self.window.lifetime]

    def answered(self, verdict: str) -> None:
        """The script's verdict: ``key_changed`` (raises :class:`KeyUnconfirmed`),
        ``throttled`` (raises DRF's :class:`Throttled`, as the throttle does), or any
        other, which confirms the key."""
        if verdict == "key_changed":
            _known.pop(self.digest, None)
            raise KeyUnconfirmed
        self.confirmed = True
        if verdict == "throttled":
            raise Throttled(wait=max(self.window.ends_in, 1.0))

    def unanswered(self, error: Exception | None) -> None:
        """The script could not run: the key stays unconfirmed (raises)."""
        raise KeyUnconfirmed from error


def _enabled() -> bool:
    return settings.API_KEY_CACHE_SECONDS > 0 and django_redis_client() is not None


def _key(digest: str) -> str:
    return cache_key("auth", "apikey", digest)


def cached_key(digest: str, *, count: Window | None = None) -> tuple[APIKey | None, int | None]:
    """The cached key (with its user) whose hash is ``digest``, or None; and, when
    ``count`` is the request's rate-limit window, its counter incremented in the same
    round trip (None when it could not be).

    A key read here is known to this process from then on (:func:`known_key`)."""
    if not _enabled():
        return None, None
    if count is None:
        found = cache.get(_key(digest))  # a Redis outage reads as a miss
        return (found if isinstance(found, APIKey) else None), None
    counter, lifetime = count.counter, count.lifetime
    try:
        client = django_redis_client()
        pipe = client.get_client(write=True).pipeline(transaction=False)
        pipe.get(cache.make_and_validate_key(_key(digest)))
        pipe.incr(cache.make_and_validate_key(counter))
        pipe.expire(cache.make_and_validate_key(counter), lifetime, nx=True)
        raw, counted, _ = pipe.execute()
        found = client.decode(raw) if raw is not None else None
    except Exception:
        return cached_key(digest)[0], None  # the cache's own path, which logs the outage
    if not isinstance(found, APIKey):
        return None, counted
    _know(digest, raw, found)
    return found, counted


def _know(digest: str, raw: bytes, api_key: APIKey) -> None:
    """Keep ``api_key``, whose cache entry holds ``raw``, as known to this process."""
    if len(_known) >= _KNOWN_AT_MOST:
        _known.clear()
    fingerprint = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    until = time.monotonic() + settings.API_KEY_CACHE_SECONDS
    entry = cache.make_and_validate_key(_key(digest))
    _known[digest] = (until, entry, fingerprint, copy.copy(api_key))


def known_key(digest: str, window: Window | None) -> APIKey | None:
    """A copy of the key of ``digest`` as this process last read it from the cache (for at
    most ``API_KEY_CACHE_SECONDS``), to be confirmed (its ``confirmation``); or None.

    ``window`` is the request's rate-limit window, counted as the key is confirmed."""
    known = _known.get(digest)
    if known is None or known[0] < time.monotonic():
        return None
    _, entry, fingerprint, template = known
    api_key = copy.copy(template)
    api_key.confirmation = KeyConfirmation(digest, entry, fingerprint, window)
    return api_key


def known_keys_clear() -> None:
    """Forget every key this process has read (tests, whose cache is emptied)."""
    _known.clear()


def remember(api_key: APIKey) -> None:
    """Cache ``api_key`` (read from the database with its user), unless it just changed;
    known to this process once cached."""
    if not _enabled():
        return
    client = django_redis_client()
    try:
        raw = client.encode(api_key)
        entry = cache.make_and_validate_key(_key(api_key.key_hash))
        added = client.get_client(write=True).set(
            entry, raw, nx=True, ex=settings.API_KEY_CACHE_SECONDS
        )
    except Exception:
        # The cache's own path, which logs the outage.
        cache.add(_key(api_key.key_hash), api_key, timeout=settings.API_KEY_CACHE_SECONDS)
        return
    if added:
        _know(api_key.key_hash, raw, api_key)


def forget(digests: list[str]) -> None:
    """Drop the cached keys of ``digests``, now and (inside a transaction) when it commits."""
    for digest in digests:
        _known.pop(digest, None)
    if not digests or not _enabled():
        return

    def tombstones() -> None:
        cache.set_many(dict.fromkeys(map(_key, digests), _TOMBSTONE), timeout=TOMBSTONE_SECONDS)

    tombstones()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(tombstones)


def refresh(digest: str) -> None:
    """Drop the cached copy of a key the database has newer data for (its last use).

    A tombstone stays: it keeps out copies read before a change.
    """
    _known.pop(digest, None)
    if _enabled() and cache.get(_key(digest)) != _TOMBSTONE:
        cache.delete(_key(digest))


def _key_changed(sender: Any, instance: APIKey, created: bool = False, **kwargs: Any) -> None:
    if not created:  # a new key cannot have been cached
        forget([instance.key_hash])


def _user_changed(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created:
        digests = APIKey.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True)
        forget(list(digests))


def connect_signals() -> None:
    for name, signal in (("saved", post_save), ("deleted", post_delete)):
        signal.connect(_key_changed, sender=APIKey, dispatch_uid=f"key_cache.key_{name}")
        signal.connect(
            _user_changed, sender=get_user_model(), dispatch_uid=f"key_cache.user_{name}"
        )
