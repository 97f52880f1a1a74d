"""A Lua script sent to Redis with its reply read later (``script_sent``): Redis runs it
as it arrives, the reply comes back when asked for, and the connection is given back."""

import time
import uuid

import pytest
import redis
from redis.exceptions import ResponseError

from contextos.cache import redis_client, script_sent

SET_AND_ANSWER = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"


def _key() -> str:
    return f"test:script-sent:{uuid.uuid4().hex}"


def _set_within(key: str, seconds: float) -> bytes | None:
    """The key's value as another connection reads it, waiting for it at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while (value := redis_client().get(key)) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return value


def test_a_script_sent_runs_before_its_reply_is_read():
    client = redis_client()
    key = _key()
    script = client.register_script(SET_AND_ANSWER)
    script(keys=[_key()], args=["loaded"])  # known to the server: sent by its digest

    reply = script_sent(client, script, keys=[key], args=["done"])

    assert _set_within(key, seconds=2) == b"done"  # run, the reply not read yet
    assert reply() == b"done"


def test_a_script_the_server_does_not_know_is_run_whole_when_its_reply_is_read():
    client = redis_client()
    key = _key()
    # A script never loaded (its own text), as after a restart or SCRIPT FLUSH.
    script = client.register_script(f"-- {uuid.uuid4().hex}\n{SET_AND_ANSWER}")

    reply = script_sent(client, script, keys=[key], args=["whole"])

    assert reply() == b"whole"
    assert client.get(key) == b"whole"
    assert client.script_exists(script.sha) == [True]


def test_each_reply_read_gives_its_connection_back(settings):
    # A pool of one connection: a connection not given back would fail the next call.
    client = redis.Redis.from_url(settings.REDIS_URL, max_connections=1)
    script = client.register_script(SET_AND_ANSWER)
    failing = client.register_script("return redis.call('INCR', KEYS[1])")
    key = _key()
    client.set(key, "not a number")

    for number in range(20):
        answer = script_sent(client, script, keys=[_key()], args=[str(number)])
        assert answer() == str(number).encode()
        with pytest.raises(ResponseError):
            script_sent(client, failing, keys=[key], args=[])()
    client.close()
