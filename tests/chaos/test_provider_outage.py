"""The AI provider (the fake OpenAI-compatible server) answers 503 for a while."""

import os
import time

from tests.chaos.conftest import Client, is_error_body, wait_for
from tests.integration.test_ai_end_to_end import MODEL, provider_env

# The behaviour is the same for any outage shorter than the async retries' reach
# (about 75 s of backoff before the last of 5 retries); 30 s by default.
OUTAGE_SECONDS = float(os.environ.get("CHAOS_PROVIDER_OUTAGE_SECONDS", "30"))


def test_provider_outage_sync_fails_cleanly_async_retries_until_back(fake_openai, serve, chaos_key):
    env = {**provider_env(fake_openai), "AI_RETRY_BASE_DELAY": "0.2"}
    base = serve(web_env=env, worker_env=env).base
    client = Client(base, chaos_key)

    fake_openai.outage(OUTAGE_SECONDS)
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    sync = client.post("/api/v1/ai/interactions/", {"prompt": "now please", "model": MODEL})
    later = client.post(
        "/api/v1/ai/interactions/", {"prompt": "later please", "model": MODEL, "mode": "async"}
    )

    assert sync.status == 502, sync.body
    assert is_error_body(sync, "provider_error")
    failed_id = sync.body["details"]["interaction_id"]
    failed = client.get(f"/api/v1/ai/interactions/{failed_id}/").body
    assert failed["status"] == "failed"
    assert failed["error"]["provider_status"] == 503

    assert later.status == 202, later.body
    path = f"/api/v1/ai/interactions/{later.body['id']}/"
    seen_queued_with_error = False

    def answered():
        nonlocal seen_queued_with_error
        interaction = client.get(path).body
        seen_queued_with_error |= interaction["status"] == "queued" and bool(interaction["error"])
        return interaction if interaction["status"] in {"succeeded", "failed"} else None

    interaction = wait_for(answered, timeout=OUTAGE_SECONDS + 150, interval=0.5)
    answered_after = time.monotonic() - outage_ends
    calls = [r for r in fake_openai.requests if r["path"] == "/v1/chat/completions"]
    async_calls = [r for r in calls if r["body"]["messages"][-1]["content"] == "later please"]
    task = client.get(f"/api/v1/tasks/{later.body['task_id']}/").body
    after = client.post("/api/v1/ai/interactions/", {"prompt": "now please", "model": MODEL})
    print(
        f"\nprovider-outage: {OUTAGE_SECONDS:g} s of 503; sync answered 502 in "
        f"{sync.seconds:.2f} s naming interaction {failed_id}; async {interaction['status']} "
        f"after {len(async_calls)} provider calls, {answered_after:.1f} s after the outage ended"
    )
    assert interaction["status"] == "succeeded", interaction
    assert interaction["response"] == "fake: later please"
    assert seen_queued_with_error  # it waited, queued, between attempts
    assert task["status"] == "succeeded"
    assert len(async_calls) > 1
    assert after.status == 201, after.body
