"""GET /metrics: Prometheus text, its token, HTTP counts per view, AI and task counters."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import Reply
from tests.prometheus import parse, scrape, value

pytestmark = pytest.mark.django_db

LIVE = {"view": "api/v1/health/live", "method": "GET", "status": "200"}
MODEL = "fake-gpt"


def test_metrics_are_prometheus_text_and_count_requests_per_view(anon_client):
    before = scrape(anon_client)
    for _ in range(3):
        assert anon_client.get("/api/v1/health/live").status_code == 200
    anon_client.get("/no/such/page")
    response = anon_client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert families["contextos_http_requests"].type == "counter"
    assert families["contextos_http_request_duration_seconds"].type == "histogram"
    after = parse(response.content.decode())
    counted = value(after, "contextos_http_requests_total", **LIVE)
    assert counted - value(before, "contextos_http_requests_total", **LIVE) == 3
    timed = value(after, "contextos_http_request_duration_seconds_count", **LIVE)
    assert timed - value(before, "contextos_http_request_duration_seconds_count", **LIVE) == 3
    unmatched = {"view": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "contextos_http_requests_total", **unmatched) >= 1


def test_queue_depth_and_workers_online_are_reported(anon_client):
    samples = scrape(anon_client)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert ("contextos_queue_depth", frozenset({("queue", queue)})) in samples
    assert ("contextos_workers_online", frozenset()) in samples


@override_settings(METRICS_TOKEN="metrics-token-0123456789")
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic bWV0cmljcy10b2tlbi0wMTIzNDU2Nzg5", "Bearer "],
)
def test_a_configured_token_is_required(anon_client, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = anon_client.get("/metrics", HTTP_X_REQUEST_ID="scrape-1", **headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {
        "error": "A valid metrics token is required.",
        "code": "not_authenticated",
        "details": {},
        "request_id": "scrape-1",
    }


@override_settings(METRICS_TOKEN="metrics-token-0123456789")
def test_the_configured_token_opens_metrics(anon_client):
    samples = scrape(anon_client, HTTP_AUTHORIZATION="Bearer metrics-token-0123456789")
    assert ("contextos_workers_online", frozenset()) in samples


def test_metrics_answer_only_get(anon_client):
    response = anon_client.post("/metrics")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["code"] == "method_not_allowed"


def ai_labels(**labels: str) -> dict[str, str]:
    return {"provider": "openai", "model": MODEL, **labels}


def test_ai_calls_count_requests_tokens_and_cost(anon_client, api_client, openai_model):
    openai_model.script(Reply(), Reply(status=400))
    body = {"prompt": "three little words", "model": MODEL}
    assert api_client.post("/api/v1/ai/interactions/", body, format="json").status_code == 201
    # The same prompt again is a cache hit; another one fails at the provider.
    assert api_client.post("/api/v1/ai/interactions/", body, format="json").status_code == 201
    failed = {**body, "prompt": "something else"}
    assert api_client.post("/api/v1/ai/interactions/", failed, format="json").status_code == 502

    samples = scrape(anon_client)
    requests = "contextos_ai_requests_total"
    assert value(samples, requests, **ai_labels(status="succeeded", cached="false")) == 1
    assert value(samples, requests, **ai_labels(status="succeeded", cached="true")) == 1
    assert value(samples, requests, **ai_labels(status="failed", cached="false")) == 1
    # Tokens as recorded on each interaction (the cache hit's too); cost only for the call.
    tokens = "contextos_ai_tokens_total"
    assert value(samples, tokens, **ai_labels(direction="input")) == 3 + 3
    assert value(samples, tokens, **ai_labels(direction="output")) == 4 + 4
    cost = value(samples, "contextos_ai_cost_usd_total", **ai_labels())
    assert Decimal(str(cost)) == Decimal("0.000011")  # 3 x $1 + 4 x $2 per million tokens


def test_cancelled_task_is_counted(anon_client, api_client, django_capture_on_commit_callbacks):
    submitted = api_client.post(
        "/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {"seconds": 1}}, format="json"
    )
    with django_capture_on_commit_callbacks(execute=True):
        cancel = api_client.post(f"/api/v1/tasks/{submitted.json()['id']}/cancel/")
    assert cancel.json()["status"] == "cancelled"
    samples = scrape(anon_client)
    labels = {"type": "diagnostics.sleep", "status": "cancelled"}
    assert value(samples, "contextos_tasks_total", **labels) == 1


def test_a_redis_outage_loses_counts_but_fails_nothing(anon_client, api_client, closed_port):
    down = {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{closed_port}/0"}
    with override_settings(CACHES={"default": down}):
        created = api_client.post("/api/v1/ai/interactions/", {"prompt": "hi"}, format="json")
        response = anon_client.get("/metrics")
    assert created.status_code == 201
    assert created.json()["status"] == "succeeded"
    assert response.status_code == 200
    samples = parse(response.content.decode())
    assert not [key for key in samples if key[0] == "contextos_ai_requests_total"]


def test_a_worker_process_sends_its_counts_in_batches_kept_through_a_redis_outage(anon_client):
    from apps.tasks.metrics import TASKS
    from contextos.metrics import _Batch

    labels = {"type": "test.batched", "status": "succeeded"}
    before = value(scrape(anon_client), "contextos_tasks_total", **labels)
    batch = _Batch(interval=3600)  # flushed by hand below
    batch.add([TASKS.by("test.batched", "succeeded")] * 3)
    assert value(scrape(anon_client), "contextos_tasks_total", **labels) == before

    unreachable = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    with override_settings(CACHES=unreachable):
        batch.flush()
    assert value(scrape(anon_client), "contextos_tasks_total", **labels) == before
    batch.add([TASKS.by("test.batched", "succeeded")])
    batch.flush()

    assert value(scrape(anon_client), "contextos_tasks_total", **labels) - before == 4


@pytest.mark.django_db(transaction=True)
def test_without_redis_counts_are_added_to_a_table_and_none_is_lost(anon_client, database_cache):
    from apps.ai_interactions.metrics import AI_COST
    from apps.tasks.metrics import TASKS
    from contextos import metrics

    def add(_: int) -> None:
        try:
            for _ in range(50):
                metrics.count(TASKS.by("test.table", "succeeded"), AI_COST.by("p", "m", amount=0.5))
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(8)))
    samples = scrape(anon_client)
    assert value(samples, "contextos_tasks_total", type="test.table", status="succeeded") == 400
    assert value(samples, "contextos_ai_cost_usd_total", provider="p", model="m") == 200.0


@override_settings(METRICS_TOKEN="", METRICS_PUBLIC=False)
def test_without_a_token_metrics_are_closed_unless_declared_public(anon_client):
    response = anon_client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == (
        "Metrics need a token: set METRICS_TOKEN (or METRICS_PUBLIC=true)."
    )
    with override_settings(METRICS_PUBLIC=True):
        assert anon_client.get("/metrics").status_code == 200
