"""The shared cache: the embedded default's backend, namespaced keys, Lua scripts sent in
one round trip and a real liveness probe."""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


class ScriptCall(Protocol):
    """A Lua script's call that can ride along another's round trip to Redis."""

    def script_call(self) -> tuple[Any, list[Any], list[Any]]:
        """The script (a ``redis`` ``Script``), its keys and its arguments."""

    def answered(self, result: Any) -> None:
        """Its result, or the exception it raised."""


def scripts_in_one_round_trip(
    client: Any, calls: Sequence[tuple[Any, list[Any], list[Any]]]
) -> list[Any]:
    """Each call's result (or the exception it raised, in its place), the scripts sent in
    one pipeline by their digests.

    ``redis``'s own pipelines ask first whether every script is loaded (a round trip
    of its own); here a script the server does not know yet is sent again alone, whole.
    """
    from redis.exceptions import NoScriptError

    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    try:
        results = pipe.execute(raise_on_error=False)
    except Exception as error:  # the connection failed
        return [error] * len(calls)
    for position, (script, keys, args) in enumerate(calls):
        if isinstance(results[position], NoScriptError):
            try:
                results[position] = script(keys=keys, args=args, client=client)
            except Exception as error:
                results[position] = error
    return results


def script_sent(client: Any, script: Any, *, keys: list[Any], args: list[Any]) -> Callable[[], Any]:
    """Send the script's call by its digest and return at once, the reply left unread:
    Redis runs it as soon as it reads it, while the caller goes on. The function returned
    reads the call's result (raising its error) and gives the connection back; call it
    once, later (after a response: :func:`contextos.after_response.after_response`).

    A script the server does not know yet is run again, whole, when the reply is read.
    """
    from redis.exceptions import NoScriptError, ResponseError

    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except BaseException:
        pool.release(connection)
        raise

    def reply() -> Any:
        try:
            return connection.read_response()
        except NoScriptError:
            pass  # run whole below, once the connection is back
        except ResponseError:
            raise  # the server answered: the connection is in step
        except BaseException:
            connection.disconnect()  # a reply half read, or none: start afresh
            raise
        finally:
            pool.release(connection)
        return script(keys=keys, args=args, client=client)

    return reply
