"""Routing across deployments against several real local fake upstreams: weights,
cooling down, probes, Retry-After, fallbacks, context windows, and every attempt recorded."""

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from apps.ai_interactions.models import AIInteraction
from apps.routing.models import Provider, Route
from tests.fakes import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.routes import deploy
from tests.sql import statements_sent

CHAT = "/v1/chat/completions"


def calls(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r["path"] == "/v1/chat/completions")


def ask(client, prompt: str, model: str = "gpt-4o", **body):
    return client.post(
        CHAT,
        {"model": model, "messages": [{"role": "user", "content": prompt}], "cache": False, **body},
        format="json",
    )


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI() as c:
        yield a, b, c


@pytest.fixture
def quick(settings):
    settings.AI_PROVIDER_TIMEOUT = 1.0
    settings.AI_RETRY_BASE_DELAY = 0.01
    settings.AI_RETRY_MAX_DELAY = 0.05
    settings.ROUTING_COOLDOWN_SECONDS = 1.0
    settings.ROUTING_COOLDOWN_FAILURES = 3
    return settings


@pytest.mark.django_db
def test_weights_1_1_2_share_400_calls_25_25_50(api_client, fakes, quick):
    route = Route.objects.create(name="gpt-4o", strategy="weighted")
    for fake, name, weight in zip(fakes, ("a", "b", "c"), (1, 1, 2), strict=True):
        deploy(route, fake, name, weight=weight)

    statuses = [ask(api_client, f"call {n}").status_code for n in range(400)]

    assert statuses == [200] * 400
    shares = [calls(fake) / 400 for fake in fakes]
    assert shares == pytest.approx([0.25, 0.25, 0.5], abs=0.05)
    answered = AIInteraction.objects.values_list("deployment", flat=True)
    assert {label: list(answered).count(label) for label in set(answered)} == {
        "a/a-model": calls(fakes[0]),
        "b/b-model": calls(fakes[1]),
        "c/c-model": calls(fakes[2]),
    }


@pytest.mark.django_db
def test_a_failing_deployment_cools_down_then_is_probed_once_and_recovers(api_client, fakes, quick):
    route = Route.objects.create(name="gpt-4o", strategy="weighted")
    failing, healthy, _ = fakes
    deploy(route, failing, "down")
    deploy(route, healthy, "up")
    failing.outage(60, status=503)

    statuses = [ask(api_client, f"during {n}").status_code for n in range(20)]

    assert statuses == [200] * 20  # no client saw the outage
    assert calls(failing) == 3  # three failures cooled it: no call since
    failed = AIInteraction.objects.filter(attempts__contains=[{"outcome": "server_error"}])
    assert failed.count() == 3
    assert all(row.deployment == "up/up-model" for row in failed)
    time.sleep(1.1)  # the cooling ends: the next call probes it, once
    statuses = [ask(api_client, f"probe {n}").status_code for n in range(4)]
    assert statuses == [200] * 4
    assert calls(failing) == 4  # one probe, which failed: cooled again

    failing.outage(0)  # it recovers
    time.sleep(1.1)
    for n in range(10):
        assert ask(api_client, f"after {n}").status_code == 200
    assert calls(failing) >= 4 + 5  # it takes its share of traffic again


@pytest.mark.django_db
def test_a_429_with_retry_after_cools_that_deployment_for_that_long(api_client, fakes, quick):
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    limited, other, _ = fakes
    deploy(route, limited, "first", priority=0)
    deploy(route, other, "second", priority=1)
    limited.script(Reply(status=429, headers={"Retry-After": "2"}))

    first = ask(api_client, "hit the limit")
    soon = [ask(api_client, f"within two seconds {n}") for n in range(3)]

    assert first.status_code == 200
    assert [r.status_code for r in soon] == [200] * 3
    assert calls(limited) == 1  # the 429 moved on at once, and nothing since
    row = AIInteraction.objects.get(pk=first.json()["id"].removeprefix("chatcmpl-"))
    assert [(a["deployment"], a["outcome"]) for a in row.attempts] == [
        ("first/first-model", "rate_limited"),
        ("second/second-model", "ok"),
    ]
    time.sleep(2.1)
    assert ask(api_client, "after the pause").status_code == 200
    assert calls(limited) == 2  # first in priority again


@pytest.mark.django_db
def test_every_deployment_down_the_fallback_route_answers_and_says_so(api_client, fakes, quick):
    primary_a, primary_b, backup = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority", fallbacks=["backup"])
    deploy(route, primary_a, "a", priority=0)
    deploy(route, primary_b, "b", priority=1)
    deploy(Route.objects.create(name="backup"), backup, "spare")
    primary_a.outage(60, status=500)
    primary_b.outage(60, status=502)

    response = ask(api_client, "anyone there?")

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["message"]["content"] == "fake: anyone there?"
    row = AIInteraction.objects.get()
    assert (row.model, row.deployment, row.fallback, row.provider) == (
        "gpt-4o",
        "spare/spare-model",
        True,
        "spare",
    )
    assert [(a["deployment"], a["outcome"], a["status"]) for a in row.attempts] == [
        ("a/a-model", "server_error", 500),
        ("b/b-model", "server_error", 502),
        ("spare/spare-model", "ok", None),
    ]


@pytest.mark.django_db
def test_a_prompt_too_large_for_a_window_goes_to_the_larger_one(api_client, fakes, quick):
    small, large, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deploy(route, small, "small", priority=0, context_window=100)
    deploy(route, large, "large", priority=1, context_window=10_000)

    short = ask(api_client, "short")
    long = ask(api_client, "word " * 200)  # about 250 tokens
    with_answer = ask(api_client, "short again", max_tokens=500)

    assert [r.status_code for r in (short, long, with_answer)] == [200, 200, 200]
    assert (calls(small), calls(large)) == (1, 2)  # the small one was never asked


