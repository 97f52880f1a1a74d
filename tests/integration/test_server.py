"""The real web server (scripts/start-web, production settings) when a dependency fails."""

import json
import time

import pytest

from tests.integration.conftest import http_get

pytestmark = pytest.mark.server


def timed(url: str, **kwargs):
    started = time.monotonic()
    status, headers, body = http_get(url, **kwargs)
    return status, headers, json.loads(body), time.monotonic() - started


@pytest.mark.parametrize("failure", ["closed_port", "blackhole_port"], ids=["down", "hung"])
def test_database_outage(start_web, request, failure):
    port = request.getfixturevalue(failure)
    base = start_web(DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/contextos")

    status, _, body, elapsed = timed(f"{base}/api/v1/health/ready")
    assert elapsed < 3.0
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "error"
    assert body["checks"]["cache"]["status"] == "ok"

    assert http_get(f"{base}/api/v1/health/live")[0] == 200

    # An API call that needs the database answers 503 in the error format.
    status, headers, body, _ = timed(
        f"{base}/api/v1/health/", headers={"Authorization": "Bearer ctx_" + "a" * 40}
    )
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert body["code"] == "database_unavailable"
    assert body["request_id"] == headers["X-Request-ID"]


def test_everything_up_under_production_settings(start_web):
    base = start_web()
    status, headers, body, _ = timed(f"{base}/api/v1/health/ready")
    assert status == 200, body
    assert body["status"] == "ok"
    assert headers["X-Request-ID"]
    # Swagger UI and its assets are served by the app itself (WhiteNoise).
    status, _, html = http_get(f"{base}/api/docs/")
    assert status == 200
    asset = html.decode().split('src="')[1].split('"')[0]
    assert http_get(f"{base}{asset}")[0] == 200
