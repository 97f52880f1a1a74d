"""A guard for Celery workers on a Redis broker that loses its connection.

When Redis goes away while a worker holds unacknowledged messages, kombu
closes the broken connection (dropping its transport) and then, closing the
channel once more, tries to hand those messages back through that dropped
transport: an ``AttributeError`` that Celery treats as unrecoverable, so the
worker exits instead of reconnecting. Raising the broker's connection error
there instead lets Celery ignore it and reconnect as it does for any outage;
the messages come back after the visibility timeout, as for a killed worker.
"""

from typing import Any


def guard_redis_reconnect() -> None:
    """Patch kombu's Redis channel (once; called where the Celery app is made)."""
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    channel = kombu_redis.Channel
    if getattr(channel, "_contextos_guarded", False):
        return
    connparams = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("The broker connection is closed.")
        return connparams(self, asynchronous=asynchronous)

    channel._connparams = _connparams
    channel._contextos_guarded = True
