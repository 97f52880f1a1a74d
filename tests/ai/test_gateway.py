"""The streamed ``POST /v1/chat/completions`` as a client sees it: cache hits, provider
failures, a client hanging up, identical streams arriving together.

Driven only through HTTP (in process, or a real gunicorn for disconnects and concurrency),
the database and Redis.
"""

import http.client
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from openai import OpenAI

from apps.accounts.services import api_key_create
from apps.ai_interactions.answer_cache import _lock_key
from apps.ai_interactions.models import AIInteraction
from contextos.cache import django_redis_client
from tests.fakes import FakeServer, Reply, anthropic_server, openai_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import wait_for
from tests.sse import data_events
from tests.together import all_at_once

COMPLETIONS = "/v1/chat/completions"
MODEL = "fake-gpt"
# The server's provider settings: the prompt's lock lives 10 x 3 + 10 = 40 s.
PROVIDER_TIMEOUT = 10
PROVIDER_ATTEMPTS = 3
LOCK_SECONDS = PROVIDER_TIMEOUT * PROVIDER_ATTEMPTS + 10


def calls(fake: FakeServer) -> int:
    """Requests the fake provider got for completions."""
    return sum(1 for request in fake.requests if request["path"] == fake.main_path)


def chat(prompt: str, *, model: str = MODEL, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **fields}


def content_of(events: list[Any]) -> str:
    """The answer's text assembled from the chunks' deltas."""
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


def stream(client, body: dict[str, Any]) -> list[Any]:
    """POST ``body`` as a streamed completion in process; its events, read to the end."""
    response = client.post(COMPLETIONS, {**body, "stream": True}, format="json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    try:
        return data_events(b"".join(response.streaming_content).decode())
    finally:
        response.close()


def gateway_rows(**filters: Any) -> list[AIInteraction]:
    return list(AIInteraction.objects.filter(mode="gateway", **filters).order_by("created_at"))


# In process: cache hits and provider failures


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_streamed", [False, True], ids=["after-a-call", "after-a-stream"])
def test_a_repeated_stream_is_answered_from_the_cache(
    api_client, openai_model, each_shared_cache, first_streamed
):
    body = chat("tell me about caches", temperature=0.2, max_tokens=50)
    if first_streamed:
        first = content_of(stream(api_client, body))
    else:
        answered = api_client.post(COMPLETIONS, body, format="json")
        assert answered.status_code == 200
        first = answered.json()["choices"][0]["message"]["content"]
    assert first == "fake: tell me about caches"
    assert calls(openai_model) == 1

    events = stream(api_client, {**body, "stream_options": {"include_usage": True}})

    assert content_of(events) == first
    assert calls(openai_model) == 1
    assert events[-1] == "[DONE]"
    # The last chunk carries the usage of the cached answer: 4 prompt words, 5 answer words.
    assert events[-2]["choices"] == []
    assert events[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    [repeat] = gateway_rows(cached=True)
    assert (repeat.status, repeat.response, repeat.cost_usd) == ("succeeded", first, Decimal(0))
    [original] = gateway_rows(cached=False)
    assert original.cost_usd > 0


@dataclass
class Upstream:
    fake: FakeServer
    model: str
    midway_error: str


@pytest.fixture(params=["openai", "anthropic"])
def upstream(request) -> Upstream:
    """A streaming provider: the fake OpenAI server, or the fake Anthropic one."""
    if request.param == "openai":
        return Upstream(request.getfixturevalue("openai_model"), MODEL, openai_server.MIDWAY_ERROR)
    fake = request.getfixturevalue("anthropic_model")
    return Upstream(fake, "fake-claude", anthropic_server.MIDWAY_ERROR)


@pytest.mark.django_db(transaction=True)
def test_a_provider_failing_mid_stream_ends_it_with_an_error_event(api_client, upstream):
    upstream.fake.script(Reply(fail_after=2))
    body = chat("one two three four", model=upstream.model)

    events = stream(api_client, body)

    assert content_of(events) == "fake: one"
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert {"message", "type", "code"} <= set(error)
    assert error["message"]
    # Words already went out: calling the provider again would repeat them.
    assert calls(upstream.fake) == 1
    [row] = gateway_rows()
    assert (row.status, row.error["type"]) == ("failed", "server_error")
    assert upstream.midway_error in row.error["message"]

    # The cut answer was not cached: the same request again gets the whole answer.
    again = stream(api_client, body)

    assert content_of(again) == "fake: one two three four"
    assert calls(upstream.fake) == 2
    assert [row.status for row in gateway_rows()] == ["failed", "succeeded"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "error_type"), [(500, "server_error"), (429, "rate_limited")], ids=["500", "429"]
)
def test_a_provider_failing_before_any_output_is_an_http_error(
    api_client, openai_model, status, error_type
):
    openai_model.script(*[Reply(status=status, headers={"Retry-After": "0"})] * 3)

    response = api_client.post(COMPLETIONS, chat("never answered", stream=True), format="json")

    # Nothing was streamed yet: the client gets the status a whole call would (a 502
    # after the retries), which its SDK retries or raises, not a 200 with an error event.
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "provider_error")
    # Retried as any call is, before giving up.
    assert calls(openai_model) == 3
    [row] = gateway_rows()
    assert (row.status, row.error["type"], len(row.attempts)) == ("failed", error_type, 3)


