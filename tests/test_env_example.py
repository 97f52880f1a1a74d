""".env.example shows the defaults as defaults, and lists every variable ContextOS reads."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / ".env.example"

# Every setting, as the process that loads them sees it.
DUMP_SETTINGS = """
import json
import django
from django.conf import settings
django.setup()
print(json.dumps({name: repr(getattr(settings, name)) for name in dir(settings) if name.isupper()}))
"""


def documented_names() -> set[str]:
    return set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", EXAMPLE.read_text(), flags=re.MULTILINE))


def test_every_line_is_a_comment():
    active = [
        line
        for line in EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert active == []


def settings_of(root: Path) -> dict[str, str]:
    # A machine with nothing configured: no variable of ContextOS's in the environment.
    names = documented_names() | {"CONTEXTOS_TEST_QUEUE", "PROMETHEUS_MULTIPROC_DIR"}
    environment = {name: value for name, value in os.environ.items() if name not in names}
    environment["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
    result = subprocess.run(
        [sys.executable, "-c", DUMP_SETTINGS],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_copying_it_to_dot_env_changes_no_setting(tmp_path):
    for folder in ("apps", "config", "contextos"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    without = settings_of(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / ".env")
    with_example = settings_of(tmp_path)

    changed = {name for name in without if without[name] != with_example.get(name)}
    assert changed == set()
    # Still the embedded default: SQLite, the file broker, DEBUG on.
    assert "sqlite3" in with_example["DATABASES"]
    assert with_example["CELERY_BROKER_URL"].startswith("'filesystem://")
    assert with_example["DEBUG"] == "True"


def test_every_variable_read_is_listed():
    read = set()
    for path in (ROOT / "config" / "settings").glob("*.py"):
        read |= set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', path.read_text()))
    for path in [*(ROOT / "scripts").iterdir(), ROOT / "Makefile"]:
        read |= set(re.findall(r"\$\{+([A-Z][A-Z0-9_]*)", path.read_text()))
    # Set by the scripts themselves, by bash, or by the machine.
    internal = {"PATH", "PROMETHEUS_MULTIPROC_DIR", "EPOCHREALTIME"}
    assert read - internal - documented_names() == set()
