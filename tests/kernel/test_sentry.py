"""Sentry events carry no prompt, answer or credential: the scrubber, and the real SDK."""

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contextos.sentry import SCRUBBED, scrub_event

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Summarize the confidential merger memo for ACME"
ANSWER = "ACME will acquire Initech next quarter"
API_KEY = "ctx_" + "k" * 40


def django_error_event() -> dict:
    """An event shaped as Sentry's Django and logging integrations build it."""
    return {
        "level": "error",
        "logentry": {"message": "Provider call failed for %s", "params": [API_KEY]},
        "request": {
            "url": "http://api.example.com/api/v1/ai/interactions/",
            "method": "POST",
            "query_string": "",
            "headers": {
                "Authorization": f"Bearer {API_KEY}",
                "Content-Type": "application/json",
                "X-Api-Key": API_KEY,
                "X-Request-ID": "req-1",
            },
            "cookies": {"sessionid": "abc"},
            "data": {
                "prompt": PROMPT,
                "messages": [{"role": "user", "content": PROMPT}],
                "model": "gpt-4o",
                "params": {"max_tokens": 200},
            },
        },
        "extra": {"interaction": {"response": ANSWER, "status": "failed"}, "sys.argv": []},
        "breadcrumbs": {
            "values": [
                {
                    "category": "ai",
                    "message": f"asked with Bearer {API_KEY}",
                    "data": {"text": ANSWER},
                },
                {"category": "query", "message": "SELECT 1", "data": {}},
            ]
        },
        "exception": {
            "values": [
                {
                    "type": "ProviderCallError",
                    "value": "upstream said 500",
                    "stacktrace": {
                        "frames": [
                            {
                                "module": "apps.tasks.execution",
                                "function": "execute",
                                "vars": {
                                    "task_id": "'42'",
                                    "params": {"prompts": [PROMPT], "model": "gpt-4o"},
                                    "openai_api_key": "'sk-live-abcdefghijkl'",
                                },
                            },
                            {
                                "module": "apps.ai_interactions.services",
                                "function": "prompt_hash",
                                "vars": {"canonical": repr(PROMPT), "model": "'gpt-4o'"},
                            },
                        ]
                    },
                }
            ]
        },
    }


def test_the_scrubber_masks_prompts_answers_and_credentials():
    event = scrub_event(django_error_event(), {})
    text = json.dumps(event)
    assert PROMPT not in text
    assert ANSWER not in text
    assert API_KEY not in text
    assert "sk-live" not in text

    request = event["request"]
    assert request["headers"]["Authorization"] == SCRUBBED
    assert request["headers"]["X-Api-Key"] == SCRUBBED
    assert request["headers"]["X-Request-ID"] == "req-1"  # what is not sensitive stays
    assert request["cookies"] == SCRUBBED
    assert request["data"]["prompt"] == request["data"]["messages"] == SCRUBBED
    assert request["data"]["model"] == "gpt-4o"
    assert request["data"]["params"] == {"max_tokens": 200}
    assert event["extra"]["interaction"] == {"response": SCRUBBED, "status": "failed"}
    assert event["breadcrumbs"]["values"][1]["message"] == "SELECT 1"
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames[0]["vars"]["task_id"] == "'42'"
    assert frames[0]["vars"]["params"] == {"prompts": SCRUBBED, "model": "gpt-4o"}
    # Every local of the AI domain's frames is dropped, whatever its name.
    assert frames[1]["vars"] == {"canonical": SCRUBBED, "model": SCRUBBED}
    assert event["exception"]["values"][0]["value"] == "upstream said 500"


def test_an_unparsed_body_is_dropped_whole():
    event = {"request": {"data": f'{{"prompt": "{PROMPT}"'}}
    assert scrub_event(event, {})["request"]["data"] == SCRUBBED


class _Collector(BaseHTTPRequestHandler):
    """A Sentry ingestion endpoint: keeps every envelope POSTed to it."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        return


@pytest.fixture
def sentry_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.envelopes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# Runs in a process of its own with SENTRY_DSN set: an AI call whose provider
# raises, captured by the SDK as the settings configured it.
CAPTURE = f"""
import logging, sentry_sdk
from apps.ai_interactions.services import prompt_hash

def call_provider(messages, api_key):
    prompt_hash(model="gpt-4o", messages=messages, params={{}})
    raise RuntimeError("the provider is down")

sentry_sdk.set_extra("body", {{"prompt": {PROMPT!r}}})
sentry_sdk.add_breadcrumb(category="ai", message="answer", data={{"response": {ANSWER!r}}})
try:
    call_provider([{{"role": "user", "content": {PROMPT!r}}}], {API_KEY!r})
except RuntimeError:
    logging.getLogger("apps.ai_interactions").exception("AI call failed")
sentry_sdk.flush(10)
"""


def test_events_sent_by_the_sdk_carry_no_prompt(sentry_server):
    port = sentry_server.server_address[1]
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell"],
        input=CAPTURE,
        cwd=ROOT,
        env=environment
        | {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "SENTRY_DSN": f"http://publickey@127.0.0.1:{port}/1",
            "SENTRY_ENVIRONMENT": "ci",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    sent = b"\n".join(sentry_server.envelopes).decode()
    assert "the provider is down" in sent  # the error itself was reported...
    assert '"environment":"ci"' in sent.replace(" ", "")
    assert PROMPT not in sent  # ...without what was asked,
    assert ANSWER not in sent  # what was answered,
    assert API_KEY not in sent  # or the caller's key
