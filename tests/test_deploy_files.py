"""The Dockerfile and docker-compose.yml point at real start scripts and pass hadolint."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

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


def test_compose_services_run_existing_start_scripts():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

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
