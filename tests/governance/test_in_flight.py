"""Calls in flight: each key has at most ``API_MAX_PARALLEL_REQUESTS`` open at once (its
limits' ``max_parallel_requests`` instead when set), each web process at most
``WEB_MAX_STREAMS`` open streams; the places come back however a call ends.

In process, against real Redis: a streamed response left unread is a stream held open,
``response.close()`` is the server closing it (a client gone midway included).
"""

from typing import Any

import pytest
from django.test import override_settings

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.governance.limits import scopes_of
from apps.governance.models import Limits
from contextos.cache import redis_client
from contextos.streams import open_streams
from tests.factories import UserFactory
from tests.fakes import Reply
from tests.governance.test_enforcement import chats, route_to
from tests.health.test_degraded import redis_cache_at
from tests.sse import data_events

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
REFUSED = "too_many_concurrent_requests"


@pytest.fixture
def upstream(fake_openai, settings):
    settings.AI_PROVIDER_TIMEOUT = 2.0
    settings.AI_RETRY_BASE_DELAY = 0.01
    route_to(fake_openai)
    return fake_openai


@pytest.fixture
def key(user, client_for):
    """A key with no limits of its own, and a client calling with it."""
    key, raw = api_key_create(user=user, name="in flight")
    return key, client_for(raw)


def body(prompt: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 20,
        "cache": False,
        **fields,
    }


def chat(client, prompt: str):
    return client.post(CHAT, body(prompt), format="json")


def opened(client, prompt: str, path: str = CHAT):
    """A streamed call, started and left open (its client has read nothing yet)."""
    return client.post(path, body(prompt, stream=True), format="json")


def read(response) -> list[Any]:
    """Read a stream to its end (the test client then closes it, as a server does)."""
    assert response.status_code == 200, response.content
    return data_events(b"".join(response.streaming_content).decode())


def in_flight(key) -> int:
    """The key's places taken in Redis."""
    return redis_client().zcard(f"gov:key:{key.pk}:inflight")


def assert_refused_as_openai(response) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", REFUSED)


# --- The key's limit ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_key_without_limits_has_the_default_number_of_calls_open(
    key, client_for, upstream, settings
):
    settings.API_MAX_PARALLEL_REQUESTS = 3
    api_key, client = key
    streams = [opened(client, f"open {n}") for n in range(3)]
    assert [s.status_code for s in streams] == [200] * 3
    assert in_flight(api_key) == 3

    streamed = opened(client, "a fourth stream")
    whole = chat(client, "a fourth call")
    rest = client.post(
        "/api/v1/ai/interactions/",
        {"prompt": "a REST call", "model": "gpt-4o", "cache": False},
        format="json",
    )
    embedding = client.post(
        CHAT.replace("chat/completions", "embeddings"),
        {"model": "gpt-4o", "input": "an embedding"},
        format="json",
    )
    anthropic = client.post(MESSAGES, body("an Anthropic call"), format="json")
    _, other = api_key_create(user=UserFactory(), name="someone else's")
    others = chat(client_for(other), "another key is not held up")

    for refused in (streamed, whole, embedding):
        assert_refused_as_openai(refused)
    assert "(at most 3 at once)" in whole.json()["error"]["message"]
    assert rest.status_code == 429
    assert rest["Retry-After"] == "1"
    assert rest.json()["code"] == REFUSED
    assert rest.json()["details"]["max_parallel_requests"] == 3
    assert anthropic.status_code == 429
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert anthropic.json()["error"]["code"] == REFUSED
    assert others.status_code == 200
    # Refused before any provider call, and recorded nowhere.
    assert chats(upstream) == 4
    assert AIInteraction.objects.filter(api_key=api_key).count() == 0  # streams: at their end

    read(streams[0])
    assert chat(client, "once one ended").status_code == 200
    for stream in streams[1:]:
        read(stream)
    assert in_flight(api_key) == 0
    assert AIInteraction.objects.filter(api_key=api_key, status="succeeded").count() == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("own_limit", [1, 4], ids=["lower", "higher"])
def test_a_keys_max_parallel_requests_replaces_the_default(key, upstream, settings, own_limit):
    settings.API_MAX_PARALLEL_REQUESTS = 2
    api_key, client = key
    Limits.objects.create(api_key=api_key, max_parallel_requests=own_limit)

    streams = [opened(client, f"open {n}") for n in range(own_limit)]
    refused = opened(client, "one too many")

    assert [s.status_code for s in streams] == [200] * own_limit
    assert_refused_as_openai(refused)
    assert f"(at most {own_limit} at once)" in refused.json()["error"]["message"]
    for stream in streams:
        stream.close()
    assert in_flight(api_key) == 0


