"""The AI REST API with the built-in echo model: create, cache, list, search, usage, ownership."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from apps.ai_interactions.answer_cache import response_cache_key
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import interaction_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

INTERACTIONS = "/api/v1/ai/interactions/"
# A well-formed id that no row has: fixed, so that every xdist worker collects the same test ids.
UNKNOWN_UUID = "3f2b8c1e-9d4a-4e6b-8f0a-5c7d1e2a9b64"


def ask(client, **body):
    return client.post(INTERACTIONS, body, format="json")


def test_models_lists_the_default_echo_model(api_client):
    response = api_client.get("/api/v1/ai/models/")
    assert response.status_code == 200
    assert {
        "provider": "echo",
        "model": "echo-1",
        "default": True,
        "input_price_per_mtok": "0",
        "output_price_per_mtok": "0",
    } in response.json()


def test_sync_call_answers_201_and_records_everything(api_client, user):
    response = ask(api_client, prompt="Hello there", metadata={"ticket": 7})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {
        "id",
        "status",
        "provider",
        "model",
        "route",
        "deployment",
        "fallback",
        "messages",
        "params",
        "kind",
        "response",
        "response_message",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "cached",
        "task_id",
        "error",
        "metadata",
        "created_at",
        "started_at",
        "completed_at",
    }
    assert body["status"] == "succeeded"
    assert (body["route"], body["deployment"], body["fallback"]) == ("echo-1", "echo/echo-1", False)
    assert body["response"] == "Echo: Hello there"
    assert body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert body["cached"] is False
    assert body["input_tokens"] > 0
    assert body["output_tokens"] > 0
    assert Decimal(body["cost_usd"]) == 0
    assert body["metadata"] == {"ticket": 7}
    row = AIInteraction.objects.get(pk=body["id"])
    assert row.owner == user
    assert row.api_key is not None
    assert row.mode == "sync"


def test_second_identical_call_is_a_cache_hit_unless_cache_is_false(api_client):
    first = ask(api_client, prompt="cache me").json()
    second = ask(api_client, prompt="cache me").json()
    assert second["cached"] is True
    assert second["id"] != first["id"]
    assert second["response"] == first["response"]
    assert Decimal(second["cost_usd"]) == 0
    uncached = ask(api_client, prompt="cache me", cache=False).json()
    assert uncached["cached"] is False
    assert AIInteraction.objects.count() == 3


def test_messages_and_params_are_part_of_the_cache_key(api_client):
    ask(api_client, prompt="same words")
    other = ask(api_client, prompt="same words", params={"temperature": 0.5}).json()
    assert other["cached"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "messages"),
        ({"prompt": "a", "params": {"temperature": 5}}, "params"),
        ({"prompt": "a", "params": {"frequency_penality": 1}}, "params"),
        ({"prompt": "a", "model": "no-such-model"}, "model"),
        ({"prompt": "a", "mode": "later"}, "mode"),
        ({"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_are_400_naming_the_field(api_client, body, field):
    response = ask(api_client, **body)
    assert response.status_code == 400, response.json()
    assert field in response.json()["details"]
    assert not AIInteraction.objects.exists()


@pytest.mark.parametrize(
    ("message", "field", "error"),
    [
        (
            {"role": "wizard", "content": "hi"},
            "role",
            "Invalid role 'wizard': use system, user, assistant, developer or tool.",
        ),
        (
            {"role": 5, "content": "hi"},
            "role",
            "Invalid role '5': use system, user, assistant, developer or tool.",
        ),
        ({"content": "hi"}, "role", "Each message needs a 'role' and 'content'."),
        ({"role": "user"}, "content", "Each message needs a 'role' and 'content'."),
        ({"role": None, "content": "hi"}, "role", "Each message needs a 'role' and 'content'."),
        (
            {"role": "user", "content": None},
            "content",
            "Each message needs a 'role' and 'content'.",
        ),
    ],
    ids=["unknown role", "number role", "no role", "no content", "null role", "null content"],
)
def test_a_bad_message_is_named(api_client, message, field, error):
    good = {"role": "system", "content": "be brief"}
    response = ask(api_client, messages=[good, message])
    assert response.status_code == 400, response.json()
    body = response.json()
    assert (body["error"], body["code"]) == (error, "validation_error")
    assert body["details"] == {"messages": {"1": {field: [error]}}}
    assert not AIInteraction.objects.exists()


def test_a_message_that_is_not_an_object_is_named(api_client):
    response = ask(api_client, messages=["hi"])
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "Each message needs a 'role' and 'content'."
    assert body["details"] == {"messages": {"0": {"non_field_errors": [body["error"]]}}}


def test_several_bad_fields_keep_the_general_message(api_client):
    response = ask(api_client, messages=[{"role": "wizard", "content": "hi"}], mode="later")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "Invalid input."
    assert set(body["details"]) == {"messages", "mode"}


def test_prompt_over_the_limit_is_413(api_client, settings):
    settings.AI_MAX_PROMPT_CHARS = 100
    response = ask(api_client, messages=[{"role": "user", "content": "x" * 60}] * 2)
    assert response.status_code == 413
    assert response.json()["code"] == "prompt_too_large"
    assert not AIInteraction.objects.exists()


def test_owners_see_only_their_interactions(api_client, staff_client):
    mine = ask(api_client, prompt="mine").json()["id"]
    stranger = UserFactory()
    theirs = interaction_create(owner=stranger, messages=[{"role": "user", "content": "theirs"}])
    assert [row["id"] for row in api_client.get(INTERACTIONS).json()["results"]] == [mine]
    for method, path in [
        ("get", f"{INTERACTIONS}{theirs.pk}/"),
        ("delete", f"{INTERACTIONS}{theirs.pk}/"),
        ("post", f"{INTERACTIONS}{theirs.pk}/retry/"),
    ]:
        assert getattr(api_client, method)(path).status_code == 404, path
    assert AIInteraction.objects.filter(pk=theirs.pk).exists()
    assert staff_client.get(f"{INTERACTIONS}{theirs.pk}/").status_code == 200


@pytest.mark.parametrize("interaction_id", ["not-a-uuid", "12345", "a.b", UNKNOWN_UUID])
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("get", "ai:interaction-detail"),
        ("delete", "ai:interaction-detail"),
        ("post", "ai:interaction-retry"),
    ],
)
def test_unknown_or_malformed_ids_are_no_such_interaction(
    api_client, interaction_id, method, route
):
    response = getattr(api_client, method)(reverse(route, kwargs={"pk": interaction_id}))
    assert response.status_code == 404, response.content
    body = response.json()
    assert (body["error"], body["code"], body["details"]) == (
        "No such interaction.",
        "not_found",
        {},
    )


def test_filters_and_search(api_client):
    ask(api_client, prompt="the purple elephant")
    ask(api_client, prompt="the purple elephant")  # cached
    ask(api_client, prompt="a green frog")
    results = lambda **query: api_client.get(INTERACTIONS, query).json()["results"]  # noqa: E731
    assert len(results()) == 3
    assert len(results(cached="true")) == 1
    assert len(results(cached="false")) == 2
    assert len(results(search="elephant")) == 2
    assert len(results(search="frog")) == 1
    assert len(results(model="echo-1", provider="echo", status="succeeded")) == 3
    assert results(status="failed") == []
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert results(created_after=future) == []
    assert len(results(created_before=future)) == 3
    assert api_client.get(INTERACTIONS, {"status": "nope"}).status_code == 400


def test_delete_removes_the_row_and_its_cached_answer(api_client):
    body = ask(api_client, prompt="forget me").json()
    row = AIInteraction.objects.get(pk=body["id"])
    assert cache.get(response_cache_key(row.prompt_hash)) is not None
    assert api_client.delete(f"{INTERACTIONS}{row.pk}/").status_code == 204
    assert not AIInteraction.objects.filter(pk=row.pk).exists()
    assert cache.get(response_cache_key(row.prompt_hash)) is None
    assert ask(api_client, prompt="forget me").json()["cached"] is False


def test_retry_of_a_succeeded_interaction_is_409(api_client):
    interaction_id = ask(api_client, prompt="fine").json()["id"]
    response = api_client.post(f"{INTERACTIONS}{interaction_id}/retry/")
    assert response.status_code == 409


def test_usage_totals_match_the_rows(api_client):
    for prompt in ["one", "two", "one"]:
        ask(api_client, prompt=prompt)
    by_model = api_client.get("/api/v1/ai/usage/", {"group_by": "model"}).json()
    assert by_model["group_by"] == "model"
    [row] = by_model["results"]
    rows = AIInteraction.objects.all()
    assert row["provider"] == "echo"
    assert row["model"] == "echo-1"
    assert row["requests"] == 3
    assert row["succeeded"] == 3
    assert row["cached"] == 1
    assert row["failed"] == 0
    assert row["input_tokens"] == sum(r.input_tokens for r in rows)
    assert row["output_tokens"] == sum(r.output_tokens for r in rows)
    assert row["latency_ms_p95"] is not None
    by_day = api_client.get("/api/v1/ai/usage/", {"group_by": "day"}).json()
    assert by_day["results"][0]["day"] == timezone.now().date().isoformat()
    assert by_day["results"][0]["requests"] == 3
    empty = api_client.get("/api/v1/ai/usage/", {"from": "2020-01-01", "to": "2020-02-01"})
    assert empty.json()["results"] == []


def test_ai_endpoints_need_a_key(anon_client):
    for path in [INTERACTIONS, "/api/v1/ai/models/", "/api/v1/ai/usage/"]:
        assert anon_client.get(path).status_code == 401
