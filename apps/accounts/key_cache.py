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
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.accounts.models import APIKey
from contextos.cache import cache_key, django_redis_client

# Longer than any request takes between reading a key and caching it.
TOMBSTONE_SECONDS = 10
_TOMBSTONE = "forgotten"


def _enabled() -> bool:
    return settings.API_KEY_CACHE_SECONDS > 0 and django_redis_client() is not None


def _key(digest: str) -> str:
    return cache_key("auth", "apikey", digest)


def cached_key(
    digest: str, *, count: tuple[str, int] | None = None
) -> tuple[APIKey | None, int | None]:
    """The cached key (with its user) whose hash is ``digest``, or None; and, when
    ``count`` names a rate-limit counter and its lifetime, the counter incremented in
    the same round trip (None when it could not be)."""
    if not _enabled():
        return None, None
    if count is None:
        found = cache.get(_key(digest))  # a Redis outage reads as a miss
        return (found if isinstance(found, APIKey) else None), None
    counter, lifetime = count
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
    return (found if isinstance(found, APIKey) else None), counted


def remember(api_key: APIKey) -> None:
    """Cache ``api_key`` (read from the database with its user), unless it just changed."""
    if _enabled():
        cache.add(_key(api_key.key_hash), api_key, timeout=settings.API_KEY_CACHE_SECONDS)


def forget(digests: list[str]) -> None:
    """Drop the cached keys of ``digests``, now and (inside a transaction) when it commits."""
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
