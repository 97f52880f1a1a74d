"""The fault suite's tools: a Redis of its own to stop, a PostgreSQL link to cut, an HTTP
client that never raises on a status, and a load generator. The web server and Celery
workers are the integration suite's real processes (``start_web``, ``start_worker``)."""

import contextlib
import http.client
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from apps.accounts.services import api_key_create
from tests.integration.conftest import (  # noqa: F401 - fixtures of the real processes
    BIN,
    ROOT,
    free_port,
    process_env,
    start_web,
    start_worker,
    static_root,
    wait_for,
)

# The worker consumes the queue the web server (production settings) publishes to.
QUEUE = "default"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.chaos)


def process_group(pgid: int) -> set[int]:
    """The ids of the live processes in process group ``pgid``."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.add(int(stat.parent.name))
    return members


def run_recovery(**env: str) -> dict[str, int]:
    """Run the recovery service (what the scheduled stuck-task reaper runs) through
    ``manage.py`` against the test database, in a process of its own."""
    from django.db import connection

    database = connection.settings_dict["NAME"]
    result = subprocess.run(
        [
            str(BIN / "python"),
            "manage.py",
            "shell",
            "-c",
            "import json; from apps.tasks.services import task_recover; "
            "print(json.dumps(task_recover()))",
        ],
        cwd=ROOT,
        env=process_env(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}", LOG_LEVEL="ERROR", **env
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def finish_with_recovery(
    unfinished: Any,
    broker_url: str,
    *,
    timeout: float,
    describe: Callable[[list[dict]], str] = str,
) -> int:
    """Wait until the queryset ``unfinished`` is empty; return how many tasks recovery
    published again.

    A message a worker took the instant it was killed, or the instant Redis went
    away, is gone with it (Redis broker) and its task stays queued. Recovery
    publishes such tasks again; it is scheduled every few minutes, and here runs
    whenever the work stops moving for 15 s.
    """
    recovery_env = {
        "CELERY_BROKER_URL": broker_url,
        "CONTEXTOS_TEST_QUEUE": QUEUE,
        "TASK_REPUBLISH_QUEUED_AFTER_SECONDS": "10",
    }
    republished = 0
    deadline = time.monotonic() + timeout
    last_left, moved_at = None, time.monotonic()
    while left := unfinished.count():
        now = time.monotonic()
        if now > deadline:
            rows = list(unfinished.values("id", "status", "worker", "celery_task_id"))
            raise AssertionError(f"{left} tasks unfinished: {describe(rows)}")
        if left != last_left:
            last_left, moved_at = left, now
        elif now - moved_at > 15:
            republished += run_recovery(**recovery_env)["republished"]
            moved_at = time.monotonic()
        time.sleep(0.5)
    return republished


# --- Redis ---------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a free port, with an append-only file, so
    that stopping and starting it again keeps its data as a production Redis would."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def cache_url(self) -> str:
        return self.url(0)

    @property
    def broker_url(self) -> str:
        return self.url(1)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.answers, timeout=10, message=f"redis-server on {self.port} never answered")

    def stop(self) -> None:
        """Shut down (SIGTERM: the server flushes its append-only file and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()


# --- PostgreSQL link -------------------------------------------------------------------


class TCPProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()`` closes every open connection
    and refuses new ones (accepted, then closed at once) until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            ends = list(self._open)
        for end in ends:
            self._close(end)

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


@pytest.fixture
def postgres_link() -> Iterator[TCPProxy]:
    proxy = TCPProxy(5432)
    yield proxy
    proxy.close()


# --- HTTP ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    seconds: float


class Client:
    """One keep-alive HTTP connection to the server; any failure to get an answer is
    status 0 (with the error as the body), never an exception."""

    def __init__(self, base_url: str, key: str = "", timeout: float = 15) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.key = key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None, *, fresh: bool = False) -> Answer:
        """Send one request. A kept-alive connection the server has closed meanwhile is
        opened again once (as HTTP clients do): the server never saw that request."""
        headers = {"Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        reused = self._conn is not None
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=payload, headers=headers)
            response = self._conn.getresponse()
            raw = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as error:
            self.close()
            if reused and not fresh:
                return self.request(method, path, body, fresh=True)
            return Answer(0, repr(error), {}, time.monotonic() - started)
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return Answer(0, repr(error), {}, time.monotonic() - started)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(
            response.status, parsed, dict(response.getheaders()), time.monotonic() - started
        )

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Answer:
        return self.request("POST", path, body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def is_error_body(answer: Answer, code: str | None = None) -> bool:
    """Whether ``answer`` carries the API's error format (and the given code)."""
    body = answer.body
    return (
        isinstance(body, dict)
        and answer.headers.get("Content-Type") == "application/json"
        and {"error", "code", "details", "request_id"} <= set(body)
        and (code is None or body["code"] == code)
    )


@dataclass
class Services:
    """The web server and workers of a test, on its own Redis (broker, and cache if asked)."""

    base: str
    redis: RedisServer
    own_cache: bool
    start_worker: Callable[..., Any]

    def worker(self, *, concurrency: int = 2, **env: str) -> Any:
        if self.own_cache:
            env.setdefault("REDIS_URL", self.redis.cache_url)
        return self.start_worker(
            self.redis.broker_url,
            queue=QUEUE,
            concurrency=concurrency,
            purge=False,
            CONTEXTOS_TEST_QUEUE=QUEUE,
            **env,
        )


@pytest.fixture
def serve(own_redis, start_web, start_worker) -> Callable[..., Services]:  # noqa: F811
    """Start the web server (no rate or in-flight limit: the load is one key) and, unless
    ``workers=0``, a worker; both use the test's own Redis as broker, and as cache
    unless ``own_cache=False`` (then the tests' cache, which the test can read)."""

    def start(
        *, own_cache: bool = True, workers: int = 1, web_env=None, worker_env=None
    ) -> Services:
        env = {"CELERY_BROKER_URL": own_redis.broker_url}
        if own_cache:
            env["REDIS_URL"] = own_redis.cache_url
        base = start_web(
            API_RATE_LIMIT="1000000/min",
            API_MAX_PARALLEL_REQUESTS="1000",
            **env,
            **(web_env or {}),
        )
        services = Services(base, own_redis, own_cache, start_worker)
        for _ in range(workers):
            services.worker(**(worker_env or {}))
        return services

    return start


@dataclass
class Outage:
    """What the load and the readiness probe met during a fault, and when it was."""

    report: "LoadReport"
    readiness: list[Answer]
    began: float
    ended: float

    def during(self, samples: list["Sample"]) -> list["Sample"]:
        return [s for s in samples if self.began + 0.5 < s.at < self.ended]


def outage_under_load(
    base: str,
    key: str,
    calls: list["Call"],
    *,
    seconds: float,
    begin: Callable[[], None],
    end: Callable[[], None],
    settle: Callable[[], None],
    clients: int = 8,
    warmup: float = 2.0,
) -> Outage:
    """Load ``calls`` from ``clients`` threads; after ``warmup`` s, ``begin()`` the fault,
    probe readiness every 0.5 s for ``seconds``, ``end()`` it and ``settle()`` while the
    load goes on; then stop the load."""
    stop = threading.Event()
    reports: list[LoadReport] = []
    load = threading.Thread(
        target=lambda: reports.append(run_load(base, key, calls, clients=clients, stop=stop))
    )
    load.start()
    try:
        time.sleep(warmup)
        begin()
        began = time.monotonic()
        probe = Client(base)
        readiness = []
        while time.monotonic() - began < seconds:
            readiness.append(probe.get("/api/v1/health/ready"))
            time.sleep(0.5)
        end()
        ended = time.monotonic()
        settle()
    finally:
        stop.set()
        load.join()
    return Outage(reports[0], readiness, began, ended)


@pytest.fixture
def chaos_key(transactional_db, user) -> str:
    _, raw_key = api_key_create(user=user, name="chaos")
    return raw_key


# --- Load ---------------------------------------------------------------------------------


@dataclass
class Call:
    """One kind of request in a mix: ``weight`` of the draws, answered OK in ``ok`` statuses."""

    name: str
    weight: int
    make: Callable[[random.Random], tuple[str, str, Any]]
    ok: frozenset[int]
    # What else is acceptable (e.g. a 503 in the error format during an outage).
    tolerated: Callable[[Answer], bool] = lambda answer: False


@dataclass
class Sample:
    name: str
    status: int
    seconds: float
    at: float  # time.monotonic() when answered
    outcome: str  # "ok", "tolerated" or "error"
    body: Any = None


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    def of(self, outcome: str) -> list[Sample]:
        return [s for s in self.samples if s.outcome == outcome]

    @property
    def errors(self) -> list[Sample]:
        return self.of("error")

    def percentile(self, p: float, name: str | None = None) -> float:
        values = sorted(s.seconds for s in self.samples if name is None or s.name == name)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] * 1000

    def statuses(self) -> Counter:
        return Counter((s.name, s.status) for s in self.samples)

    def summary(self) -> str:
        total = len(self.samples)
        rate = total / self.seconds if self.seconds else 0.0
        return (
            f"{total} requests in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"{len(self.errors)} errors, p50 {self.percentile(50):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms"
        )

    def per_call(self) -> str:
        lines = []
        for name in sorted({s.name for s in self.samples}):
            count = sum(1 for s in self.samples if s.name == name)
            lines.append(
                f"  {name:<18} {count:>6}  p50 {self.percentile(50, name):7.1f} ms"
                f"  p99 {self.percentile(99, name):7.1f} ms"
            )
        return "\n".join(lines)


def run_load(
    base_url: str,
    key: str,
    calls: list[Call],
    *,
    clients: int,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    seed: int = 7,
) -> LoadReport:
    """``clients`` threads, each with its own keep-alive connection, drawing requests
    from ``calls`` back to back until ``seconds`` have passed or ``stop`` is set."""
    stop = stop or threading.Event()
    report = LoadReport()
    lock = threading.Lock()
    started = time.monotonic()
    ends_at = started + seconds if seconds is not None else float("inf")
    weights = [call.weight for call in calls]

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        session = Client(base_url, key)
        samples = []
        while not stop.is_set() and time.monotonic() < ends_at:
            call = rng.choices(calls, weights)[0]
            method, path, body = call.make(rng)
            answer = session.request(method, path, body)
            if answer.status in call.ok:
                outcome = "ok"
            elif call.tolerated(answer):
                outcome = "tolerated"
            else:
                outcome = "error"
            samples.append(
                Sample(
                    call.name,
                    answer.status,
                    answer.seconds,
                    time.monotonic(),
                    outcome,
                    answer.body,
                )
            )
        session.close()
        with lock:
            report.samples.extend(samples)

    threads = [
        threading.Thread(target=client, args=(n,), name=f"load-{n}", daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    return report
