"""/metrics across processes: what a real worker counts, and gunicorn's worker processes summed."""

import pytest

from apps.ai_interactions.models import AIInteraction
from tests.integration.conftest import http_get, http_post_json, wait_for
from tests.prometheus import parse, scrape, value


@pytest.mark.worker
def test_an_async_ai_call_run_by_the_worker_reaches_metrics(start_worker, api_client, anon_client):
    start_worker()

    response = api_client.post(
        "/api/v1/ai/interactions/", {"prompt": "count me", "mode": "async"}, format="json"
    )
    assert response.status_code == 202, response.json()
    wait_for(
        lambda: AIInteraction.objects.filter(pk=response.json()["id"], status="succeeded").exists(),
        timeout=60,
        message="the worker never answered the interaction",
    )

    # A worker process sends its counts within a second, batched.
    generated = {"type": "ai.generate", "status": "succeeded"}

    def counted():
        samples = scrape(anon_client)
        return samples if value(samples, "contextos_tasks_total", **generated) else None

    samples = wait_for(
        counted,
        timeout=5,
        message="the worker's counts never reached /metrics",
    )
    echo = {"provider": "echo", "model": "echo-1"}
    ai = {**echo, "status": "succeeded", "cached": "false"}
    assert value(samples, "contextos_ai_requests_total", **ai) == 1
    assert value(samples, "contextos_ai_tokens_total", **echo, direction="input") == 2
    assert value(samples, "contextos_tasks_total", **generated) == 1
    assert value(samples, "contextos_workers_online") == 1


@pytest.mark.server
def test_gunicorn_workers_are_summed_and_the_token_is_required(start_web):
    base = start_web(WEB_CONCURRENCY="2", METRICS_TOKEN="scrape-token-0123456789")
    for _ in range(40):
        assert http_get(f"{base}/api/v1/health/live")[0] == 200

    status, headers, body = http_get(f"{base}/metrics")
    assert status == 401
    assert headers["Content-Type"] == "application/json"

    status, _, body = http_get(
        f"{base}/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}
    )
    assert status == 200
    samples = parse(body.decode())
    live = {"view": "api/v1/health/live", "method": "GET", "status": "200"}
    # Whichever process answers the scrape, it reports every process's requests
    # (the readiness wait of start_web adds its own /live calls).
    assert value(samples, "contextos_http_requests_total", **live) >= 40
    assert (
        value(samples, "contextos_http_requests_total", view="metrics", method="GET", status="401")
        == 1
    )


@pytest.mark.server
def test_ai_calls_answered_by_gunicorn_are_counted_within_seconds(start_web, api_key):
    base = start_web(WEB_CONCURRENCY="2", METRICS_TOKEN="scrape-token-0123456789")
    for index in range(3):
        status, _, body = http_post_json(
            f"{base}/api/v1/ai/interactions/",
            {"prompt": f"counted {index}"},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert status == 201, body

    # Web processes send their counts in batches, about once a second.
    echo = {"provider": "echo", "model": "echo-1"}
    ai = {**echo, "status": "succeeded", "cached": "false"}

    def counted():
        _, _, body = http_get(
            f"{base}/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}
        )
        samples = parse(body.decode())
        return samples if value(samples, "contextos_ai_requests_total", **ai) == 3 else None

    samples = wait_for(counted, timeout=10, message="gunicorn's counts never reached /metrics")
    input_tokens = sum(AIInteraction.objects.values_list("input_tokens", flat=True))
    assert value(samples, "contextos_ai_tokens_total", **echo, direction="input") == input_tokens


def test_production_metrics_need_a_token_unless_declared_public(start_web):
    closed = start_web()
    status, _, _ = http_get(f"{closed}/metrics")
    assert status == 401
    opened = start_web(METRICS_PUBLIC="true")
    status, _, body = http_get(f"{opened}/metrics")
    assert status == 200
    assert b"contextos_workers_online" in body