# A real server (gunicorn): a client hanging up, identical streams together


def server_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODELS": f"{MODEL}:1.00:2.00",
        "AI_PROVIDER_TIMEOUT": str(PROVIDER_TIMEOUT),
        "AI_PROVIDER_MAX_ATTEMPTS": str(PROVIDER_ATTEMPTS),
        "AI_RETRY_BASE_DELAY": "0.01",
        # One process whose threads hold every stream of a test at once.
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "16",
    }


def read_then_hang_up(base_url: str, key: str, body: dict[str, Any]) -> str:
    """Stream ``body``, close the connection once the first words arrived; the text seen."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    seen: list[str] = []
    try:
        connection.request(
            "POST",
            COMPLETIONS,
            json.dumps({**body, "stream": True}),
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        while not "".join(seen):
            line = response.readline().decode()
            assert line, "the stream ended before any words"
            seen.append(content_of(data_events(line)))
        response.close()
    finally:
        connection.close()
    return "".join(seen)


@pytest.mark.server
def test_a_client_hanging_up_mid_stream_is_recorded_and_frees_the_prompt(
    start_web, user, fake_openai
):
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="gateway")
    prompt = " ".join(f"word{number}" for number in range(30))
    full = f"fake: {prompt}"
    fake_openai.script(Reply(chunk_delay=0.2))  # 6 s for the whole answer

    seen = read_then_hang_up(base, key, chat(prompt))

    row = wait_for(
        lambda: AIInteraction.objects.filter(
            owner=user, mode="gateway", status__in=["succeeded", "failed"]
        ).first(),
        timeout=10,
        message="the cut stream was never recorded",
    )
    assert row.status == "failed"
    assert row.error["type"] == "client_disconnected"
    # The words sent before the client left, no more than the answer had.
    assert row.response.startswith(seen)
    assert full.startswith(row.response)
    assert row.response != full
    # The prompt's lock went with the stream, not at the end of its 40 s lifetime.
    cache = django_redis_client()
    lock = cache.make_key(_lock_key(row.prompt_hash))
    redis = cache.get_client(write=True)
    wait_for(lambda: not redis.exists(lock), timeout=2, message="the prompt's lock is still held")

    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=LOCK_SECONDS + 20)
    asked = time.monotonic()
    chunks = client.chat.completions.create(**chat(prompt), stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    waited = time.monotonic() - asked
    assert text == full
    assert waited < 5, f"the same prompt again waited {waited:.1f} s"
    assert calls(fake_openai) == 2


@pytest.mark.server
def test_a_whole_answer_is_cached_for_the_next_call_even_on_a_new_connection(
    start_web, user, fake_openai
):
    """The answer is kept and the prompt's lock released after the response is sent: a
    call arriving on another connection meanwhile waits a moment, never the lock's life."""
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="gateway")
    texts, waits = [], []
    for _ in range(5):
        # A client of its own each time: a new connection, not the kept-alive one.
        client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
        started = time.monotonic()
        texts.append(client.chat.completions.create(**chat("once only")).choices[0].message.content)
        waits.append(time.monotonic() - started)
        client.close()

    assert texts == ["fake: once only"] * 5
    assert calls(fake_openai) == 1
    assert max(waits[1:]) < 5, f"an identical call waited {max(waits[1:]):.1f} s"
    assert sorted(row.cached for row in gateway_rows(owner=user)) == [False] + [True] * 4


@pytest.mark.server
@pytest.mark.parametrize("stream", [True, False], ids=["streams", "whole-calls"])
def test_ten_identical_calls_together_make_one_upstream_request(
    start_web, user, fake_openai, stream
):
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="gateway")
    fake_openai.default_delay = 0.5  # long enough for all ten to arrive while the first waits

    def ask() -> str:
        client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
        if not stream:
            return client.chat.completions.create(**chat("all at once")).choices[0].message.content
        chunks = client.chat.completions.create(**chat("all at once"), stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    texts = all_at_once(ask)

    assert texts == ["fake: all at once"] * 10
    assert calls(fake_openai) == 1

    def all_recorded() -> list[AIInteraction] | None:
        rows = gateway_rows(owner=user)
        return rows if len(rows) == 10 else None

    rows = wait_for(all_recorded, timeout=5, message="not every stream was recorded")
    assert sorted(row.cached for row in rows) == [False] + [True] * 9
    assert {row.response for row in rows} == {"fake: all at once"}
