"""A gateway call takes a key its process has read before on trust, and confirms it in the
round trip that admits the call: a key changed anywhere is refused or read afresh before
anything is taken or any provider is called."""

import subprocess

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings

from apps.accounts.key_cache import known_key
from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_hash
from apps.ai_interactions.models import AIInteraction
from apps.governance.models import Limits
from contextos.cache import cache_key
from tests.health.test_degraded import redis_cache_at
from tests.integration.conftest import BIN, ROOT, process_env

CHAT = "/v1/chat/completions"


def chat(client, prompt: str = "hello", *, stream: bool = False, **body):
    return client.post(
        CHAT,
        {
            "model": "fake-gpt",
            "messages": [{"role": "user", "content": prompt}],
            "cache": False,
            "stream": stream,
            **body,
        },
        format="json",
    )


def calls_to(fake) -> int:
    return sum(1 for r in fake.requests if r["path"] == "/v1/chat/completions")


def known_to_this_process(raw_key: str) -> bool:
    return known_key(api_key_hash(raw_key), None) is not None


def on_trust(client, raw_key: str) -> None:
    """Call until the process knows the key: its first use is written, then it is cached."""
    for _ in range(2):
        assert chat(client).status_code == 200
    assert known_to_this_process(raw_key)


def revoke_in_another_process(raw_key: str) -> None:
    """``manage.py revoke_api_key``, as an operator runs it: its own process, whose
    change reaches this one only through the database and the shared cache."""
    prefix = APIKey.objects.get(key_hash=api_key_hash(raw_key)).prefix
    database = connection.settings_dict["NAME"]
    subprocess.run(
        [str(BIN / "python"), "manage.py", "revoke_api_key", prefix],
        cwd=ROOT,
        env=process_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}"),
        capture_output=True,
        check=True,
        timeout=120,
    )


# Every gateway call that takes its key on trust, as its client sends it.
GATEWAY_CALLS = {
    "chat": lambda client: chat(client, "after the revocation"),
    "chat-streamed": lambda client: chat(client, "after the revocation", stream=True),
    "embeddings": lambda client: client.post(
        "/v1/embeddings", {"model": "fake-gpt", "input": "after the revocation"}, format="json"
    ),
    "messages": lambda client: client.post(
        "/v1/messages",
        {
            "model": "fake-gpt",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "after the revocation"}],
        },
        format="json",
    ),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("call", GATEWAY_CALLS.values(), ids=GATEWAY_CALLS.keys())
def test_a_key_revoked_by_another_process_is_refused_at_its_next_call(
    client_for, user, openai_model, call
):
    _, raw_key = api_key_create(user=user, name="trusted")
    client = client_for(raw_key)
    on_trust(client, raw_key)
    sent, rows = len(openai_model.requests), AIInteraction.objects.count()

    revoke_in_another_process(raw_key)
    assert known_to_this_process(raw_key)  # this process was not told
    response = call(client)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This API key has been revoked."
    assert len(openai_model.requests) == sent  # no provider was called
    assert AIInteraction.objects.count() == rows


@pytest.mark.django_db(transaction=True)
def test_a_request_refused_on_its_merits_is_401_when_its_key_was_revoked_elsewhere(
    client_for, user, openai_model
):
    _, raw_key = api_key_create(user=user, name="trusted")
    client = client_for(raw_key)
    on_trust(client, raw_key)

    revoke_in_another_process(raw_key)
    invalid = client.post(CHAT, {"model": "fake-gpt", "messages": "not a list"}, format="json")
    unknown_model = chat(client, model="no-such-model")

    assert (invalid.status_code, unknown_model.status_code) == (401, 401)
    assert invalid.json()["error"]["message"] == "This API key has been revoked."


@pytest.mark.django_db
def test_a_call_whose_key_entry_was_evicted_is_served_once_and_counted_once(
    client_for, user, openai_model
):
    key, raw_key = api_key_create(user=user, name="trusted")
    Limits.objects.create(api_key=key, rpm_limit=3)
    client = client_for(raw_key)
    on_trust(client, raw_key)

    cache.delete(cache_key("auth", "apikey", key.key_hash))  # evicted, or expired
    third = chat(client, "third")
    fourth = chat(client, "fourth")

    assert third.status_code == 200  # its confirmation failed and took nothing
    assert fourth.status_code == 429
    assert fourth.json()["error"]["code"] == "rate_limited"
    assert calls_to(openai_model) == 3


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/min")
def test_the_request_rate_limit_holds_for_a_key_on_trust_invalid_requests_included(
    client_for, user, openai_model
):
    _, raw_key = api_key_create(user=user, name="trusted")
    client = client_for(raw_key)
    on_trust(client, raw_key)

    invalid = client.post(CHAT, {"model": "fake-gpt", "messages": "not a list"}, format="json")
    refused = chat(client, "one too many")

    assert invalid.status_code == 400
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert calls_to(openai_model) == 2


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_key_on_trust_is_read_from_the_database(
    client_for, user, openai_model, closed_port
):
    _, live = api_key_create(user=user, name="live")
    _, revoked = api_key_create(user=user, name="revoked")
    for raw_key in (live, revoked):
        on_trust(client_for(raw_key), raw_key)
    revoke_in_another_process(revoked)

    with override_settings(CACHES=redis_cache_at(closed_port)):
        answered = chat(client_for(live), "Redis is down")
        refused = chat(client_for(revoked), "Redis is down")

    assert answered.status_code == 200
    assert refused.status_code == 401
