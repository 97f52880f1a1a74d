"""AI calls end to end: async interactions and batches on a real worker; the gateway
through gunicorn, driven by the official openai client."""

import pytest
from openai import OpenAI

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import wait_for
from tests.integration.test_tasks_worker import finished, poll

MODEL = "fake-gpt"


def provider_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODELS": f"{MODEL}:1.00:2.00",
        "AI_RETRY_BASE_DELAY": "0.01",
    }


@pytest.fixture
def openai_settings(fake_openai, settings):
    for name, value in provider_env(fake_openai).items():
        setattr(settings, name, [value] if name == "OPENAI_MODELS" else value)
    settings.AI_RETRY_BASE_DELAY = 0.01
    return fake_openai


@pytest.mark.worker
def test_async_interaction_succeeds_through_a_worker(start_worker, api_client, openai_settings):
    start_worker(**provider_env(openai_settings))
    response = api_client.post(
        "/api/v1/ai/interactions/",
        {"prompt": "later please", "model": MODEL, "mode": "async"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["task_id"]

    def done():
        interaction = api_client.get(f"/api/v1/ai/interactions/{body['id']}/").json()
        return interaction if interaction["status"] in {"succeeded", "failed"} else None

    interaction = wait_for(done, timeout=30, interval=0.1)
    assert interaction["status"] == "succeeded", interaction
    assert interaction["response"] == "fake: later please"
    # The worker records the task's outcome just after the handler has saved the answer:
    # a loaded machine (xdist) can answer between the two writes, so wait for it.
    task = poll(api_client, body["task_id"], finished)[-1]
    assert task["type"] == "ai.generate"
    assert task["status"] == "succeeded"


@pytest.mark.worker
def test_batch_of_20_prompts(start_worker, api_client, openai_settings):
    openai_settings.default_delay = 0.1
    start_worker(**provider_env(openai_settings))
    prompts = [f"question number {n}" for n in range(20)]
    response = api_client.post(
        "/api/v1/tasks/",
        {"type": "ai.batch", "params": {"prompts": prompts, "model": MODEL}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    seen = poll(api_client, response.json()["id"], finished, timeout=60, interval=0.1)
    progress = {
        t["progress"]["current"] for t in seen if t["status"] == "running" and t["progress"]
    }
    assert len(progress) >= 2, progress
    final = seen[-1]
    assert final["status"] == "succeeded", final
    listed = final["result"]["interactions"]
    assert len(listed) == 20
    assert {item["status"] for item in listed} == {"succeeded"}
    rows = AIInteraction.objects.filter(pk__in=[item["id"] for item in listed])
    assert sorted(row.response for row in rows) == sorted(f"fake: {p}" for p in prompts)
    assert {row.mode for row in rows} == {"batch"}


@pytest.mark.server
def test_the_official_openai_client_works_through_the_gateway(start_web, user, fake_openai):
    base = start_web(**provider_env(fake_openai))
    _, key = api_key_create(user=user, name="openai client")
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

    models = [model.id for model in client.models.list()]
    assert {"echo-1", MODEL} <= set(models)

    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi gateway"}]
    )
    assert completion.choices[0].message.content == "fake: hi gateway"
    assert completion.usage.prompt_tokens == 2

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
        seed=7,  # an OpenAI field ContextOS ignores: never an error
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "fake: stream me please"
    assert chunks[-1].usage.completion_tokens == 4

    recorded = AIInteraction.objects.filter(owner=user, mode="gateway").order_by("created_at")
    assert [row.response for row in recorded] == ["fake: hi gateway", "fake: stream me please"]
    assert all(row.status == "succeeded" for row in recorded)

    # Errors follow OpenAI's shape, so the client raises its own exceptions.
    bad = OpenAI(base_url=f"{base}/v1", api_key="ctx_" + "x" * 40, max_retries=0)
    with pytest.raises(Exception, match="401") as error:
        bad.models.list()
    assert error.value.body["type"] == "authentication_error"
