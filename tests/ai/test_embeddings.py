"""``POST /v1/embeddings`` as clients use it: echo's deterministic vectors, an
OpenAI-compatible upstream, the cache and single flight, the record."""

import base64
import math
from array import array
from decimal import Decimal

import pytest
from openai import OpenAI

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from tests.integration.test_ai_end_to_end import provider_env
from tests.together import all_at_once

pytestmark = pytest.mark.django_db
EMBEDDINGS = "/v1/embeddings"
ECHO = {"model": "echo-embed-1"}


def embed(client, **body):
    return client.post(EMBEDDINGS, body, format="json")


def upstream_calls(fake) -> int:
    return sum(1 for request in fake.requests if request["path"] == "/v1/embeddings")


def test_echo_gives_each_input_the_same_unit_vector_every_time(api_client):
    first = embed(api_client, model="echo-embed-1", input=["red", "green", "red"])
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["object"] == "list"
    assert body["model"] == "echo-embed-1"
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    vectors = [item["embedding"] for item in body["data"]]
    assert all(len(vector) == 256 for vector in vectors)
    assert all(math.isclose(math.hypot(*vector), 1.0) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    alone = embed(api_client, model="echo-embed-1", input="green", cache=False).json()
    assert alone["data"][0]["embedding"] == vectors[1]


def test_dimensions_and_base64_are_honoured(api_client):
    floats = embed(api_client, model="echo-embed-1", input="sky", dimensions=8).json()
    packed = embed(
        api_client, model="echo-embed-1", input="sky", dimensions=8, encoding_format="base64"
    ).json()
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 8
    decoded = array("f", base64.b64decode(packed["data"][0]["embedding"]))
    assert len(decoded) == 8
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vector, strict=True))


def test_an_embedding_is_recorded_priced_and_cached(api_client, user, openai_model):
    first = embed(api_client, model="fake-gpt", input=["one two", "three"])
    second = embed(api_client, model="fake-gpt", input=["one two", "three"])
    assert (first.status_code, second.status_code) == (200, 200), second.content
    assert first.json()["data"] == second.json()["data"]
    assert upstream_calls(openai_model) == 1
    rows = list(AIInteraction.objects.filter(owner=user).order_by("created_at"))
    assert [(row.kind, row.cached) for row in rows] == [("embedding", False), ("embedding", True)]
    assert rows[0].prompt == "one two\n\nthree"
    assert rows[0].input_tokens == first.json()["usage"]["prompt_tokens"] > 0
    # $1 per million input tokens; a cache hit costs nothing.
    assert rows[0].cost_usd == Decimal(rows[0].input_tokens) / 1_000_000
    assert rows[1].cost_usd == 0
    assert "embedding" not in str(rows[0].response_message or "")
    listed = api_client.get("/api/v1/ai/interactions/", {"kind": "embedding"}).json()["results"]
    assert {item["id"] for item in listed} == {str(row.pk) for row in rows}
    assert api_client.get("/api/v1/ai/interactions/", {"kind": "chat"}).json()["results"] == []


@pytest.mark.django_db(transaction=True)
def test_ten_identical_concurrent_embeddings_make_one_upstream_request(
    client_for, user, openai_model
):
    openai_model.default_delay = 0.5
    _, raw_key = api_key_create(user=user, name="embeddings")

    responses = all_at_once(
        lambda: embed(client_for(raw_key), model="fake-gpt", input=["all", "together"])
    )

    assert [response.status_code for response in responses] == [200] * 10
    assert upstream_calls(openai_model) == 1
    cached = AIInteraction.objects.filter(kind="embedding").values_list("cached", flat=True)
    assert sorted(cached) == [False] + [True] * 9


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "echo-embed-1"}, 400, "validation_error"),
        ({"model": "echo-embed-1", "input": []}, 400, "validation_error"),
        ({"model": "echo-embed-1", "input": [""]}, 400, "validation_error"),
        ({"model": "echo-embed-1", "input": [1.5]}, 400, "validation_error"),
        ({**ECHO, "input": "x", "dimensions": 0}, 400, "validation_error"),
        (
            {"model": "echo-embed-1", "input": "x", "encoding_format": "hex"},
            400,
            "validation_error",
        ),
        ({"model": "no-such-model", "input": "x"}, 404, "model_not_found"),
    ],
    ids=["no input", "empty list", "empty string", "floats", "0 dims", "hex", "unknown model"],
)
def test_bad_embeddings_requests_are_openai_errors(api_client, body, status, code):
    response = embed(api_client, **body)
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not AIInteraction.objects.exists()


def test_a_model_that_cannot_embed_is_a_400(api_client, anthropic_model):
    response = embed(api_client, model="fake-claude", input="x")
    assert response.status_code == 400
    assert "cannot make embeddings" in response.json()["error"]["message"]


@pytest.mark.server
def test_the_official_client_embeds_through_the_gateway(start_web, user, fake_openai):
    base = start_web(**provider_env(fake_openai))
    _, key = api_key_create(user=user, name="embeddings client")
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

    # The SDK asks for base64 and decodes it, unless told float.
    answer = client.embeddings.create(model="fake-gpt", input=["alpha", "beta"], dimensions=16)
    assert [len(item.embedding) for item in answer.data] == [16, 16]
    floats = client.embeddings.create(
        model="fake-gpt", input=["alpha", "beta"], dimensions=16, encoding_format="float"
    )
    assert all(
        math.isclose(a, b, rel_tol=1e-6)
        for left, right in zip(answer.data, floats.data, strict=True)
        for a, b in zip(left.embedding, right.embedding, strict=True)
    )
    again = client.embeddings.create(model="fake-gpt", input=["alpha", "beta"], dimensions=16)
    assert again.data[0].embedding == answer.data[0].embedding
    assert upstream_calls(fake_openai) == 2  # base64 and float; the repeat was a cache hit
    echoed = client.embeddings.create(model="echo-embed-1", input="gamma")
    assert len(echoed.data[0].embedding) == 256
