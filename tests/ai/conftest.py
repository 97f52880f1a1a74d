"""Fixtures of tests/ai/: the integration suite's real web server (gunicorn), for the gateway."""

from tests.integration.conftest import start_web, static_root  # noqa: F401
