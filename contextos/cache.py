"""The shared cache: the embedded default's backend, namespaced keys and a real liveness probe."""

from typing import Any

from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache as DjangoDatabaseCache
from django.db import router, transaction


class DatabaseCache(DjangoDatabaseCache):
    """Django's database cache (the embedded default's, without Redis) with an atomic ``incr``.

    Django's reads the value, then writes it back: two processes counting at once
    lose one increment (4 processes x 100 requests on one key counted 201). In one
    transaction, SQLite's IMMEDIATE transactions hold the write lock from the read
    to the write, so the rate limit counts exactly; ``add`` was atomic already.
    """

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        with transaction.atomic(using=router.db_for_write(self.cache_model_class)):
            return super().incr(key, delta, version)


def cache_key(namespace: str, *parts: object) -> str:
    """``namespace:part1:part2`` — the project's key convention (``ai:response:<hash>``)."""
    return ":".join([namespace, *(str(part) for part in parts)])


def django_redis_client(alias: str = "default") -> Any | None:
    """django-redis' client of the cache (keys, serialization), or None when it is not Redis."""
    client = getattr(caches[alias], "client", None)
    return client if hasattr(client, "get_client") else None


def redis_client(alias: str = "default") -> Any | None:
    """The raw Redis client behind the cache, or None when the cache is not Redis.

    Unlike the cache's own calls, its errors are raised, not ignored.
    """
    client = django_redis_client(alias)
    return client.get_client(write=True) if client is not None else None


def cache_ping(alias: str = "default") -> None:
    """Raise when the cache cannot answer.

    The Redis cache ignores (and logs) errors on ordinary calls so that an
    outage degrades to misses; a probe must see the error, so it talks to
    the Redis client directly.
    """
    redis = redis_client(alias)
    if redis is not None:
        redis.ping()
        return
    caches[alias].set(cache_key("health", "ping"), 1, timeout=5)
