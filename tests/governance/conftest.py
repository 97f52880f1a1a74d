"""Fixtures of tests/governance/: the integration suite's real web server (gunicorn)."""

from tests.integration.conftest import start_web, static_root  # noqa: F401
