"""Schemathesis against the running server: every operation of ``/api/schema/``, fed
valid and invalid input, answers without a server error and as its schema says.

The server runs the test settings, so the tasks that fuzzing submits go to this test
run's own queue, which no worker consumes and which is emptied afterwards.
"""

import subprocess
import tomllib

import pytest
from django.conf import settings
from kombu import Connection

from apps.accounts.services import api_key_create
from tests.integration.conftest import BIN
from tests.security.routes import operations

pytestmark = pytest.mark.server

CHECKS = "not_a_server_error,response_schema_conformance"
EXAMPLES_PER_OPERATION = 100


def toml_string(value: str) -> str:
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert tomllib.loads(f"x = {quoted}")["x"] == value
    return quoted


def fuzz_config(user_key: str, staff_key: str) -> str:
    """A user's key everywhere, a staff key on the operations only staff may call."""
    lines = [f"headers = {{ Authorization = {toml_string('Bearer ' + user_key)} }}"]
    for operation in operations():
        if operation.staff_only:
            lines += [
                "[[operations]]",
                f"include-name = {toml_string(operation.label)}",
                f"headers = {{ Authorization = {toml_string('Bearer ' + staff_key)} }}",
            ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def test_queue_emptied():
    yield settings.CELERY_TASK_DEFAULT_QUEUE
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def test_no_server_error_and_every_response_as_documented(
    start_web, user, staff_user, tmp_path, test_queue_emptied
):
    base = start_web(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        # The shipped task types only, and no throttling of the fuzzer.
        TASK_TYPE_MODULES="",
        API_RATE_LIMIT="1000000/min",
    )
    _, user_key = api_key_create(user=user, name="fuzzing")
    _, staff_key = api_key_create(user=staff_user, name="fuzzing staff")
    config = tmp_path / "schemathesis.toml"
    config.write_text(fuzz_config(user_key, staff_key))

    run = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{base}/api/schema/",
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--workers",
            "2",
            "--request-timeout",
            "30",
        ],
        cwd=tmp_path,  # where schemathesis keeps its example database
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures:\n{report}"
    assert f"{len(operations())} selected / {len(operations())} total" in report, report
