"""Limits enforced on every call: scopes, RPM, TPM, parallel requests and budgets that
hold under concurrency, with Redis flushed, and with Redis down."""

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.governance.admission import admit, spend_usd
from apps.governance.limits import LimitConfig, Scope
from apps.governance.models import Limits
from apps.routing.models import Route
from contextos.cache import redis_client
from contextos.exceptions import AppError
from contextos.middleware import AfterResponseMiddleware
from tests.fakes.openai_server import FakeOpenAI
from tests.health.test_degraded import redis_cache_at
from tests.routes import deploy

CHAT = "/v1/chat/completions"
# $20 and $40 per million tokens: a call of a short prompt and max_tokens 20 costs at
# most (8 x 20 + 20 x 40) / 1e6 = $0.00096.
INPUT_PRICE, OUTPUT_PRICE = Decimal(20), Decimal(40)
WORST_CALL = Decimal("0.001")


def chats(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r["path"] == "/v1/chat/completions")


def _loaded_digests() -> list[str]:
    """The digests of the admission's, the answer lookup's and the settlement's scripts."""
    from apps.ai_interactions.answer_cache import _scripts
    from apps.governance.admission import _ADMIT, _SETTLE

    lookup, _ = _scripts()
    register = redis_client().register_script
    return [register(_ADMIT).sha, lookup.sha, register(_SETTLE).sha]


def route_to(fake: FakeOpenAI, name: str = "gpt-4o") -> Route:
    route = Route.objects.create(name=name)
    deploy(
        route,
        fake,
        "upstream",
        model=f"{name}-upstream",
        input_price_per_mtok=INPUT_PRICE,
        output_price_per_mtok=OUTPUT_PRICE,
    )
    return route


def limited_key(user, **limits) -> tuple[APIKey, str]:
    key, raw = api_key_create(user=user, name="limited")
    Limits.objects.create(api_key=key, **limits)
    return key, raw


def chat(client, prompt: str, model: str = "gpt-4o", **body):
    headers = {name: body.pop(name) for name in list(body) if name.startswith("HTTP_")}
    return client.post(
        CHAT,
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 20,
            "cache": False,
            **body,
        },
        format="json",
        **headers,
    )


@pytest.fixture
def upstream(fake_openai, settings):
    settings.AI_PROVIDER_TIMEOUT = 2.0
    settings.AI_RETRY_BASE_DELAY = 0.01
    route_to(fake_openai)
    return fake_openai


