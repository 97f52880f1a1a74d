"""`make bench`: each scenario and its baseline in the same run, as medians and ratios.

Starts what it needs (gunicorn through scripts/start-web with production
settings, Celery workers through scripts/start-worker), uses its own
PostgreSQL database and Redis databases, prints one table and writes it to
BENCHMARKS.md with a description of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BENCH_DATABASE = "contextos_bench"
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")

ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "DATABASE_URL": f"{POSTGRES}/{BENCH_DATABASE}",
    "REDIS_URL": f"{REDIS}/10",
    "CELERY_BROKER_URL": f"{REDIS}/11",
    "SECRET_KEY": "benchmark-only-secret-key-" + "0123456789" * 4,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_SSL_REDIRECT": "false",
    "API_RATE_LIMIT": "100000000/min",
    # The task-submission scenario queues tasks no worker drains: it measures the
    # submission (the per-user limit's lock and count included), not a refusal.
    "TASKS_MAX_ACTIVE_PER_USER": "100000000",
    "LOG_LEVEL": "WARNING",
    "PYTHONDONTWRITEBYTECODE": "1",
}
NOOP_QUEUE = "bench-noop"
BENCH_MODEL = "bench-gpt"
LIST_ROWS = 1_000_000
LIST_DEPTH = 500_000
CACHED_PROMPT = "the benchmark prompt, answered from the cache"


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    """One scenario: ContextOS's figure, the baseline's, and the target they must meet.

    ``target`` is a minimum ratio (ContextOS / baseline, for throughput), or with
    ``kind="max-ratio"`` a maximum one (for latency), or with ``kind="max-added"``
    a ceiling on the difference (ContextOS - baseline, for added latency); a row of
    ``kind="info"`` is there for scale and has no target.
    ``paired``, when given, is the median of the ratios of runs taken side by
    side: the machine's speed drifts between runs, and a pair shares its drift.
    """

    scenario: str
    contextos: float
    baseline: float
    unit: str
    target: float
    kind: str = "min-ratio"
    paired: float | None = None

    @property
    def ratio(self) -> float:
        if self.paired is not None:
            return self.paired
        return self.contextos / self.baseline if self.baseline else 0.0

    @property
    def passed(self) -> bool:
        if self.kind == "info":
            return True
        if self.kind == "max-ratio":
            return self.ratio <= self.target
        if self.kind == "max-added":
            return self.contextos - self.baseline < self.target
        return self.ratio >= self.target

    @property
    def target_text(self) -> str:
        if self.kind == "info":
            return "(for scale)"
        if self.kind == "max-ratio":
            return f"<= {self.target}x"
        if self.kind == "max-added":
            return f"added < {self.target:g} {self.unit}"
        return f">= {self.target}x"


def process_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENVIRONMENT, "PATH": f"{BIN}:{os.environ['PATH']}", **extra}


def start(command: list[str], *, cwd: Path = ROOT, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=process_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out waiting for {what}")


def prepare_database() -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=process_env(),
        check=True,
    )


def setup_django() -> None:
    os.environ.update(ENVIRONMENT)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def bench_api_key(username: str = "bench", *, staff: bool = False) -> tuple[object, str]:
    from django.contrib.auth import get_user_model

    from apps.accounts.services import api_key_create

    user, _ = get_user_model().objects.update_or_create(
        username=username, defaults={"is_staff": staff}
    )
    return user, api_key_create(user=user, name="bench")[1]


# --- HTTP scenarios ---------------------------------------------------------------


@contextmanager
def web_server(
    workers: int = 2, *, root: Path = ROOT, port: int | None = None, **env: str
) -> Iterator[str]:
    """gunicorn serving the checkout at ``root`` (this one by default) with the bench's
    settings and ``env``; its base URL."""
    port = port or 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as static_root:
        server = start(
            [str(root / "scripts" / "start-web")],
            cwd=root,
            PORT=str(port),
            BIND_ADDRESS="127.0.0.1",
            WEB_CONCURRENCY=str(workers),
            WEB_ACCESS_LOG="/dev/null",
            STATIC_ROOT=static_root,
            **env,
        )
        with _serving(server, port, "/api/v1/health/live", what="web") as base:
            yield base


@contextmanager
def server_floor(upstream_url: str, *, port: int | None = None) -> Iterator[str]:
    """gunicorn serving ``bench.wsgi_floor`` (no Django) as ``scripts/start-web`` serves
    the app by default (its worker class and threads) with the bench's keep-alive, one
    worker process; its base URL."""
    port = port or 17000 + os.getpid() % 1000
    server = start(
        [
            str(BIN / "gunicorn"),
            "bench.wsgi_floor:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=1",
            "--worker-class=gthread",
            "--threads=16",
            "--keep-alive=5",
        ],
        BENCH_UPSTREAM_URL=upstream_url,
    )
    with _serving(server, port, "/", what="the server's floor") as base:
        yield base


@contextmanager
def _serving(server: subprocess.Popen, port: int, ready_path: str, *, what: str) -> Iterator[str]:
    """The base URL of ``server`` on ``port`` once ``ready_path`` answers 200; the server
    is stopped when the block ends."""
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get_ok(base + ready_path), timeout=60, what=what)
        yield base
    finally:
        stop(server)


def _get_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def wrk(url: str, *, seconds: int, script: str | None = None, connections: int = 8) -> float:
    """Requests per second; any non-2xx answer fails the benchmark."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        raise BenchError(f"{url}: {match.group(1)} non-2xx responses\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def lua_script(directory: str, name: str, api_key: str, body: str | None = None) -> str:
    """A wrk script sending the API key (and, for a POST, a JSON body)."""
    lines = [f'wrk.headers["Authorization"] = "Bearer {api_key}"']
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = '{body}'",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    path = Path(directory) / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def post_json(url: str, body: dict, api_key: str | None = None) -> tuple[int, float]:
    """POST ``body``; return the status and the seconds it took."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(  # noqa: S310
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - started


def per_request_ms(requests_per_second: float, connections: int = 8) -> float:
    """Mean latency of ``connections`` clients at ``requests_per_second`` in all."""
    return connections * 1000 / requests_per_second


@dataclass
class Paired:
    """Figures of ContextOS and its baseline, run by run (each run measures both, side by side)."""

    ours: list[float]
    theirs: list[float]

    @property
    def medians(self) -> tuple[float, float]:
        return statistics.median(self.ours), statistics.median(self.theirs)

    def ratio(self, transform: Callable[[float], float] = float) -> float:
        """The median over runs of transform(ours) / transform(theirs)."""
        return statistics.median(
            transform(a) / transform(b) for a, b in zip(self.ours, self.theirs, strict=True)
        )


def compare_http(
    contextos: tuple[str, str | None],
    baseline: tuple[str, str | None],
    *,
    runs: int,
    seconds: int,
    before_each: Callable[[], object] = lambda: None,
) -> Paired:
    """Req/s of each per run, runs interleaved (and order alternated) so noise hits both;
    ``before_each`` is called before every run."""
    for url, script in (contextos, baseline):
        before_each()
        wrk(url, seconds=1, script=script)  # warm-up
    pairs = Paired([], [])
    for run in range(runs):
        order = [(pairs.ours, contextos), (pairs.theirs, baseline)]
        for results, (url, script) in order if run % 2 == 0 else reversed(order):
            before_each()
            results.append(wrk(url, seconds=seconds, script=script))
    return pairs


def http_row(scenario: str, pairs: Paired, target: float) -> Row:
    return Row(scenario, *pairs.medians, "req/s", target, paired=pairs.ratio())


@dataclass
class Timed:
    """One request's answer: its status, the seconds it took (to its first byte of body,
    for a stream), and ContextOS's own account of them (``Server-Timing``, in ms)."""

    status: int
    seconds: float
    stages: dict[str, float]


