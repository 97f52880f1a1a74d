"""Helpers over the shared cache: namespaced keys and a real liveness probe."""

from django.core.cache import caches


def cache_key(namespace: str, *parts: object) -> str:
    """``namespace:part1:part2`` — the project's key convention (``ai:response:<hash>``)."""
    return ":".join([namespace, *(str(part) for part in parts)])


def cache_ping(alias: str = "default") -> None:
    """Raise when the cache cannot answer.

    The Redis cache ignores (and logs) errors on ordinary calls so that an
    outage degrades to misses; a probe must see the error, so it talks to
    the Redis client directly.
    """
    cache = caches[alias]
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        client.get_client(write=True).ping()
        return
    cache.set(cache_key("health", "ping"), 1, timeout=5)
