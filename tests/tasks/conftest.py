"""Fixtures of tests/tasks/: the integration suite's real Celery worker."""

from tests.integration.conftest import start_worker  # noqa: F401
