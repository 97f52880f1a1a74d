"""One key's open streams cannot take every thread of the web server: a real gunicorn
(2 processes x 16 threads) holding 40 streams of one key against a 10 s upstream still
answers ``/api/v1/health/live`` and another key's calls at once, and refuses the key's
streams past its in-flight limit (``API_MAX_PARALLEL_REQUESTS``, 16) or past a process's
``WEB_MAX_STREAMS`` (12 of its 16 threads) with 429 ``too_many_concurrent_requests``."""

import http.client
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.routing.models import Route
from contextos.cache import redis_client
from tests.factories import UserFactory
from tests.fakes import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import wait_for
from tests.routes import deploy
from tests.sse import data_events

STREAMS = 40
PROBES = 20
PROBE_P99_MS = 200
# 18 words: an answer of 19 streamed word by word, about 20 events 0.5 s apart, 10 s.
PROMPT_WORDS = 18
CHUNK_DELAY = 0.5


@dataclass
class Stream:
    status: int = 0
    retry_after: str | None = None
    error: dict[str, Any] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    ended_at: float = 0.0


def p99(samples: list[float]) -> float:
    """The nearest-rank 99th percentile (of 20 samples, the slowest)."""
    return sorted(samples)[math.ceil(0.99 * len(samples)) - 1]


def request(base: str, method: str, path: str, key: str = "", body: Any = None):
    """One request on a connection of its own, as a probe makes it: (status, headers,
    body, milliseconds from connecting to the last byte)."""
    address = urlsplit(base)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        connection.request(method, path, json.dumps(body) if body else None, headers)
        response = connection.getresponse()
        content = response.read()
        return response.status, response, content, (time.perf_counter() - started) * 1000
    finally:
        connection.close()


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_40_streams_of_one_key_leave_threads_for_health_and_other_keys(
    start_web, user, fake_openai, settings
):
    slow = fake_openai
    deploy(Route.objects.create(name="slow-gpt"), slow, "slow")
    slow.script(*[Reply(chunk_delay=CHUNK_DELAY) for _ in range(STREAMS)])
    with FakeOpenAI() as fast:
        deploy(Route.objects.create(name="fast-gpt"), fast, "fast")
        base = start_web(
            WEB_CONCURRENCY="2",
            # The server reads the provider keys this process wrote.
            PROVIDER_KEYS_SECRET=settings.PROVIDER_KEYS_SECRET or settings.SECRET_KEY,
            # Timeouts for a loaded 2-core test machine (40 clients at once), not the
            # defaults' fail-fast ones: a 503 here would be the machine, not the limits.
            DATABASE_POOL_TIMEOUT="15",
            REDIS_SOCKET_TIMEOUT="10",
        )
        streamer_key, streamer = api_key_create(user=user, name="streamer")
        _, other = api_key_create(user=UserFactory(), name="another user's")
        address = urlsplit(base)
        answered = threading.Semaphore(0)

        def hold(number: int) -> Stream:
            """Stream to the end, or read the refusal; ``answered`` once the status is in."""
            words = " ".join(f"w{number}.{n}" for n in range(PROMPT_WORDS))
            body = {
                "model": "slow-gpt",
                "messages": [{"role": "user", "content": words}],
                "stream": True,
                "cache": False,
            }
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
            stream = Stream()
            try:
                connection.request(
                    "POST",
                    "/v1/chat/completions",
                    json.dumps(body),
                    {"Authorization": f"Bearer {streamer}", "Content-Type": "application/json"},
                )
                response = connection.getresponse()
                stream.status = response.status
                answered.release()
                if response.status == 200:
                    stream.events = data_events(response.read().decode())
                else:
                    stream.retry_after = response.getheader("Retry-After")
                    stream.error = json.loads(response.read())["error"]
            finally:
                connection.close()
                stream.ended_at = time.monotonic()
            return stream

        def chat(key: str, prompt: str):
            body = {
                "model": "fast-gpt",
                "messages": [{"role": "user", "content": prompt}],
                "cache": False,
            }
            return request(base, "POST", "/v1/chat/completions", key, body)

        # Both processes' first calls (the key read and cached, the routes loaded, the
        # upstream connected) are not what is measured: the probes are of a running server.
        for number in range(6):
            assert request(base, "GET", "/api/v1/health/live")[0] == 200
            assert chat(other, f"warming up {number}")[0] == 200
            assert chat(streamer, f"warming up {number}")[0] == 200

        with ThreadPoolExecutor(max_workers=STREAMS) as clients:
            held = [clients.submit(hold, number) for number in range(STREAMS)]
            # Each is started or refused at once: none waits for a thread.
            deadline = time.monotonic() + 5
            for _ in range(STREAMS):
                waited = answered.acquire(timeout=max(0.0, deadline - time.monotonic()))
                assert waited, "a stream was neither started nor refused within 5 s"

            health_ms, other_ms, statuses = [], [], []
            for number in range(PROBES):
                status, _, _, elapsed = request(base, "GET", "/api/v1/health/live")
                statuses.append(status)
                health_ms.append(elapsed)
                status, _, _, elapsed = chat(other, f"another key's call {number}")
                statuses.append(status)
                other_ms.append(elapsed)
            probed_at = time.monotonic()
            streams = [future.result(timeout=30) for future in held]

        print(
            f"\n{STREAMS} streams of one key open: /live p99 {p99(health_ms):.1f} ms "
            f"(median {sorted(health_ms)[PROBES // 2]:.1f}), another key's call p99 "
            f"{p99(other_ms):.1f} ms (median {sorted(other_ms)[PROBES // 2]:.1f}); "
            f"{sum(s.status == 200 for s in streams)} streams served"
        )
        served = [s for s in streams if s.status == 200]
        refused = [s for s in streams if s.status != 200]
        assert statuses == [200] * (2 * PROBES)
        assert probed_at < min(s.ended_at for s in served), "the streams ended before the probes"
        assert p99(health_ms) < PROBE_P99_MS
        assert p99(other_ms) < PROBE_P99_MS

        # The key's limit, and each process's 12 places, whichever came first.
        assert 12 <= len(served) <= 16
        assert all(s.events[-1] == "[DONE]" for s in served)
        assert {s.status for s in refused} == {429}
        assert {(s.error["type"], s.error["code"]) for s in refused} == {
            ("rate_limit_error", "too_many_concurrent_requests")
        }
        assert {s.retry_after for s in refused} == {"1"}

        # Every place given back: the key calls again at once.
        inflight = f"gov:key:{streamer_key.pk}:inflight"
        wait_for(lambda: redis_client().zcard(inflight) == 0, timeout=5, message="places held")
        assert chat(streamer, "after the streams")[0] == 200
        rows = AIInteraction.objects.filter(api_key=streamer_key, model="slow-gpt")
        assert rows.filter(status="succeeded").count() == rows.count() == len(served)