# --- Scopes -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_key_scoped_to_a_glob_lists_and_calls_only_those_models(client_for, user, upstream):
    route_to(upstream, "gpt-4o-mini")
    route_to(upstream, "claude-like")
    _, raw = limited_key(user, allowed_models=["gpt-4o*"])
    client = client_for(raw)

    listed = {m["id"] for m in client.get("/v1/models").json()["data"]}
    rest_listed = {m["model"] for m in client.get("/api/v1/ai/models/").json()}
    allowed = chat(client, "in scope", model="gpt-4o-mini")
    refused = chat(client, "out of scope", model="claude-like")
    rest = client.post(
        "/api/v1/ai/interactions/", {"prompt": "x", "model": "claude-like"}, format="json"
    )
    messages = client.post(
        "/v1/messages",
        {"model": "claude-like", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        format="json",
    )
    embeddings = client.post(
        "/v1/embeddings", {"model": "claude-like", "input": "x"}, format="json"
    )

    assert listed == rest_listed == {"gpt-4o", "gpt-4o-mini"}
    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert rest.status_code == 403
    assert rest.json()["code"] == "model_not_allowed"
    assert messages.status_code == 403
    assert messages.json()["error"]["type"] == "permission_error"
    assert embeddings.status_code == 403
    assert chats(upstream) == 1  # only the call in scope reached the upstream
    assert AIInteraction.objects.count() == 1


# --- Rate limits ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_rpm_10_refuses_the_11th_call_of_the_minute_with_retry_after(client_for, user, upstream):
    _, raw = limited_key(user, rpm_limit=10)
    client = client_for(raw)

    answers = [chat(client, f"call {n}") for n in range(11)]

    assert [a.status_code for a in answers[:10]] == [200] * 10
    first, last = answers[0], answers[10]
    assert first["x-ratelimit-limit-requests"] == "10"
    assert first["x-ratelimit-remaining-requests"] == "9"  # this call counted
    assert answers[9]["x-ratelimit-remaining-requests"] == "0"
    assert first["x-ratelimit-reset-requests"].endswith("s")
    assert last.status_code == 429
    assert 1 <= int(last["Retry-After"]) <= 60
    assert last.json()["error"] == {
        "message": last.json()["error"]["message"],
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }
    assert chats(upstream) == 10


@pytest.mark.django_db
def test_a_refused_call_leaves_its_prompt_free_for_the_next_caller(client_for, user, upstream):
    """The answer is looked up, and its lock taken on a miss, in the admission's round trip
    to Redis: a call then refused gives the lock back, and the same prompt from another
    key is asked at once, not after the lock's lifetime."""
    _, limited = limited_key(user, rpm_limit=1)
    _, other = limited_key(user)
    limited_client = client_for(limited)
    assert chat(limited_client, "first of the minute").status_code == 200

    refused = chat(limited_client, "one prompt", cache=True)
    locks = redis_client().keys("*ai:lock:*")
    answered = chat(client_for(other), "one prompt", cache=True)

    assert refused.status_code == 429
    assert locks == []
    assert answered.status_code == 200
    assert chats(upstream) == 2


@pytest.mark.django_db
def test_calls_go_on_when_redis_has_forgotten_the_scripts(client_for, user, upstream):
    """The admission and the lookup are sent by digest in one pipeline, the settlement by
    its digest; a Redis that lost its scripts (a restart, SCRIPT FLUSH) is sent each
    whole, once."""
    _, raw = limited_key(user, rpm_limit=100)
    client = client_for(raw)
    first = chat(client, "asked before the flush", cache=True)
    redis_client().script_flush()
    again = chat(client, "asked before the flush", cache=True)
    new = chat(client, "asked after the flush", cache=True)

    assert [first.status_code, again.status_code, new.status_code] == [200, 200, 200]
    assert again.json()["choices"] == first.json()["choices"]
    assert new["x-ratelimit-remaining-requests"] == "97"  # every call counted
    assert chats(upstream) == 2  # the repeated prompt was a cache hit
    assert redis_client().script_exists(*_loaded_digests()) == [True, True, True]


@pytest.mark.django_db
def test_a_call_whose_token_estimate_does_not_fit_the_tpm_is_refused_before_the_upstream(
    client_for, user, upstream
):
    _, raw = limited_key(user, tpm_limit=100)
    client = client_for(raw)

    small = chat(client, "a short question")
    large = chat(client, "word " * 400)  # about 500 tokens

    assert small.status_code == 200
    assert small["x-ratelimit-limit-tokens"] == "100"
    assert large.status_code == 429
    assert large.json()["error"]["code"] == "rate_limited"
    assert chats(upstream) == 1


@pytest.mark.django_db
def test_the_tightest_of_key_user_and_team_limits_applies(client_for, user, upstream):
    from apps.accounts.models import Team

    team = Team.objects.create(name="research")
    key, raw = api_key_create(user=user, name="team key")
    APIKey.objects.filter(pk=key.pk).update(team=team)
    Limits.objects.create(api_key=key, rpm_limit=50)
    Limits.objects.create(user=user, rpm_limit=20)
    Limits.objects.create(team=team, rpm_limit=3)
    client = client_for(raw)

    statuses = [chat(client, f"call {n}").status_code for n in range(4)]

    assert statuses == [200, 200, 200, 429]
    row = AIInteraction.objects.first()
    assert row.team_id == team.pk


# --- Budgets -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_budget_refuses_calls_once_spent_and_spend_is_the_rows_sum(client_for, user, upstream):
    key, raw = limited_key(user, budget_usd=Decimal("0.002"), budget_period="day")
    client = client_for(raw)

    answers = [chat(client, f"spend {n}") for n in range(12)]

    statuses = [a.status_code for a in answers]
    assert 200 in statuses
    assert 429 in statuses
    assert statuses == sorted(statuses)  # refused only once spent, then every time
    refused = answers[-1].json()["error"]
    assert (refused["type"], refused["code"]) == ("insufficient_quota", "budget_exceeded")
    rows = AIInteraction.objects.filter(api_key=key)
    spent = sum(row.cost_usd for row in rows)
    assert spent <= Decimal("0.002") + WORST_CALL
    assert chats(upstream) == rows.count() == statuses.count(200)
    scope = Scope("key", str(key.pk), LimitConfig(period="day"))
    assert spend_usd(scope) == spent


@pytest.mark.django_db
def test_a_spend_lost_by_redis_is_rebuilt_from_the_database(client_for, user, upstream):
    from django.core.cache import cache

    key, raw = limited_key(user, budget_usd=Decimal("0.002"), budget_period="month")
    client = client_for(raw)
    statuses = [chat(client, f"before {n}").status_code for n in range(4)]
    assert statuses == [200] * 4

    cache.clear()  # Redis lost the spend (a flush, an eviction, a failover)
    statuses += [chat(client, f"after {n}").status_code for n in range(12)]

    assert 429 in statuses
    spent = sum(row.cost_usd for row in AIInteraction.objects.filter(api_key=key))
    assert spent <= Decimal("0.002") + WORST_CALL


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("flush", [False, True], ids=["redis-kept", "redis-flushed-mid-run"])
def test_64_concurrent_calls_through_2_gunicorn_processes_keep_the_budget(
    start_web, user, fake_openai, flush
):
    from django.core.cache import cache

    route_to(fake_openai)
    fake_openai.default_delay = 0.05
    key, raw = limited_key(user, budget_usd=Decimal("0.010"), budget_period="day")
    # Timeouts for a loaded 2-core test machine (32 clients at once), not the defaults'
    # fail-fast ones: a 503 here would be the machine, not the budget.
    base = start_web(
        WEB_CONCURRENCY="2",
        AI_RETRY_BASE_DELAY="0.01",
        DATABASE_POOL_TIMEOUT="15",
        REDIS_SOCKET_TIMEOUT="10",
        # 32 calls of one key at once: the budget refuses them here, not its in-flight limit.
        API_MAX_PARALLEL_REQUESTS="64",
    )

    def call(number: int) -> tuple[int, dict]:
        if flush and number == 32:
            cache.clear()  # Redis loses every spend and reservation while calls run
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": f"concurrent call {number}"}],
            "max_tokens": 4,  # worst case $0.00034 a call, the answer costs $0.00022
            "cache": False,
        }
        return _post(f"{base}{CHAT}", body, raw)

    with ThreadPoolExecutor(max_workers=32) as clients:  # 32 clients, two calls each
        answers = list(clients.map(call, range(64)))

    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429}, [body for _, body in answers if _ not in (200, 429)]
    assert 429 in statuses
    assert 200 in statuses
    assert all(body["error"]["code"] == "budget_exceeded" for s, body in answers if s == 429)
    rows = AIInteraction.objects.filter(api_key=key)
    spent = sum(row.cost_usd for row in rows)
    assert spent <= Decimal("0.010") + WORST_CALL
    assert chats(fake_openai) == rows.count() == statuses.count(200)  # refused: never sent
    assert not rows.exclude(reserved_usd=0).exists()  # every reservation settled
    status, shown = _get(f"{base}/api/v1/keys/{key.pk}/", raw)
    assert (status, Decimal(shown["spend_usd"])) == (200, spent)  # the API's spend: the rows'
    assert spent >= Decimal("0.005")  # the budget is used, not refused wholesale
    print(f"\nbudget $0.010: {statuses.count(200)} answered, spent ${spent}")