def server_timing(header: str | None) -> dict[str, float]:
    """``{"auth": 0.31, ..., "total": 4.2}`` of ``auth;dur=0.31, ..., total;dur=4.2``."""
    stages = {}
    for part in (header or "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration)
    return stages


class KeepAliveClient:
    """HTTP/1.1 connections kept open, one per origin, as API clients (the SDKs) keep them."""

    def __init__(self) -> None:
        self._connections: dict[str, object] = {}

    def post(
        self, url: str, body: dict, api_key: str | None = None, *, first_byte: bool = False
    ) -> Timed:
        """POST ``body``; with ``first_byte``, stop timing at the first byte of the body
        (a stream's first event), then read the rest, as an SDK reads a stream to its end."""
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        payload = json.dumps(body).encode()
        for retry in (False, True):
            connection = self._connections.get(parts.netloc)
            if connection is None:
                connection = http.client.HTTPConnection(parts.netloc, timeout=30)
                connection.connect()  # not timed: an SDK's pool has it open already
                self._connections[parts.netloc] = connection
            started = time.perf_counter()
            try:
                connection.request("POST", parts.path, body=payload, headers=headers)
                response = connection.getresponse()
                response.read(1 if first_byte else None)
                seconds = time.perf_counter() - started
                response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                del self._connections[parts.netloc]
                if retry:
                    raise
                continue  # the server closed an idle connection: once more on a new one
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                del self._connections[parts.netloc]
            return Timed(
                response.status, seconds, server_timing(response.getheader("Server-Timing"))
            )
        raise AssertionError("unreachable")


@dataclass
class Latencies:
    """Requests through ContextOS and the same ones straight to the upstream, in ms,
    with ContextOS's stage timings of each."""

    ours: list[float]
    theirs: list[float]
    stages: list[dict[str, float]]

    def added(self) -> tuple[float, float]:
        return statistics.median(self.ours), statistics.median(self.theirs)


def added_latency(
    gateway: str,
    upstream: str,
    api_key: str,
    *,
    runs: int,
    requests: int,
    body: Callable[[str], dict],
    first_byte: bool = False,
) -> Latencies:
    """Calls through ContextOS (``gateway``: its URL) and straight to the upstream, one
    at a time on kept-alive connections; ``body`` makes each request's body from a
    prompt never asked before (never a cache hit)."""
    client = KeepAliveClient()
    measured = Latencies([], [], [])
    for run in range(runs):
        for _ in range(requests):
            sent = body(f"latency probe {run} {time.perf_counter_ns()}")
            pair = [(measured.ours, gateway, api_key), (measured.theirs, upstream, None)]
            for results, url, key in pair if run % 2 == 0 else reversed(pair):
                answer = client.post(url, sent, key, first_byte=first_byte)
                if answer.status != 200:
                    raise BenchError(f"{url} answered {answer.status}")
                results.append(answer.seconds * 1000)
                if key is not None:
                    measured.stages.append(answer.stages)
    return measured


def idle_round_trips(count: int = 200, idle: float = 0.05) -> tuple[float, float]:
    """Microseconds of a PostgreSQL round trip (``SELECT 1``) made ``idle`` seconds after
    the last one, as a gateway's first after a 50 ms provider call is, and of one made
    right after another: medians of ``count`` each, interleaved."""
    import psycopg

    with psycopg.connect(f"{POSTGRES}/{BENCH_DATABASE}", autocommit=True) as conn:
        conn.execute("SELECT 1")
        return after_idle(lambda: conn.execute("SELECT 1").fetchone(), count, idle)


def idle_python(count: int = 200, idle: float = 0.05) -> tuple[float, float]:
    """The same for Python alone: building a gateway call's interaction (the model
    instance and its prompt's cache key), as a request does before asking its provider."""
    from apps.ai_interactions.models import AIInteraction
    from apps.ai_interactions.services import prompt_hash

    messages = [{"role": "user", "content": "What is the capital of France?"}]

    def build() -> AIInteraction:
        return AIInteraction(
            owner_id=1,
            mode="gateway",
            status="running",
            model=GATEWAY_MODEL,
            messages=messages,
            params={},
            prompt=messages[0]["content"],
            prompt_hash=prompt_hash(model=GATEWAY_MODEL, messages=messages, params={}),
        )

    build()
    return after_idle(build, count, idle)


def after_idle(work: Callable[[], object], count: int, idle: float) -> tuple[float, float]:
    """Microseconds of ``work`` done ``idle`` seconds after the last, and right after
    another: medians of ``count`` each, interleaved."""
    waited, back_to_back = [], []
    for _ in range(count):
        time.sleep(idle)
        for results in (waited, back_to_back):
            started = time.perf_counter()
            work()
            results.append((time.perf_counter() - started) * 1e6)
    return statistics.median(waited), statistics.median(back_to_back)


def _tool(name: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look {name} up.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }


def deep_cursor_url(base: str, depth: int) -> str:
    """The list URL of the page that starts ``depth`` rows down (newest first)."""
    from rest_framework.pagination import Cursor

    from apps.ai_interactions.models import AIInteraction
    from contextos.pagination import CursorPagination

    position = AIInteraction.objects.order_by("-created_at").values_list("created_at", flat=True)[
        depth
    ]
    paginator = CursorPagination()
    paginator.base_url = f"{base}/api/v1/ai/interactions/"
    return paginator.encode_cursor(Cursor(offset=0, reverse=False, position=str(position)))


def forget_queued_tasks() -> None:
    """Delete the tasks earlier runs of the submission scenario left queued (no worker
    drains them): every submission counts its user's active tasks, which should hold
    this run's backlog, not every earlier run's."""
    from apps.tasks.models import Task, TaskStatus

    Task.objects.filter(
        owner__username__in=["bench", "bench-staff"], status=TaskStatus.QUEUED
    ).delete()


def ensure_interactions(count: int) -> None:
    from apps.ai_interactions.models import AIInteraction
    from apps.operations.demo_data import demo_users, seed_interactions

    missing = count - AIInteraction.objects.count()
    if missing > 0:
        started = time.monotonic()
        seed_interactions(count=missing, owners=demo_users(count=10))
        print(f"seeded {missing:,} interactions in {time.monotonic() - started:.0f} s", flush=True)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE ai_interactions_aiinteraction")


def echo_route() -> None:
    """The default model (echo-1) the REST cache-hit scenario asks, on an empty database."""
    from apps.routing.models import Route
    from apps.routing.table import ECHO_MODEL, routing_bootstrap

    if not Route.objects.filter(name=ECHO_MODEL).exists():
        routing_bootstrap()


GATEWAY_MODEL = "bench-gateway"
GATEWAY_DEPLOYMENTS = 3


def gateway_route(upstream_url: str) -> None:
    """The route ``GATEWAY_MODEL``: 3 weighted deployments, each of its own provider, all on
    the fake upstream of this run."""
    from decimal import Decimal

    from apps.routing.models import Deployment, Provider, Route

    route, _ = Route.objects.update_or_create(name=GATEWAY_MODEL, defaults={"strategy": "weighted"})
    for number in range(1, GATEWAY_DEPLOYMENTS + 1):
        provider, _ = Provider.objects.update_or_create(
            name=f"bench-gateway-{number}", defaults={"kind": "openai", "base_url": upstream_url}
        )
        provider.set_api_key("bench")
        provider.save()
        Deployment.objects.update_or_create(
            route=route,
            provider=provider,
            model=BENCH_MODEL,
            defaults={"input_price_per_mtok": Decimal(1), "output_price_per_mtok": Decimal(2)},
        )


def governed_api_key(user) -> str:
    """A new key of ``user`` with a budget, an RPM and a TPM limit (never reached)."""
    from decimal import Decimal

    from apps.accounts.services import api_key_create
    from apps.governance.models import Limits

    api_key, raw = api_key_create(user=user, name="bench governed")
    Limits.objects.create(
        api_key=api_key, budget_usd=Decimal(10**6), rpm_limit=10**9, tpm_limit=10**9
    )
    return raw


def gateway_body(prompt: str) -> dict:
    return {"model": GATEWAY_MODEL, "messages": [{"role": "user", "content": prompt}]}


def streamed_body(prompt: str) -> dict:
    return {**gateway_body(prompt), "stream": True}


def tool_call_body(prompt: str) -> dict:
    """A chat request with two tools, answered by one tool call."""
    return {**gateway_body(prompt), "tools": [_tool("weather"), _tool("time")]}


def embeddings_body(prompt: str) -> dict:
    """Sixteen inputs to embed."""
    return {"model": GATEWAY_MODEL, "input": [f"{prompt} #{number}" for number in range(16)]}


def cache_hit_prompt(base: str, api_key: str) -> str:
    """Ask the gateway once (its answer is cached), and keep that answer under
    ``bench:answer`` for the baseline view; the body of the request to repeat."""
    from django.core.cache import cache

    from apps.ai_interactions.answer_cache import response_cache_key
    from apps.ai_interactions.models import AIInteraction

    body = gateway_body(CACHED_PROMPT)
    answer = KeepAliveClient().post(f"{base}/v1/chat/completions", body, api_key)
    if answer.status != 200:
        raise BenchError(f"the gateway answered {answer.status}")
    digest = AIInteraction.objects.filter(model=GATEWAY_MODEL).latest("created_at").prompt_hash
    cache.set("bench:answer", cache.get(response_cache_key(digest)), timeout=None)
    return json.dumps(body)


@dataclass
class Stages:
    """Where a kind of request's time went: per stage, the median ms of ContextOS's own
    ``Server-Timing``, and what the stages leave of the request."""

    kind: str
    medians: dict[str, float]

    @classmethod
    def of(cls, kind: str, timings: list[dict[str, float]], upstream_ms: float = 0.0) -> Stages:
        from contextos.timing import STAGES

        medians = {name: statistics.median(t.get(name, 0.0) for t in timings) for name in STAGES}
        medians["framework and response"] = statistics.median(
            t["total"] - sum(t.get(name, 0.0) for name in STAGES) for t in timings
        )
        if upstream_ms:
            medians["provider"] -= upstream_ms  # the provider call's overhead alone
        medians["total"] = statistics.median(t["total"] for t in timings) - upstream_ms
        return cls(kind, medians)


def http_scenarios(
    user, api_key: str, staff_key: str, *, runs: int, seconds: int, gateway_only: bool = False
) -> tuple[list[Row], list[Stages]]:
    from apps.ai_interactions.models import AIInteraction
    from tests.fakes.openai_server import FakeOpenAI

    submit_body = '{"type": "diagnostics.sleep", "params": {"seconds": 0}}'
    ask_body = json.dumps({"prompt": CACHED_PROMPT})
    with FakeOpenAI() as upstream:
        upstream.default_delay = 0.05
        echo_route()
        gateway_route(upstream.base_url)
        # One gunicorn worker process: with two, wrk's connections land on them
        # unevenly (whichever process wakes first accepts them), which made single
        # runs bimodal (/live at 1,250 or 3,100 req/s). A ratio compares the cost of
        # a request, which one process measures without that noise.
        with (
            web_server(
                workers=1, SERVER_TIMING="true", BENCH_UPSTREAM_URL=upstream.base_url
            ) as base,
            tempfile.TemporaryDirectory() as scripts,
        ):
            gateway_rows, stages = gateway_scenarios(
                base, upstream.base_url, user, scripts, runs=runs, seconds=seconds
            )
            if gateway_only:
                return gateway_rows, stages
            submit = lua_script(scripts, "submit", api_key, submit_body)
            ask = lua_script(scripts, "ask", api_key, ask_body)
            staff_get = lua_script(scripts, "list", staff_key)
            live = compare_http(
                (f"{base}/api/v1/health/live", None),
                (f"{base}/bench/bare", None),
                runs=runs,
                seconds=seconds,
            )
            ready = compare_http(
                (f"{base}/api/v1/health/ready", None),
                (f"{base}/api/v1/health/live", None),
                runs=runs,
                seconds=seconds,
            )
            # Each run starts from an empty queue: no worker drains it, and a user's
            # backlog grows over one run to about the default TASKS_MAX_ACTIVE_PER_USER
            # (1,000), the most a user can hold, not to every earlier run's as well.
            submitted = compare_http(
                (f"{base}/api/v1/tasks/", submit),
                (f"{base}/bench/bare-insert", submit),
                runs=runs,
                seconds=seconds,
                before_each=forget_queued_tasks,
            )
            post_json(f"{base}/api/v1/ai/interactions/", {"prompt": CACHED_PROMPT}, api_key)
            row_id = AIInteraction.objects.filter(owner=user).values_list("pk", flat=True)[0]
            get = lua_script(scripts, "get", api_key)
            retrieved = compare_http(
                (f"{base}/api/v1/ai/interactions/{row_id}/", get),
                (f"{base}/bench/bare-row/{row_id}", get),
                runs=runs,
                seconds=seconds,
            )
            hit = compare_http(
                (f"{base}/api/v1/ai/interactions/", ask),
                (f"{base}/bench/bare-cache-insert", ask),
                runs=runs,
                seconds=seconds,
            )
            # Latency: the deep page's figure first, its ratio deep over first.
            deep = compare_http(
                (deep_cursor_url(base, LIST_DEPTH) + "&page_size=50", staff_get),
                (f"{base}/api/v1/ai/interactions/?page_size=50", staff_get),
                runs=runs,
                seconds=seconds,
            )
    deep_rps, first_rps = deep.medians
    rows = [
        http_row("GET /api/v1/health/live vs bare DRF view", live, 0.8),
        http_row("GET /api/v1/health/ready vs /live", ready, 0.5),
        http_row(
            "GET /api/v1/ai/interactions/{id}/ vs bare .values() + JSON of the row", retrieved, 0.6
        ),
        http_row("POST /api/v1/tasks/ vs bare authenticated insert", submitted, 0.6),
        http_row("cache-hit POST /api/v1/ai/interactions/ vs bare Redis GET + INSERT", hit, 0.6),
        *gateway_rows,
        Row(
            f"interaction list: page {LIST_DEPTH:,} rows deep vs first page (1M rows), "
            "mean latency",
            per_request_ms(deep_rps),
            per_request_ms(first_rps),
            "ms",
            1.5,
            kind="max-ratio",
            paired=deep.ratio(per_request_ms),
        ),
    ]
    return rows, stages


def gateway_scenarios(
    base: str, upstream: str, user, scripts: str, *, runs: int, seconds: int
) -> tuple[list[Row], list[Stages]]:
    """The gateway's hot path, with a key that has a budget, RPM and TPM limits, through a
    route of 3 deployments on an upstream answering in 50 ms."""
    governed = governed_api_key(user)
    hit_script = lua_script(scripts, "hit", governed, cache_hit_prompt(base, governed))
    hit = compare_http(
        (f"{base}/v1/chat/completions", hit_script),
        (f"{base}/bench/bare-cache-insert", hit_script),
        runs=runs,
        seconds=seconds,
    )
    client = KeepAliveClient()
    hit_timings = [
        client.post(f"{base}/v1/chat/completions", gateway_body(CACHED_PROMPT), governed).stages
        for _ in range(200)
    ]
    chat = (f"{base}/v1/chat/completions", f"{upstream}/chat/completions")
    miss = added_latency(*chat, governed, runs=runs, requests=100, body=gateway_body)
    # The least any view on this server adds: the same calls through a view that only
    # authenticates and forwards them.
    floor = added_latency(
        f"{base}/bench/bare-proxy",
        chat[1],
        governed,
        runs=runs,
        requests=100,
        body=gateway_body,
    )
    # Under that, what the server alone adds: the same calls forwarded by a WSGI app
    # with no Django on the same gunicorn worker.
    with server_floor(upstream) as bare_server:
        server = added_latency(
            f"{bare_server}/chat/completions",
            chat[1],
            governed,
            runs=runs,
            requests=100,
            body=gateway_body,
        )
    streamed = added_latency(
        *chat, governed, runs=runs, requests=100, body=streamed_body, first_byte=True
    )
    tools = added_latency(*chat, governed, runs=runs, requests=100, body=tool_call_body)
    embeddings = added_latency(
        f"{base}/v1/embeddings",
        f"{upstream}/embeddings",
        governed,
        runs=runs,
        requests=100,
        body=embeddings_body,
    )
    setting = "key with a budget, RPM and TPM; route of 3 deployments; 50 ms upstream"
    machine_rows = [
        Row(
            "machine: a PostgreSQL round trip 50 ms after the last (as the first after a "
            "50 ms upstream) vs one right after another, median",
            *idle_round_trips(),
            "µs",
            0,
            kind="info",
        ),
        Row(
            "machine: Python building a call's interaction (model instance, cache key) 50 ms "
            "after the last vs right after another, median",
            *idle_python(),
            "µs",
            0,
            kind="info",
        ),
    ]
    rows = [
        http_row(
            "cache-hit POST /v1/chat/completions (key with a budget, RPM and TPM) vs bare "
            "Redis GET + INSERT of the same row",
            hit,
            0.8,
        ),
        Row(
            f"/v1/chat/completions vs the upstream directly ({setting}), median",
            *miss.added(),
            "ms",
            5,
            kind="max-added",
        ),
        Row(
            "floor: a bare authenticated view forwarding the same calls to the upstream "
            "(no limits, cache or row) vs the upstream directly, median",
            *floor.added(),
            "ms",
            5,
            kind="info",
        ),
        Row(
            "server floor: the same calls forwarded by a WSGI app with no Django on the same "
            "gunicorn worker vs the upstream directly, median",
            *server.added(),
            "ms",
            5,
            kind="info",
        ),
        *machine_rows,
        Row(
            f"/v1/chat/completions streamed, first byte, vs the upstream's ({setting}), median",
            *streamed.added(),
            "ms",
            5,
            kind="max-added",
        ),
        Row(
            "/v1/chat/completions with 2 tools, 1 call back, vs the upstream directly, median",
            *tools.added(),
            "ms",
            5,
            kind="max-added",
        ),
        Row(
            "/v1/embeddings of 16 inputs vs the upstream directly, median",
            *embeddings.added(),
            "ms",
            5,
            kind="max-added",
        ),
    ]
    stages = [
        Stages.of("cache hit", hit_timings),
        Stages.of("miss", miss.stages, upstream_ms=statistics.median(miss.theirs)),
        Stages.of("stream to first byte", streamed.stages, statistics.median(streamed.theirs)),
        Stages.of("floor (bare forwarding view)", floor.stages, statistics.median(floor.theirs)),
    ]
    return rows, stages


# --- Admin and usage at scale ---------------------------------------------------------

ADMIN_SMALL_ROWS = 1_000
ADMIN_CHANGELIST = "/admin/ai_interactions/aiinteraction/"
# Renders a page as a staff user with Django's test client; prints each render's ms.
ADMIN_PROBE = """
import json, sys, time
import django
django.setup()
from django.conf import settings
settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
settings.STORAGES = {**settings.STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
from django.contrib.auth import get_user_model
from django.test import Client
user, _ = get_user_model().objects.update_or_create(
    username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
client = Client()
client.force_login(user)
path, renders = sys.argv[1], int(sys.argv[2])
assert client.get(path).status_code == 200
times = []
for _ in range(renders):
    started = time.perf_counter()
    assert client.get(path).status_code == 200
    times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times))
"""


def admin_render_ms(database: str, path: str, renders: int) -> list[float]:
    url = f"{POSTGRES}/{database}"
    output = subprocess.run(
        [sys.executable, "-c", ADMIN_PROBE, path, str(renders)],
        cwd=ROOT,
        env=process_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def small_admin_database(rows: int) -> str:
    """A second database holding ``rows`` interactions, for the same page at a small size."""
    import psycopg

    database = f"{BENCH_DATABASE}_small"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    env = process_env(DATABASE_URL=f"{POSTGRES}/{database}")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    with psycopg.connect(f"{POSTGRES}/{database}") as conn:
        have = conn.execute("SELECT count(*) FROM ai_interactions_aiinteraction").fetchone()[0]
    if have < rows:
        seed = [*manage, "seed_demo_data", "--interactions", str(rows - have)]
        subprocess.run(seed, cwd=ROOT, env=env, check=True, capture_output=True)
    return database


def admin_scale_scenario(*, runs: int, renders: int = 20) -> list[Row]:
    """The interactions changelist at LIST_ROWS rows vs the same page at ADMIN_SMALL_ROWS."""
    small = small_admin_database(ADMIN_SMALL_ROWS)
    large, little = [], []
    for run in range(runs):
        pair = [(large, BENCH_DATABASE), (little, small)]
        for results, database in pair if run % 2 == 0 else reversed(pair):
            results += admin_render_ms(database, ADMIN_CHANGELIST, renders)
    return [
        Row(
            f"admin interactions changelist at {LIST_ROWS:,} rows vs {ADMIN_SMALL_ROWS:,}, "
            "median render",
            statistics.median(large),
            statistics.median(little),
            "ms",
            2,
            kind="max-ratio",
        )
    ]


DASHBOARD_TARGET_MS = 300
ADMIN_INDEX = "/admin/"
# Rolls a database's usage up to the last closed hour, as beat does every hour.
USAGE_ROLLUP = """
import django
django.setup()
from apps.ai_interactions.usage.services import usage_rollup
usage_rollup()
"""


def dashboard_scenario(*, runs: int, renders: int = 20) -> list[Row]:
    """The admin index (its dashboard: the last 24 hours) as staff at LIST_ROWS interactions,
    median ms against an absolute target, and against the same page at ADMIN_SMALL_ROWS.

    Both databases are the changelist scenario's, rolled up first as beat keeps them.
    """
    from apps.routing.models import Route
    from apps.routing.table import routing_bootstrap

    if not Route.objects.exists():
        routing_bootstrap()  # the deployment health rows
    small = small_admin_database(ADMIN_SMALL_ROWS)
    for database in (BENCH_DATABASE, small):
        env = process_env(DATABASE_URL=f"{POSTGRES}/{database}")
        subprocess.run([sys.executable, "-c", USAGE_ROLLUP], cwd=ROOT, env=env, check=True)
    large, little = [], []
    for run in range(runs):
        pair = [(large, BENCH_DATABASE), (little, small)]
        for results, database in pair if run % 2 == 0 else reversed(pair):
            results += admin_render_ms(database, ADMIN_INDEX, renders)
    at_scale = statistics.median(large)
    return [
        Row(
            f"admin index dashboard (24 h) at {LIST_ROWS:,} interactions, median render; "
            "absolute target",
            at_scale,
            0.0,
            "ms",
            DASHBOARD_TARGET_MS,
            kind="max-added",
        ),
        Row(
            f"admin index dashboard at {LIST_ROWS:,} interactions vs {ADMIN_SMALL_ROWS:,}, "
            "median render",
            at_scale,
            statistics.median(little),
            "ms",
            2,
            kind="max-ratio",
        ),
    ]


def routing_scenario(*, runs: int, calls: int = 2000) -> list[Row]:
    """What routing adds to a call: the router choosing among a route's 3 deployments
    (table, breaker states in Redis, order, retries wrapper, attempt records) around a
    call that returns at once, against that call alone; median ms per call."""
    from apps.ai_interactions.catalog import route_get
    from apps.routing.models import Deployment, Provider, Route
    from apps.routing.router import routed_call

    route_row, _ = Route.objects.get_or_create(
        name="bench-routed", defaults={"strategy": "weighted"}
    )
    for name in ("east", "west", "north"):
        provider, _ = Provider.objects.get_or_create(
            name=f"bench-{name}", defaults={"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
        )
        Deployment.objects.get_or_create(route=route_row, provider=provider, model=f"{name}-model")
    route = route_get("bench-routed")

    def answer(provider: object, deployment: object) -> str:
        return "answered"

    routed, direct = [], []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(calls):
            routed_call(route, tokens=100, call=answer)
        routed.append((time.perf_counter() - started) * 1000 / calls)
        started = time.perf_counter()
        for _ in range(calls):
            answer(None, None)
        direct.append((time.perf_counter() - started) * 1000 / calls)
    return [
        Row(
            "routing a call among 3 weighted deployments vs the call alone, median ms",
            statistics.median(routed),
            statistics.median(direct),
            "ms",
            0.5,
            kind="max-added",
        )
    ]


def governance_scenario(*, runs: int, calls: int = 1000) -> list[Row]:
    """Governance's own cost per call: the limits of a key with a budget, RPM and TPM
    (read from memory), admitted in one Redis step and settled in another, against the
    same key with no limits; median ms per call."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model

    from apps.accounts.services import api_key_create
    from apps.governance.admission import admit
    from apps.governance.limits import scopes_for
    from apps.governance.models import Limits

    user, _ = get_user_model().objects.get_or_create(username="bench-governed")
    limited, _ = api_key_create(user=user, name="bench limited")
    free, _ = api_key_create(user=user, name="bench free")
    Limits.objects.create(
        api_key=limited, budget_usd=Decimal(1_000_000), rpm_limit=2 * 10**9, tpm_limit=2 * 10**9
    )

    def governed(key: object) -> None:
        admission = admit(
            scopes_for(api_key=key, user=user), tokens=100, worst_cost=Decimal("0.001")
        )
        admission.settle(tokens=80, cost=Decimal("0.0005"))

    governed(limited)  # the spend is read from the database once
    with_limits, without = [], []
    for _ in range(runs):
        for results, key in ((with_limits, limited), (without, free)):
            started = time.perf_counter()
            for _ in range(calls):
                governed(key)
            results.append((time.perf_counter() - started) * 1000 / calls)
    return [
        Row(
            "governance of a call with a budget, RPM and TPM vs a key with no limits, median ms",
            statistics.median(with_limits),
            statistics.median(without),
            "ms",
            1.0,
            kind="max-added",
        )
    ]


def usage_scenario(staff_key: str, *, runs: int, requests: int = 50) -> list[Row]:
    """GET /api/v1/ai/usage/?group_by=model over every interaction (staff), median ms."""
    import urllib.request

    from apps.ai_interactions.usage.services import usage_rollup

    usage_rollup()
    times = []
    with web_server() as base:
        request = urllib.request.Request(  # noqa: S310
            f"{base}/api/v1/ai/usage/?group_by=model",
            headers={"Authorization": f"Bearer {staff_key}"},
        )
        for _ in range(runs * requests + 5):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                response.read()
            times.append((time.perf_counter() - started) * 1000)
    return [
        Row(
            f"GET /api/v1/ai/usage/?group_by=model at {LIST_ROWS:,} interactions "
            "(staff), median; absolute target",
            statistics.median(times[5:]),
            0.0,
            "ms",
            50,
            kind="max-added",
        )
    ]


# --- Worker throughput ------------------------------------------------------------


def purge(queue: str) -> None:
    from kombu import Connection

    with Connection(ENVIRONMENT["CELERY_BROKER_URL"]) as conn:
        conn.default_channel.queue_purge(queue)


def wait_for_worker(app, hostname: str) -> None:
    wait_for(
        lambda: app.control.ping(destination=[hostname], timeout=0.5),
        timeout=60,
        what=f"worker {hostname}",
    )


def drain_contextos(user, count: int) -> float:
    from celery import current_app
    from django.utils import timezone

    from apps.tasks.models import Task, TaskStatus
    from apps.tasks.services import task_submit

    purge("default")
    # The submission scenario's tasks, left queued, would count as this user's active
    # tasks at every submission below: a backlog of thousands that is not this run's.
    forget_queued_tasks()
    hostname = f"bench-tasks-{os.getpid()}@{platform.node()}"
    worker = start(
        [str(ROOT / "scripts" / "start-worker")],
        CELERY_CONCURRENCY="2",
        CELERY_QUEUES="default",
        CELERY_HOSTNAME=hostname,
    )
    try:
        wait_for_worker(current_app, hostname)
        since = timezone.now()
        started = time.perf_counter()
        for _ in range(count):
            task_submit(owner=user, type_name="diagnostics.sleep", params={"seconds": 0})
        done = Task.objects.filter(owner=user, created_at__gte=since, status=TaskStatus.SUCCEEDED)
        wait_for(lambda: done.count() >= count, timeout=600, what="tasks to succeed")
        return count / (time.perf_counter() - started)
    finally:
        stop(worker)


def drain_noop(count: int) -> float:
    from bench.noop import app, noop

    purge(NOOP_QUEUE)
    hostname = f"bench-noop-{os.getpid()}@{platform.node()}"
    worker = start(
        [
            str(BIN / "celery"),
            "--app",
            "bench.noop",
            "worker",
            "--concurrency",
            "2",
            "--queues",
            NOOP_QUEUE,
            "--hostname",
            hostname,
            "--loglevel",
            "WARNING",
        ],
        # Plain Celery: without it, Celery's Django fixup would load Django in the worker.
        DJANGO_SETTINGS_MODULE="",
    )
    try:
        wait_for_worker(app, hostname)
        started = time.perf_counter()
        for _ in range(count):
            noop.apply_async(queue=NOOP_QUEUE)

        def drained() -> bool:
            stats = app.control.inspect(destination=[hostname], timeout=0.5).stats() or {}
            return stats.get(hostname, {}).get("total", {}).get("bench.noop", 0) >= count

        wait_for(drained, timeout=600, what="no-op tasks to drain")
        return count / (time.perf_counter() - started)
    finally:
        stop(worker)


def throughput_scenario(user, *, runs: int, count: int) -> list[Row]:
    pairs = Paired([], [])
    for run in range(runs):
        measures = [
            (pairs.ours, lambda: drain_contextos(user, count)),
            (pairs.theirs, lambda: drain_noop(count)),
        ]
        for results, measure in measures if run % 2 == 0 else reversed(measures):
            results.append(measure())
    return [
        Row(
            f"{count} diagnostics.sleep(0) end to end vs plain Celery no-op",
            *pairs.medians,
            "tasks/s",
            0.4,
            paired=pairs.ratio(),
        )
    ]


# --- Report -----------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and (found := re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())):
        cpu = found.group(1).strip()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | ContextOS | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        decimals = 1 if row.unit == "ms" else 0
        lines.append(
            f"| {row.scenario} | {row.contextos:,.{decimals}f} {row.unit} "
            f"| {row.baseline:,.{decimals}f} {row.unit} "
            f"| {row.ratio:.2f}x | {row.target_text} | {'pass' if row.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def stage_table(stages: list[Stages]) -> str:
    names = list(stages[0].medians)
    lines = [
        "| stage | " + " | ".join(s.kind for s in stages) + " |",
        "|---|" + "---|" * len(stages),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{s.medians[name]:.2f}" for s in stages) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (median)")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per HTTP run")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--http-only", action="store_true", help="skip the worker throughput scenario"
    )
    parser.add_argument(
        "--gateway-only",
        action="store_true",
        help="only the gateway's hot path (printed, BENCHMARKS.md left as it is)",
    )
    args = parser.parse_args()

    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("make bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    prepare_database()
    setup_django()
    user, api_key = bench_api_key()
    _, staff_key = bench_api_key(username="bench-staff", staff=True)
    if not args.gateway_only:
        forget_queued_tasks()
        ensure_interactions(LIST_ROWS)

    rows, stages = http_scenarios(
        user,
        api_key,
        staff_key,
        runs=args.runs,
        seconds=args.seconds,
        gateway_only=args.gateway_only,
    )
    if args.gateway_only:
        print(table(rows), stage_table(stages), sep="\n\n")
        return 0 if all(row.passed for row in rows) else 1
    rows += admin_scale_scenario(runs=args.runs)
    rows += dashboard_scenario(runs=args.runs)
    rows += routing_scenario(runs=args.runs)
    rows += governance_scenario(runs=args.runs)
    rows += usage_scenario(staff_key, runs=args.runs)
    if not args.http_only:
        rows += throughput_scenario(user, runs=args.runs, count=args.tasks)

    report = table(rows)
    breakdown = stage_table(stages)
    print(report, breakdown, sep="\n\n")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.output).write_text(
        "# Benchmarks\n\n"
        f"`make bench`, {stamp}. Machine: {machine()}.\n\n"
        f"Medians of {args.runs} interleaved runs; a ratio is the median of the runs' own "
        "ratios (each run measures ContextOS and its baseline side by side). "
        f"HTTP with `wrk -t1 -c8 -d{args.seconds}s` "
        "against gunicorn (production settings, one gthread worker process for the ratios); "
        "Celery workers with 2 processes on "
        "the Redis broker. Each baseline runs on the same server or broker in the same run.\n\n"
        f"{report}\n\n"
        "Where a gateway call's time goes: per stage, the median over the calls above of "
        "ContextOS's own `Server-Timing` (ms). `provider` is the provider call less the "
        "upstream's own time (the direct calls' median); `framework and response` is the "
        "request as the outermost middleware timed it, less the stages (Django, DRF, the "
        "answer written); `total` leaves the upstream out.\n\n"
        f"{breakdown}\n"
    )
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
