"""Shared fixtures: users, API keys, authenticated API clients, and the service URLs."""

import pytest
from rest_framework.test import APIClient

from apps.accounts.services import api_key_create
from tests.factories import StaffUserFactory, UserFactory

# Fixtures of the fake AI provider servers: fake_openai, fake_anthropic.
pytest_plugins = ["tests.fakes.openai_server", "tests.fakes.anthropic_server"]


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return StaffUserFactory()


@pytest.fixture
def superuser(staff_user):
    """``staff_user`` made a superuser: every admin page and action, as a named user."""
    staff_user.is_superuser = True
    staff_user.save()
    return staff_user


@pytest.fixture
def superuser_client(client, superuser):
    """Django's test client logged in (by session) as ``superuser``."""
    client.force_login(superuser)
    return client


@pytest.fixture
def api_key(user):
    """The raw value of a fresh API key belonging to ``user``."""
    _, raw_key = api_key_create(user=user, name="tests")
    return raw_key


@pytest.fixture
def staff_api_key(staff_user):
    _, raw_key = api_key_create(user=staff_user, name="staff tests")
    return raw_key


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def client_for():
    """Build an API client that presents the given raw API key."""

    def build(raw_key: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return client

    return build


@pytest.fixture
def api_client(client_for, api_key):
    return client_for(api_key)


@pytest.fixture
def staff_client(client_for, staff_api_key):
    return client_for(staff_api_key)


@pytest.fixture
def openai_model(fake_openai, settings):
    """The fake OpenAI server configured as provider of the model ``fake-gpt`` ($1/$2 per Mtok)."""
    settings.OPENAI_BASE_URL = fake_openai.base_url
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_MODELS = ["fake-gpt:1.00:2.00"]
    _quick_retries(settings)
    return fake_openai


@pytest.fixture
def anthropic_model(fake_anthropic, settings):
    """The fake Anthropic server configured as provider of ``fake-claude`` ($1/$2 per Mtok)."""
    settings.ANTHROPIC_BASE_URL = fake_anthropic.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-not-a-real-key"
    settings.ANTHROPIC_MODELS = ["fake-claude:1.00:2.00"]
    _quick_retries(settings)
    return fake_anthropic


def _quick_retries(settings) -> None:
    settings.AI_PROVIDER_TIMEOUT = 1.0
    settings.AI_PROVIDER_MAX_ATTEMPTS = 3
    settings.AI_RETRY_BASE_DELAY = 0.01
    settings.AI_RETRY_MAX_DELAY = 0.05


@pytest.fixture(autouse=True)
def _fresh_log_filters():
    """Each test sees its own first log line of a kind (OncePerInterval drops repeats)."""
    import logging

    from contextos.logging import OncePerInterval

    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for log_filter in getattr(logger, "filters", []):
            if isinstance(log_filter, OncePerInterval):
                log_filter.forget()


@pytest.fixture(autouse=True)
def _clear_cache():
    """Each test starts with an empty cache (throttle counters included)."""
    from django.core.cache import cache

    from apps.accounts.key_cache import known_keys_clear

    cache.clear()
    known_keys_clear()


@pytest.fixture(autouse=True)
def _fresh_routing():
    """Each test reads its own routing rows (a rolled-back test leaves the process's
    table and breakers behind)."""
    from apps.governance.limits import limits_clear
    from apps.routing import cooldown, router
    from apps.routing.table import routing_table_clear

    limits_clear()
    routing_table_clear()
    cooldown.reset()
    router.latencies.ms.clear()
    router.weighted.current.clear()
    yield
    routing_table_clear()
    limits_clear()


@pytest.fixture
def database_cache(settings):
    """The cache of the embedded default (no ``REDIS_URL``): a table of the database."""
    settings.CACHES = {
        "default": {
            "BACKEND": "contextos.cache.DatabaseCache",
            "LOCATION": "contextos_cache",
            "KEY_PREFIX": "contextos",
        }
    }


@pytest.fixture(params=["redis", "database"])
def each_shared_cache(request):
    """Run the test with Redis, then with the embedded default's database cache."""
    if request.param == "database":
        request.getfixturevalue("database_cache")
    return request.param


@pytest.fixture
def blackhole_port():
    """A port that accepts TCP connections and never answers (a hung server)."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    """A port nothing listens on (a server that is down)."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port
