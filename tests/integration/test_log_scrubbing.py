"""No secret reaches a log line: keys in query strings, Basic credentials or unknown
headers are scrubbed from the web's (Django and gunicorn) and the worker's output."""

import base64
import json
import logging
import urllib.error
import urllib.request

import pytest
from kombu import Connection

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from contextos.logging import TextFormatter, scrub
from tests.integration.conftest import stop, wait_for

pytestmark = [pytest.mark.server, pytest.mark.worker]


def call(url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_keys_sent_every_wrong_way_reach_no_log_line(start_web, start_worker, user):
    from django.conf import settings

    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge("default")
    worker = start_worker(queue="default")
    base = start_web(WEB_ACCESS_LOG="-", LOG_LEVEL="DEBUG")
    _, raw_key = api_key_create(user=user, name="leaky client")
    _, other_key = api_key_create(user=user, name="in a prompt")
    secret_part = raw_key[12:]
    basic = base64.b64encode(f"{raw_key}:".encode()).decode()
    basic_user = base64.b64encode(f"{raw_key}:x-password-42".encode()).decode()

    statuses = [
        call(f"{base}/api/v1/tasks/?api_key={raw_key}"),
        call(f"{base}/api/v1/tasks/?key={raw_key}&token=opaque-token-xyz"),
        call(f"{base}/v1/models?access_token=opaque-token-xyz"),
        call(f"{base}/api/v1/tasks/", headers={"Authorization": f"Basic {basic}"}),
        call(f"{base}/api/v1/tasks/", headers={"Authorization": f"Basic {basic_user}"}),
        call(f"{base}/api/v1/tasks/", headers={"X-Client-Secret": raw_key, "X-Token": raw_key}),
        call(f"{base}/no/such/page?api_key={raw_key}"),
        call(
            f"{base}/api/v1/ai/interactions/?api_key={raw_key}",
            headers={"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"},
            data=json.dumps({"prompt": f"remember {other_key}", "mode": "async"}).encode(),
        ),
    ]
    assert statuses == [401, 401, 401, 401, 401, 401, 404, 202]
    wait_for(
        lambda: AIInteraction.objects.filter(status="succeeded").exists(),
        timeout=60,
        message="the worker never answered the interaction",
    )
    web_output = start_web.output(base)
    worker_output = stop(worker.process)

    # The requests were logged (access lines and Django's warnings), only without secrets.
    assert "/api/v1/tasks/?api_key=" in web_output
    assert "/no/such/page" in web_output
    assert "Task tasks.execute" in worker_output or "succeeded" in worker_output
    for output in (web_output, worker_output):
        for secret in (secret_part, other_key[12:], "opaque-token-xyz", basic, "x-password-42"):
            assert secret not in output
    assert "?api_key=[redacted]" in web_output


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            "GET /a?api_key=ctx_abcdefgh12345678901234567890123456 200",
            "GET /a?api_key=[redacted] 200",
        ),
        ("key ctx_abcdefgh12345678901234567890123456 used", "key ctx_abcdefgh[redacted] used"),
        ("GET /a?x=1&token=t0k3n&y=2", "GET /a?x=1&token=[redacted]&y=2"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"),
        ("'Bearer abc.def-ghi'", "'Bearer [redacted]'"),
        ("redis://user:pa55@host:6379/0", "redis://[redacted]@host:6379/0"),
        ("API key ctx_abcdefgh revoked", "API key ctx_abcdefgh revoked"),
        ("monkey=banana&keyboard=1", "monkey=banana&keyboard=1"),
    ],
)
def test_scrub_takes_out_secrets_and_keeps_the_rest(line, shown):
    assert scrub(line) == shown


def test_the_development_format_is_scrubbed_too():
    formatter = TextFormatter("%(message)s")
    record = logging.LogRecord(
        "x", logging.INFO, "", 0, "call with %s", ("?api_key=secret-value",), None
    )
    assert formatter.format(record) == "call with ?api_key=[redacted]"