@pytest.mark.django_db
def test_the_default_applies_to_the_calls_a_client_waits_for_and_keeps_a_keys_other_limits(
    user, settings
):
    settings.API_MAX_PARALLEL_REQUESTS = 16
    free, _ = api_key_create(user=user, name="free")
    paced, _ = api_key_create(user=user, name="paced")
    Limits.objects.create(api_key=paced, rpm_limit=60)

    def key_limits(api_key, waited_for: bool = True):
        scopes = scopes_of(
            key_id=api_key.pk, team_id=None, user_id=user.pk, in_flight_default=waited_for
        )
        return next((s.limits for s in scopes if s.kind == "key"), None)

    assert key_limits(free).parallel == 16
    assert (key_limits(paced).parallel, key_limits(paced).rpm) == (16, 60)
    # Async and batch calls wait in the task queue, not in a web thread.
    assert key_limits(free, waited_for=False) is None
    settings.API_MAX_PARALLEL_REQUESTS = 0  # no default
    assert key_limits(free) is None


@pytest.mark.django_db
def test_with_redis_down_the_default_limit_lets_calls_through(key, upstream, closed_port, settings):
    settings.API_MAX_PARALLEL_REQUESTS = 1
    _, client = key
    with override_settings(CACHES=redis_cache_at(closed_port)):
        assert chat(client, "unchecked").status_code == 200


# --- Places given back ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_keys_place_comes_back_however_its_call_ends(key, upstream, settings):
    settings.API_MAX_PARALLEL_REQUESTS = 1
    api_key, client = key

    def next_call_is_let_in() -> bool:
        answer = chat(client, "the next call")
        return answer.status_code == 200 and in_flight(api_key) == 0

    assert chat(client, "answered").status_code == 200
    assert next_call_is_let_in()

    upstream.script(Reply(status=500))
    assert chat(client, "the provider fails").status_code == 502
    assert next_call_is_let_in()

    upstream.script(Reply(status=500))
    assert opened(client, "the provider fails before streaming").status_code == 502
    assert next_call_is_let_in()

    upstream.script(Reply(fail_after=2))
    events = read(opened(client, "one two three four five six"))
    assert events[-2]["error"]["type"] == "provider_error"
    assert next_call_is_let_in()

    upstream.script(Reply(chunk_delay=0.05))
    cut = opened(client, "one two three four five six")
    next(cut.streaming_content)
    cut.close()  # the client left after the first event
    assert next_call_is_let_in()

    opened(client, "never read at all").close()
    assert next_call_is_let_in()

    cut_short = AIInteraction.objects.filter(api_key=api_key, error__type="client_disconnected")
    assert cut_short.count() == 2
    assert open_streams.count == 0


# --- The process's open streams -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_process_refuses_streams_past_web_max_streams_and_frees_a_place_on_close(
    key, client_for, upstream, settings
):
    settings.WEB_MAX_STREAMS = 2
    api_key, client = key
    _, other = api_key_create(user=UserFactory(), name="someone else's")
    other_client = client_for(other)

    held = [opened(client, "first"), opened(other_client, "second")]
    refused = opened(client, "a third stream")
    refused_messages = opened(other_client, "a third, as Anthropic's", path=MESSAGES)
    whole = chat(other_client, "not streamed: not capped")

    assert [s.status_code for s in held] == [200, 200]
    assert open_streams.count == 2
    assert_refused_as_openai(refused)
    assert "streams" in refused.json()["error"]["message"]
    assert refused_messages.status_code == 429
    assert refused_messages["Retry-After"] == "1"
    assert refused_messages.json()["error"] == {
        "type": "rate_limit_error",
        "message": refused_messages.json()["error"]["message"],
        "code": REFUSED,
    }
    assert whole.status_code == 200
    # Refused before admission: no key place taken, no provider call, nothing recorded.
    assert in_flight(api_key) == 1
    assert chats(upstream) == 3
    assert AIInteraction.objects.count() == 1

    next(held[0].streaming_content)
    held[0].close()  # the client went away
    assert open_streams.count == 1
    read(opened(client, "a stream once one closed"))
    read(held[1])
    assert open_streams.count == 0
    assert in_flight(api_key) == 0


@pytest.mark.django_db(transaction=True)
def test_a_stream_its_key_refuses_gives_back_its_process_place(key, upstream, settings):
    settings.API_MAX_PARALLEL_REQUESTS = 1
    _, client = key
    held = opened(client, "held")

    assert_refused_as_openai(opened(client, "refused by the key's limit"))
    assert open_streams.count == 1
    held.close()
    assert open_streams.count == 0