def _get(url: str, key: str) -> tuple[int, dict]:
    import json
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, json.loads(response.read())


@pytest.mark.django_db(transaction=True)
def test_a_key_with_one_parallel_place_calls_one_after_another_without_a_refusal(
    start_web, user, fake_openai
):
    """A call's place is given back as its response goes out: the client's next call,
    sent at once on a new connection, finds it free."""
    route_to(fake_openai)
    key, raw = limited_key(user, max_parallel_requests=1)
    base = start_web()

    def call(number: int) -> int:
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": f"one after another {number}"}],
            "max_tokens": 4,
            "cache": False,
        }
        return _post(f"{base}{CHAT}", body, raw)[0]  # a connection of its own each time

    statuses = [call(number) for number in range(40)]

    assert statuses == [200] * 40
    assert AIInteraction.objects.filter(api_key=key, status="succeeded").count() == 40


@pytest.mark.django_db
def test_a_settlement_gives_the_place_back_before_the_response_goes_out():
    """Inside a request the settlement is sent before the response, its reply read once
    the response is out: by then Redis has given the place back."""
    scope = Scope("key", uuid.uuid4().hex, LimitConfig(parallel=1))

    def view(request):
        admit([scope], tokens=1, worst_cost=Decimal(0)).settle(tokens=1, cost=Decimal(0))
        return HttpResponse("answered")

    response = AfterResponseMiddleware(view)(RequestFactory().get("/"))

    # The response is ready to go out; the settlement's reply is still unread.
    admit([scope], tokens=1, worst_cost=Decimal(0)).settle(tokens=1, cost=Decimal(0))
    response.close()
    admit([scope], tokens=1, worst_cost=Decimal(0))
    with pytest.raises(AppError) as refused:
        admit([scope], tokens=1, worst_cost=Decimal(0))
    assert refused.value.status_code == 429


