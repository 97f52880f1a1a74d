"""Real processes for integration tests: Celery workers and the web server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_env(**overrides: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        PATH=f"{BIN}:{environment.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    environment.update(overrides)
    return {k: v for k, v in environment.items() if v is not None}


def spawn(args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``args`` in a session of its own, its output going to the file ``log``.

    A file, not a pipe: a chatty process never blocks on a pipe nobody reads.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    process.log_path = log
    return process


def output_of(process: subprocess.Popen) -> str:
    log = getattr(process, "log_path", None)
    if log is not None:
        return log.read_text(errors="replace")
    return process.stdout.read() if process.stdout else ""


def stop(process: subprocess.Popen, timeout: float = 10) -> str:
    """Stop a process group started with ``start_new_session`` and return its output."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return output_of(process)


@dataclass
class Worker:
    broker_url: str
    queue: str
    process: subprocess.Popen
    output: str = field(default="")

    def json_logs(self) -> list[dict]:
        lines = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator:
    """Start a real Celery worker subprocess.

    By default it consumes this test run's task queue on the test broker (the
    queue is emptied first, so only this test's messages reach it).
    """
    from django.conf import settings
    from django.db import connection
    from kombu import Connection

    started: list[Worker] = []

    def start(
        broker_url: str | None = None,
        *,
        queue: str | None = None,
        concurrency: int = 1,
        purge: bool = True,
        **env: str,
    ) -> Worker:
        broker_url = broker_url or settings.CELERY_BROKER_URL
        queue = queue or settings.CELERY_TASK_DEFAULT_QUEUE
        if purge and queue == settings.CELERY_TASK_DEFAULT_QUEUE:
            with Connection(broker_url) as conn:
                conn.default_channel.queue_purge(queue)
        database = connection.settings_dict["NAME"]
        process = spawn(
            [
                str(BIN / "celery"),
                "--app",
                "config",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            env=process_env(
                DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
                CELERY_BROKER_URL=broker_url,
                DATA_DIR=str(tmp_path),
                LOG_FORMAT="json",
                **env,
            ),
            log=tmp_path / f"worker-{len(started) + 1}.log",
        )
        worker = Worker(broker_url, queue, process)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.output = stop(worker.process)


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 10):
    """GET ``url``; return (status, headers, body) without raising on 4xx/5xx."""
    return _http(url, headers=headers or {}, timeout=timeout)


def http_post_json(url: str, body: dict, *, headers: dict[str, str] | None = None):
    """POST ``body`` as JSON; return (status, headers, body) without raising on 4xx/5xx."""
    headers = {**(headers or {}), "Content-Type": "application/json"}
    return _http(url, headers=headers, timeout=10, data=json.dumps(body).encode())


def _http(url: str, *, headers: dict[str, str], timeout: float, data: bytes | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_until_serving(base_url: str, process: subprocess.Popen, timeout: float = 90) -> float:
    """Wait for /live to answer 200; return how long it took."""
    started = time.monotonic()

    def live() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{output_of(process)[-3000:]}")
        try:
            return http_get(f"{base_url}/api/v1/health/live", timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(live, timeout=timeout, interval=0.3, message="the server never answered /live")
    return time.monotonic() - started


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """One collectstatic target for every server the suite starts."""
    return tmp_path_factory.mktemp("static")


@pytest.fixture
def start_web(static_root, tmp_path, transactional_db) -> Iterator:
    """Start ``scripts/start-web`` (gunicorn, production settings) with the given environment.

    The server uses the test database unless ``DATABASE_URL`` says otherwise; any
    default, the settings module included, can be overridden. Its output goes to a
    file (a full pipe would block a chatty server), read with ``start.output(base_url)``.
    """
    from django.db import connection

    started: list[subprocess.Popen] = []
    servers: dict[str, subprocess.Popen] = {}
    database_url = f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}"

    def start(**env: str) -> str:
        port = free_port()
        defaults = {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.prod",
            "SECRET_KEY": uuid.uuid4().hex * 2,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "STATIC_ROOT": str(static_root),
            "DATA_DIR": str(tmp_path),
            "BIND_ADDRESS": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "WEB_ACCESS_LOG": "/dev/null",
        }
        process = spawn(
            [str(ROOT / "scripts" / "start-web")],
            env=process_env(**{**defaults, **env, "PORT": str(port)}),
            log=tmp_path / f"web-{port}.log",
        )
        started.append(process)
        base_url = f"http://127.0.0.1:{port}"
        servers[base_url] = process
        wait_until_serving(base_url, process)
        return base_url

    def output(base_url: str) -> str:
        return output_of(servers[base_url])

    start.output = output
    yield start
    for process in started:
        stop(process)


def admin_log_in(base_url: str, username: str, password: str) -> tuple[str, str]:
    """Log in through the admin's form, as a browser does; the page it lands on (URL, HTML)."""
    with _admin_form_sent(_browser(), base_url, username, password) as page:
        return page.url, page.read().decode()


def admin_session(base_url: str, username: str, password: str) -> tuple[Any, str]:
    """A browser logged in through the admin's form, and where the form sends it (its
    ``Location``), not opened yet: a page's own time can then be measured apart from the
    login's (the password's hashing)."""
    import urllib.error
    import urllib.request

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    browser = _browser(Stay())
    try:
        _admin_form_sent(browser, base_url, username, password).close()
    except urllib.error.HTTPError as answer:
        if answer.code != 302:
            raise
        return browser, answer.headers["Location"]
    raise AssertionError("the admin's login form did not redirect: wrong credentials?")


def _browser(*handlers: Any) -> Any:
    import http.cookiejar
    import urllib.request

    cookies = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    return urllib.request.build_opener(cookies, *handlers)


def _admin_form_sent(browser: Any, base_url: str, username: str, password: str) -> Any:
    import re
    import urllib.parse

    login = f"{base_url}/admin/login/?next=/admin/"
    form = browser.open(login, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    fields = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return browser.open(login, urllib.parse.urlencode(fields).encode(), timeout=10)
