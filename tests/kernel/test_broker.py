"""The worker's guard against kombu's crash when a Redis broker connection is lost."""

import uuid

import pytest
from django.conf import settings
from kombu import Connection, Queue
from kombu.common import ignore_errors

import config.celery  # noqa: F401 - installs the guard, as every worker does


def test_handing_back_messages_through_a_dropped_redis_transport_is_a_connection_error():
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs the Redis broker")
    queue = Queue(f"guard-{uuid.uuid4().hex}")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.Producer().publish({"n": 1}, routing_key=queue.name, declare=[queue])
        received = []
        channel = conn.channel()
        consumer = conn.Consumer(
            [queue], channel=channel, callbacks=[lambda b, m: received.append(m)]
        )
        consumer.consume()
        conn.drain_events(timeout=5)
        assert len(received) == 1  # taken, not acknowledged
        # What Celery's consumer leaves after a lost connection: the transport dropped
        # (kombu's collect()) while a channel still holds the unacknowledged message.
        conn.transport.client = None

        # Celery ignores connection errors here and reconnects; an AttributeError
        # would stop the worker.
        ignore_errors(conn, channel.close)
        assert channel.closed
        conn.transport.client = conn
        channel = conn.channel()
        channel.queue_delete(queue.name)
