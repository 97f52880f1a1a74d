"""kombu's Redis transport, adjusted: a guard for lost connections, and one client per channel.

A guard for Celery workers on a Redis broker that loses its connection.

When Redis goes away while a worker holds unacknowledged messages, kombu
closes the broken connection (dropping its transport) and then, closing the
channel once more, tries to hand those messages back through that dropped
transport: an ``AttributeError`` that Celery treats as unrecoverable, so the
worker exits instead of reconnecting. Raising the broker's connection error
there instead lets Celery ignore it and reconnect as it does for any outage;
the messages come back after the visibility timeout, as for a killed worker.

One client per channel: kombu builds a new redis-py client object for every
command it sends outside the event loop (each publish, and each message a
worker takes and acknowledges), copying some 170 response callbacks each
time, a tenth of a publish's cost (profiled). The clients share the channel's
connection pool and are safe to share, so a channel keeps one.
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


def reuse_redis_clients() -> None:
    """Patch kombu's Redis channel to keep its synchronous client (once)."""
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel, "_contextos_reuses_clients", False):
        return
    create_client = channel._create_client

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create_client(self, asynchronous=True)
        client = self.__dict__.get("_contextos_client")
        # A channel that lost its connection builds a new pool: follow it.
        if client is None or client.connection_pool is not self.pool:
            client = self.__dict__["_contextos_client"] = create_client(self)
        return client

    channel._create_client = _create_client
    channel._contextos_reuses_clients = True
