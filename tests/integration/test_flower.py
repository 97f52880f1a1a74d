"""scripts/start-flower: waits for the broker, then serves Flower behind basic auth."""

import base64
import subprocess
import time

import pytest

from tests.integration.conftest import ROOT, free_port, http_get, process_env, stop, wait_for

pytestmark = pytest.mark.server


def start_flower(**env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ROOT / "scripts" / "start-flower")],
        cwd=ROOT,
        env=process_env(FLOWER_ADDRESS="127.0.0.1", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_flower_gives_up_when_the_broker_never_comes(closed_port):
    started = time.monotonic()
    process = start_flower(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port}/0",
        FLOWER_BASIC_AUTH="ops:secret",
        FLOWER_BROKER_WAIT_SECONDS="2",
        FLOWER_PORT=str(free_port()),
    )
    try:
        assert process.wait(timeout=30) != 0
    finally:
        output = stop(process)
    assert time.monotonic() - started < 30
    assert "waiting for the broker" in output
    assert "no broker after 2 s" in output


def test_flower_serves_behind_basic_auth():
    port = free_port()
    process = start_flower(FLOWER_BASIC_AUTH="ops:secret", FLOWER_PORT=str(port))
    url = f"http://127.0.0.1:{port}/"
    try:

        def answering():
            if process.poll() is not None:
                raise AssertionError(process.stdout.read()[-2000:])
            try:
                return http_get(url, timeout=2)
            except OSError:
                return None

        status, _, _ = wait_for(answering, timeout=60, interval=0.3)
        assert status == 401
        auth = base64.b64encode(b"ops:secret").decode()
        assert http_get(url, headers={"Authorization": f"Basic {auth}"})[0] == 200
        wrong = base64.b64encode(b"ops:guess").decode()
        assert http_get(url, headers={"Authorization": f"Basic {wrong}"})[0] == 401
    finally:
        stop(process)


def test_flower_refuses_to_start_without_basic_auth():
    result = subprocess.run(
        [str(ROOT / "scripts" / "start-flower")],
        cwd=ROOT,
        env=process_env(FLOWER_BASIC_AUTH=""),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH" in result.stderr
