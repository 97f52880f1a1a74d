"""The AI API against a real local OpenAI-compatible server: retries, failures, cache, locking."""

from decimal import Decimal

import pytest

from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import interaction_create
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.together import all_at_once

INTERACTIONS = "/api/v1/ai/interactions/"
MODEL = "fake-gpt"


def calls(fake: FakeOpenAI) -> int:
    return sum(1 for request in fake.requests if request["path"] == "/v1/chat/completions")


def ask(client, prompt="Say hello", **body):
    return client.post(INTERACTIONS, {"prompt": prompt, "model": MODEL, **body}, format="json")


@pytest.mark.django_db
def test_sync_success_records_text_tokens_and_cost(api_client, openai_model):
    response = ask(api_client, "three little words")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["provider"] == "openai"
    assert body["response"] == "fake: three little words"
    assert body["finish_reason"] == "stop"
    assert (body["input_tokens"], body["output_tokens"]) == (3, 4)
    # 3 x $1 + 4 x $2 per million tokens
    assert Decimal(body["cost_usd"]) == Decimal("0.000011")
    sent = openai_model.requests[-1]
    assert sent["body"]["messages"] == [{"role": "user", "content": "three little words"}]
    assert sent["headers"]["authorization"] == "Bearer sk-test-not-a-real-key"


@pytest.mark.django_db
def test_rate_limited_then_ok_succeeds_after_one_retry(api_client, openai_model):
    openai_model.script(Reply(status=429, headers={"Retry-After": "0"}), Reply())
    body = ask(api_client).json()
    assert body["status"] == "succeeded"
    assert calls(openai_model) == 2
    attempts = AIInteraction.objects.get(pk=body["id"]).attempts
    assert [attempt["outcome"] for attempt in attempts] == ["rate_limited", "ok"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("replies", "requests", "error_type"),
    [
        ([Reply(status=500)] * 3, 3, "server_error"),
        ([Reply(status=400)], 1, "bad_request"),
        ([Reply(delay=3)] * 3, 3, "timeout"),
    ],
    ids=["500-every-time", "400-not-retried", "hang"],
)
def test_provider_failures_are_502_and_recorded(
    api_client, openai_model, replies, requests, error_type
):
    openai_model.script(*replies)
    response = ask(api_client)
    assert response.status_code == 502
    error = response.json()
    assert error["code"] == "provider_error"
    interaction = AIInteraction.objects.get(pk=error["details"]["interaction_id"])
    assert interaction.status == "failed"
    assert interaction.error["type"] == error_type
    assert interaction.provider_error_type == error_type
    assert len(interaction.attempts) == requests
    assert calls(openai_model) == requests
    # The failure is visible through the API too, and can be retried.
    assert api_client.get(f"{INTERACTIONS}{interaction.pk}/").json()["status"] == "failed"
    retried = api_client.post(f"{INTERACTIONS}{interaction.pk}/retry/")
    assert retried.status_code == 200
    assert retried.json()["status"] == "succeeded"


@pytest.mark.django_db
def test_a_cached_answer_makes_no_upstream_request(api_client, openai_model):
    assert ask(api_client, "once").json()["cached"] is False
    assert ask(api_client, "once").json()["cached"] is True
    assert calls(openai_model) == 1
    assert ask(api_client, "once", cache=False).json()["cached"] is False
    assert calls(openai_model) == 2


@pytest.mark.django_db(transaction=True)
def test_ten_identical_concurrent_calls_make_one_upstream_request(
    user, openai_model, each_shared_cache
):
    openai_model.default_delay = 0.5

    results = all_at_once(
        lambda: interaction_create(
            owner=user, messages=[{"role": "user", "content": "together"}], model_name=MODEL
        )
    )

    assert len(results) == 10
    assert calls(openai_model) == 1
    assert sorted(interaction.cached for interaction in results) == [False] + [True] * 9
    assert {interaction.response for interaction in results} == {"fake: together"}


@pytest.mark.django_db
def test_calls_still_work_with_redis_down(api_client, openai_model, settings, closed_port):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{closed_port}/0"}
    }
    first = ask(api_client, "no cache today")
    second = ask(api_client, "no cache today")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["cached"] is False
    assert calls(openai_model) == 2


@pytest.mark.django_db
def test_gateway_failure_is_an_openai_error_and_recorded(api_client, openai_model):
    openai_model.script(Reply(status=400))
    response = api_client.post(
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "bad"}], "logprobs": True},
        format="json",
    )
    # A provider's 400 is the client's to fix: it gets the status and the provider's message.
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "provider_rejected_request"
    assert "The fake answered 400." in response.json()["error"]["message"]
    [row] = AIInteraction.objects.filter(mode="gateway")
    assert (row.status, row.provider_error_type) == ("failed", "bad_request")
