"""Configuration invariants: Celery reliability, production security, schema, migrations."""

import os
import secrets
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from celery import current_app
from django.conf import settings
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_celery_time_limits_stay_below_the_visibility_timeout():
    conf = current_app.conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility


def test_celery_reliability_options():
    conf = current_app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_hijack_root_logger is False
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.result_backend == "contextos.celery_results:UpsertDatabaseBackend"
    assert conf.beat_scheduler == "contextos.beat:DatabaseScheduler"
    assert conf.worker_send_task_events is False  # Flower switches them on
    # The schedule is in the database (setup_periodic_tasks), where staff edit it;
    # the scheduler would write a schedule declared in settings over their edits.
    assert conf.beat_schedule == {}


def test_production_settings_pass_the_deploy_check():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="contextos.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", DJANGO_SETTINGS_MODULE="config.settings.prod", ALLOWED_HOSTS="x")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    "secret_key",
    [
        "change-me",
        "change-me-local-trial-only-key-0123456789abcdefghijklmnopqrstuvwxyz",
        secrets.token_urlsafe(50)[:49],
    ],
    ids=["placeholder", "long-placeholder", "49-characters"],
)
def test_production_refuses_a_placeholder_or_short_secret_key(secret_key):
    result = manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secret_key,
        ALLOWED_HOSTS="contextos.example.com",
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr


def test_production_accepts_a_random_secret_key_of_50_characters():
    result = manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50)[:50],
        ALLOWED_HOSTS="contextos.example.com",
    )
    assert result.returncode == 0, result.stderr


def test_production_logs_are_json_lines():
    result = manage(
        "shell",
        "-c",
        "import logging; logging.getLogger('contextos.probe').warning('hello %s', 'world')",
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="x",
    )
    import json

    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world"
    assert line["level"] == "WARNING"
    assert line["logger"] == "contextos.probe"
    assert {"timestamp", "request_id"} <= set(line)


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(out))
    schema = out.read_text()
    for path in ("/api/v1/health/live", "/api/v1/health/ready", "/api/v1/health/"):
        assert f"{path}:" in schema


def test_embedded_default_needs_no_server(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], "
        "s.CELERY_BROKER_URL)"
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=environment | {"DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    engine, cache, broker = result.stdout.strip().splitlines()[-1].split()
    assert engine == "django.db.backends.sqlite3"
    assert cache.endswith("DatabaseCache")  # shared by every process, in the SQLite file
    assert broker == "filesystem://localhost//"
    assert settings.DATABASES["default"]["ENGINE"] == "contextos.postgresql"  # pooled


def test_a_bad_log_format_stops_start_up():
    result = manage("check", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be one of" in result.stderr


SHOW_SYNCHRONOUS_COMMIT = (
    "from django.db import connection; c = connection.cursor(); "
    "c.execute('SHOW synchronous_commit'); print(c.fetchone()[0])"
)


@pytest.mark.parametrize(("setting", "expected"), [("", "on"), ("off", "off")])
def test_database_synchronous_commit_comes_from_the_environment(setting, expected):
    result = manage(
        "shell",
        "-c",
        SHOW_SYNCHRONOUS_COMMIT,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        DATABASE_SYNCHRONOUS_COMMIT=setting,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


def test_a_bad_synchronous_commit_value_stops_start_up():
    result = manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_SYNCHRONOUS_COMMIT="sometimes",
    )
    assert result.returncode != 0
    assert "DATABASE_SYNCHRONOUS_COMMIT='sometimes'" in result.stderr


def test_workers_do_not_wait_for_the_disk_unless_told_to():
    script = (ROOT / "scripts" / "start-worker").read_text()
    exported = 'export DATABASE_SYNCHRONOUS_COMMIT="${WORKER_DATABASE_SYNCHRONOUS_COMMIT:-off}"'
    assert exported in script
