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


def test_a_channel_publishes_and_acknowledges_through_one_redis_client():
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs the Redis broker")
    queue = Queue(f"clients-{uuid.uuid4().hex}")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        producer = conn.Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, routing_key=queue.name, declare=[queue])
        client = channel._create_client()

        received, tags = [], []

        def take(body, message):
            received.append(body["n"])
            tags.append(message.delivery_tag)
            message.ack()

        consumer = conn.Consumer([queue], channel=channel, callbacks=[take])
        consumer.consume()
        for _ in range(3):
            conn.drain_events(timeout=5)

        assert sorted(received) == [0, 1, 2]
        assert channel._create_client() is client
        assert channel.client.llen(queue.name) == 0  # all taken
        assert not any(channel.client.hexists(channel.unacked_key, tag) for tag in tags)

        channel._pool = None  # what kombu does when the connection is lost
        assert channel._create_client() is not client
        channel.queue_delete(queue.name)
