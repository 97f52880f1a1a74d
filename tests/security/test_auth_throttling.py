"""Failed authentication is counted per client address (``AUTH_FAILURE_RATE``): past the rate,
further failures from that address answer 429 with ``Retry-After`` while valid keys from it
keep working; a key that cannot exist is refused without a database query."""

import http.client
import math
import secrets
import string
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.services import api_key_create, api_key_revoke

TASKS = "/api/v1/tasks/"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ATTACKER = "198.51.100.7"
NEIGHBOUR = "203.0.113.9"
CODE = "too_many_failed_authentications"

pytestmark = pytest.mark.django_db


def unknown_key() -> str:
    """A well-formed key nobody was given."""
    alphabet = string.ascii_letters + string.digits
    return "ctx_" + "".join(secrets.choice(alphabet) for _ in range(40))


def get(address: str, key: str | None = None, path: str = TASKS, **headers: str):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return APIClient().get(path, REMOTE_ADDR=address, **headers)


def fresh_window(period: float, needed: float) -> None:
    """Counts are kept in fixed windows: wait, if need be, until the current one has
    ``needed`` seconds left, so that a run of requests stays in one window."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.01)


def assert_throttled(response, *, period: int) -> dict:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= period
    return response.json()


def test_failures_past_the_rate_answer_429_until_the_window_ends():
    fresh_window(60, needed=15)
    responses = [get(ATTACKER, unknown_key()) for _ in range(50)]

    assert [r.status_code for r in responses] == [401] * 20 + [429] * 30
    window_left = 60 - time.time() % 60
    body = assert_throttled(responses[20], period=60)
    assert set(body) == {"error", "code", "details", "request_id"}
    assert body["code"] == CODE
    assert body["request_id"] == responses[20]["X-Request-ID"]
    assert "WWW-Authenticate" not in responses[20]
    # Retry-After is when the window frees, not a fixed penalty.
    assert abs(int(responses[-1]["Retry-After"]) - math.ceil(window_left)) <= 1


def test_a_valid_key_from_the_refused_address_still_works(api_key):
    fresh_window(60, needed=15)
    for _ in range(21):
        get(ATTACKER, unknown_key())
    assert get(ATTACKER, unknown_key()).status_code == 429

    assert get(ATTACKER, api_key).status_code == 200
    assert get(ATTACKER, api_key).status_code == 200
    # A success does not clear the count either.
    assert_throttled(get(ATTACKER, unknown_key()), period=60)


def test_other_addresses_are_unaffected(api_key):
    fresh_window(60, needed=15)
    for _ in range(25):
        get(ATTACKER, unknown_key())

    assert get(NEIGHBOUR, unknown_key()).status_code == 401
    assert get(NEIGHBOUR).status_code == 401
    assert get(NEIGHBOUR, api_key).status_code == 200
    assert get(ATTACKER, unknown_key()).status_code == 429


def test_a_forwarded_for_header_does_not_change_the_address():
    fresh_window(60, needed=15)
    statuses = [
        get(ATTACKER, unknown_key(), HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").status_code
        for n in range(21)
    ]
    assert statuses == [401] * 20 + [429]


def test_every_kind_of_failure_counts_once(user, settings):
    settings.AUTH_FAILURE_RATE = "8/min"
    revoked, revoked_raw = api_key_create(user=user)
    api_key_revoke(api_key=revoked)
    _, expired_raw = api_key_create(user=user, expires_at=timezone.now() - timedelta(seconds=1))
    failures = [
        {},  # no credentials where they are needed
        {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"},
        {"HTTP_AUTHORIZATION": "Bearer"},
        {"HTTP_AUTHORIZATION": "Bearer not-a-key"},
        {"HTTP_AUTHORIZATION": f"Bearer {unknown_key()}"},
        {"HTTP_X_API_KEY": unknown_key()},
        {"HTTP_AUTHORIZATION": f"Bearer {revoked_raw}"},
        {"HTTP_AUTHORIZATION": f"Bearer {expired_raw}"},
    ]
    fresh_window(60, needed=15)

    statuses = [get(ATTACKER, **headers).status_code for headers in failures]
    assert statuses == [401] * 8
    assert get(ATTACKER).status_code == 429
    assert get(ATTACKER, revoked_raw).status_code == 429


def test_public_endpoints_do_not_count(settings):
    settings.AUTH_FAILURE_RATE = "1/min"
    fresh_window(60, needed=15)
    for _ in range(2):
        assert get(ATTACKER, "not-a-key", path="/api/v1/health/live").status_code == 200
        assert get(ATTACKER, path="/api/schema/").status_code == 200
    assert get(ATTACKER).status_code == 401
    assert get(ATTACKER).status_code == 429


@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "A" * 48,  # another vendor's key
        "ctx_short",
        "ctx_" + "A" * 20 + "-" + "A" * 19,
        "ctx_" + "A" * 200,
        "CTX_" + "A" * 40,
    ],
    ids=["other-prefix", "too-short", "bad-character", "too-long", "upper-case-prefix"],
)
def test_keys_that_cannot_exist_are_refused_without_a_database_query(
    key, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = get(ATTACKER, key)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_refusals_past_the_rate_make_no_database_query(settings, django_assert_num_queries):
    settings.AUTH_FAILURE_RATE = "1/min"
    fresh_window(60, needed=15)
    assert get(ATTACKER, "not-a-key").status_code == 401
    with django_assert_num_queries(0):
        assert get(ATTACKER, "not-a-key").status_code == 429
        assert get(ATTACKER).status_code == 429


def test_the_window_frees_after_its_period(settings):
    settings.AUTH_FAILURE_RATE = "3/sec"
    fresh_window(1, needed=0.6)
    statuses = [get(ATTACKER, unknown_key()).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]

    time.sleep(1 - time.time() % 1 + 0.01)
    assert get(ATTACKER, unknown_key()).status_code == 401


def test_an_empty_rate_turns_the_limit_off(settings):
    settings.AUTH_FAILURE_RATE = ""
    assert {get(ATTACKER, unknown_key()).status_code for _ in range(30)} == {401}


def test_openai_clients_get_openai_s_shape(settings):
    settings.AUTH_FAILURE_RATE = "2/min"
    fresh_window(60, needed=15)
    client = APIClient(REMOTE_ADDR=ATTACKER)
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}

    statuses = [client.post(CHAT, body, format="json").status_code for _ in range(2)]
    refused = client.post(CHAT, body, format="json")

    assert statuses == [401, 401]
    assert_throttled(refused, period=60)
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == CODE
    assert error["param"] is None
    assert error["message"].startswith("Too many failed authentications")


def test_anthropic_clients_get_anthropic_s_shape(settings):
    settings.AUTH_FAILURE_RATE = "1/min"
    fresh_window(60, needed=15)
    client = APIClient(REMOTE_ADDR=ATTACKER)
    client.credentials(HTTP_X_API_KEY=unknown_key())
    body = {"model": "echo-1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}

    assert client.post(MESSAGES, body, format="json").status_code == 401
    refused = client.post(MESSAGES, body, format="json")

    assert_throttled(refused, period=60)
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == CODE


def test_counted_in_the_embedded_default_s_database_cache_too(database_cache, settings, api_key):
    settings.AUTH_FAILURE_RATE = "3/min"
    fresh_window(60, needed=15)
    statuses = [get(ATTACKER, unknown_key()).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert get(ATTACKER, api_key).status_code == 200


def test_with_redis_down_failures_answer_401_and_valid_keys_work(settings, closed_port, api_key):
    settings.AUTH_FAILURE_RATE = "2/min"
    cache = {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{closed_port}/0"}
    with override_settings(CACHES={"default": cache}):
        statuses = [get(ATTACKER, unknown_key()).status_code for _ in range(5)]
        valid = get(ATTACKER, api_key)
    assert statuses == [401] * 5
    assert valid.status_code == 200


# Through the real server: the address is the peer gunicorn saw, whatever the headers say.


def server_get(base_url: str, source: str, key: str, **headers: str) -> int:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", TASKS, headers={"Authorization": f"Bearer {key}", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.server
def test_the_real_server_counts_per_peer_address(start_web, api_key):
    base = start_web(AUTH_FAILURE_RATE="5/min")
    fresh_window(60, needed=20)
    spoofed = [
        server_get(base, "127.0.0.2", unknown_key(), **{"X-Forwarded-For": f"192.0.2.{n}"})
        for n in range(6)
    ]
    assert spoofed == [401] * 5 + [429]
    assert server_get(base, "127.0.0.3", unknown_key()) == 401
    assert server_get(base, "127.0.0.2", api_key) == 200
