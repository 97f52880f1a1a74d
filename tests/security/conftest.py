"""The real server and worker of the integration tests, for the security tests too."""

from tests.integration.conftest import start_web, start_worker, static_root  # noqa: F401