def _post(url: str, body: dict, key: str) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- Redis down ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_with_redis_down_budgets_follow_the_fail_mode(
    client_for, user, upstream, closed_port, settings, caplog, mode
):
    settings.GOVERNANCE_FAIL_MODE = mode
    _, budgeted = limited_key(user, budget_usd=Decimal("1"))
    _, unbudgeted = api_key_create(user=user, name="free")

    with override_settings(CACHES=redis_cache_at(closed_port)), caplog.at_level(logging.WARNING):
        budgeted_answer = chat(client_for(budgeted), "needs a budget check")
        free_answer = chat(client_for(unbudgeted), "needs nothing")

    assert free_answer.status_code == 200
    if mode == "closed":
        assert budgeted_answer.status_code == 503
        assert budgeted_answer.json()["error"]["code"] == "governance_unavailable"
        assert chats(upstream) == 1
    else:
        assert budgeted_answer.status_code == 200
        assert "let a call through unchecked" in caplog.text
        assert chats(upstream) == 2


@pytest.mark.django_db
def test_an_ai_batch_for_a_model_out_of_the_keys_scope_is_refused_when_submitted(
    client_for, user, upstream
):
    from apps.tasks.models import Task

    route_to(upstream, "claude-like")
    key, raw = limited_key(user, allowed_models=["gpt-4o*"])
    client = client_for(raw)
    batch = {"type": "ai.batch", "params": {"prompts": ["a", "b"], "model": "claude-like"}}

    refused = client.post("/api/v1/tasks/", batch, format="json")
    accepted = client.post(
        "/api/v1/tasks/",
        {"type": "ai.batch", "params": {"prompts": ["a"], "model": "gpt-4o"}},
        format="json",
    )

    assert refused.status_code == 403
    assert refused.json()["code"] == "model_not_allowed"
    assert accepted.status_code == 202
    assert Task.objects.get().api_key_id == key.pk  # its prompts count for the key
    assert chats(upstream) == 0


@pytest.mark.django_db
def test_tags_come_from_the_header_and_the_metadata(api_client, upstream):
    response = chat(
        api_client,
        "tagged",
        metadata={"tags": ["project-x"]},
        HTTP_X_CONTEXTOS_TAGS="team-a, nightly",
    )

    assert response.status_code == 200
    assert AIInteraction.objects.get().tags == ["project-x", "team-a", "nightly"]


@pytest.mark.django_db
def test_too_many_or_too_long_tags_are_a_400_and_nothing_is_called(api_client, upstream):
    too_long = chat(api_client, "x", metadata={"tags": ["t" * 101]})
    too_many = chat(api_client, "x", HTTP_X_CONTEXTOS_TAGS=",".join(f"t{n}" for n in range(21)))

    assert (too_long.status_code, too_many.status_code) == (400, 400)
    assert "tags" in too_long.json()["error"]["message"]
    assert chats(upstream) == 0