@pytest.mark.django_db
def test_a_prompt_too_large_for_every_window_is_refused_without_a_call(api_client, fakes, quick):
    small, large, backup = fakes
    route = Route.objects.create(name="gpt-4o", fallbacks=["backup"])
    deploy(route, small, "small", context_window=100)
    deploy(route, large, "large", context_window=1_000)
    deploy(Route.objects.create(name="backup"), backup, "spare", context_window=500)

    response = ask(api_client, "word " * 2_000)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert (calls(small), calls(large), calls(backup)) == (0, 0, 0)
    assert not AIInteraction.objects.exists()


@pytest.mark.django_db
def test_a_providers_context_length_exceeded_moves_on_to_a_larger_window(api_client, fakes, quick):
    small, large, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deploy(route, small, "small", priority=0, context_window=1_000)
    deploy(route, large, "large", priority=1, context_window=100_000)
    small.script(
        Reply(
            status=400,
            body={
                "error": {
                    "message": "This model's maximum context length is 1000 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        )
    )

    response = ask(api_client, "longer than the estimate thought")

    assert response.status_code == 200, response.json()
    row = AIInteraction.objects.get()
    assert [(a["deployment"], a["outcome"]) for a in row.attempts] == [
        ("small/small-model", "context_length_exceeded"),
        ("large/large-model", "ok"),
    ]


@pytest.mark.django_db
def test_a_refusal_of_the_request_is_not_retried_elsewhere(api_client, fakes, quick):
    first, second, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deploy(route, first, "first", priority=0)
    deploy(route, second, "second", priority=1)
    first.script(Reply(status=400))

    response = ask(api_client, "a bad request")

    assert response.status_code == 400
    assert (calls(first), calls(second)) == (1, 0)


@pytest.mark.django_db
def test_cost_is_the_answering_deployments_and_the_cache_ignores_which_answered(
    api_client, fakes, quick
):
    cheap, dear, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deploy(route, cheap, "cheap", priority=0, input_price_per_mtok=Decimal("1"))
    deploy(route, dear, "dear", priority=1, input_price_per_mtok=Decimal("100"))
    cheap.outage(60, status=503)

    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "two words"}]}
    answered = api_client.post(CHAT, body, format="json")
    cached = api_client.post(CHAT, body, format="json")

    assert answered.status_code == cached.status_code == 200
    first, second = AIInteraction.objects.order_by("created_at")
    assert first.deployment == "dear/dear-model"
    assert first.cost_usd == Decimal(first.input_tokens) * 100 / 1_000_000
    assert (second.cached, second.cost_usd) == (True, 0)


@pytest.mark.django_db
def test_a_provider_key_never_reaches_a_response_a_record_or_a_log(
    api_client, fakes, quick, caplog
):
    upstream = fakes[0]
    route = Route.objects.create(name="gpt-4o")
    deploy(route, upstream, "leaky")
    key = Provider.objects.get(name="leaky").api_key
    echoed = {"error": {"message": f"Incorrect API key provided: {key}", "type": "x"}}
    upstream.script(Reply(status=500, body=echoed), Reply(status=400, body=echoed))

    failed = ask(api_client, "first")
    refused = ask(api_client, "second")

    assert (failed.status_code, refused.status_code) == (502, 400)
    assert key.startswith("sk-leaky")
    for text in (failed.content.decode(), refused.content.decode(), caplog.text):
        assert key not in text
    for row in AIInteraction.objects.all():
        assert key not in f"{row.error} {row.attempts} {row.response}"
    assert key not in str(Provider.objects.values().get(name="leaky"))  # encrypted at rest


@pytest.mark.django_db
def test_with_redis_down_each_process_cools_deployments_on_its_own(
    api_client, fakes, quick, closed_port
):
    from django.test import override_settings

    from tests.health.test_degraded import redis_cache_at

    failing, healthy, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="weighted")
    deploy(route, failing, "down")
    deploy(route, healthy, "up")
    failing.outage(60, status=503)

    with override_settings(CACHES=redis_cache_at(closed_port)):
        statuses = [ask(api_client, f"no redis {n}").status_code for n in range(12)]

    assert statuses == [200] * 12
    assert calls(failing) == 3  # cooled in this process's memory after three failures


@pytest.mark.django_db
def test_a_call_reads_no_routing_row_and_a_change_is_seen_at_once(api_client, fakes, quick):
    first, second, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deployment = deploy(route, first, "first", priority=0)
    deploy(route, second, "second", priority=1)
    assert ask(api_client, "warm up").status_code == 200

    with statements_sent() as statements:
        assert ask(api_client, "from the table in memory").status_code == 200
    routing_tables = ("routing_provider", "routing_route", "routing_deployment")
    assert statements  # the call's own reads and writes were seen
    assert not [sql for sql in statements if any(t in sql for t in routing_tables)]

    deployment.enabled = False
    deployment.save()  # as the admin or sync_models would
    assert ask(api_client, "after the change").status_code == 200
    assert (calls(first), calls(second)) == (2, 1)


@pytest.mark.django_db
def test_a_deployment_at_its_rpm_cap_passes_calls_to_the_next(api_client, fakes, quick):
    capped, spare, _ = fakes
    route = Route.objects.create(name="gpt-4o", strategy="priority")
    deploy(route, capped, "capped", priority=0, rpm=3)
    deploy(route, spare, "spare", priority=1)
    if time.time() % 60 > 56:
        time.sleep(5)  # the five calls fall in one minute of the cap

    statuses = [ask(api_client, f"call {n}").status_code for n in range(5)]

    assert statuses == [200] * 5
    assert (calls(capped), calls(spare)) == (3, 2)
