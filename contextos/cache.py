"""Helpers over the shared cache: namespaced keys and a real liveness probe."""

from typing import Any

from django.core.cache import caches


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
