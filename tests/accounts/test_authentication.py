"""API key authentication: every way a key can be wrong answers 401 in the error format."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke

ECHO = "/api/v1/_test/echo/"

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.kernel.urls")]


def assert_401(response, code: str) -> dict:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == code
    assert body["request_id"] == response["X-Request-ID"]
    return body


def test_valid_key_authenticates_as_its_user(api_client, user):
    response = api_client.get(ECHO)
    assert response.status_code == 200
    assert response.json() == {"user": user.username}


def test_no_key(anon_client):
    assert_401(anon_client.get(ECHO), "not_authenticated")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ctx_" + "x" * 40,  # well-formed, unknown
        "Bearer not-a-key",
        "Bearer",
        "Bearer ctx_abc def",
        "Basic dXNlcjpwYXNz",
        "Bearer ctx_" + "é" * 40,
    ],
    ids=["unknown", "malformed", "empty", "two-tokens", "basic", "non-ascii"],
)
def test_bad_key(anon_client, header):
    assert_401(anon_client.get(ECHO, HTTP_AUTHORIZATION=header), "authentication_failed")


def test_revoked_key(client_for, user):
    api_key, raw_key = api_key_create(user=user)
    api_key_revoke(api_key=api_key)
    body = assert_401(client_for(raw_key).get(ECHO), "authentication_failed")
    assert "revoked" in body["error"]


def test_expired_key(client_for, user):
    _, raw_key = api_key_create(user=user, expires_at=timezone.now() - timedelta(seconds=1))
    body = assert_401(client_for(raw_key).get(ECHO), "authentication_failed")
    assert "expired" in body["error"]


def test_key_of_inactive_user(client_for, user, api_key):
    user.is_active = False
    user.save()
    assert_401(client_for(api_key).get(ECHO), "authentication_failed")


def test_use_is_recorded_at_most_once_a_minute(api_client, user):
    api_client.get(ECHO)
    first = APIKey.objects.get(user=user).last_used_at
    assert first is not None
    api_client.get(ECHO)
    assert APIKey.objects.get(user=user).last_used_at == first


# A used key is cached (API_KEY_CACHE_SECONDS); every change still holds at the next request.


def test_repeated_requests_read_the_key_from_the_cache(api_client, user, django_assert_num_queries):
    assert api_client.get(ECHO).status_code == 200  # reads the key, records its use
    assert api_client.get(ECHO).status_code == 200  # reads the key with its last use
    with django_assert_num_queries(0):
        assert api_client.get(ECHO).json() == {"user": user.username}


def test_a_used_key_stops_working_at_once_when_revoked(client_for, user):
    api_key, raw_key = api_key_create(user=user)
    client = client_for(raw_key)
    assert client.get(ECHO).status_code == 200
    assert client.get(ECHO).status_code == 200
    api_key_revoke(api_key=api_key)
    body = assert_401(client.get(ECHO), "authentication_failed")
    assert "revoked" in body["error"]


def test_a_used_key_stops_working_at_once_when_its_user_is_deactivated(api_client, user):
    assert api_client.get(ECHO).status_code == 200
    assert api_client.get(ECHO).status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert_401(api_client.get(ECHO), "authentication_failed")


def test_a_used_key_stops_working_at_once_when_deleted_or_its_expiry_is_moved(client_for, user):
    deleted, deleted_raw = api_key_create(user=user)
    moved, moved_raw = api_key_create(user=user)
    for raw_key in (deleted_raw, moved_raw, deleted_raw, moved_raw):
        assert client_for(raw_key).get(ECHO).status_code == 200
    deleted.delete()
    moved.expires_at = timezone.now() - timedelta(seconds=1)
    moved.save()  # as the admin's change form does
    assert_401(client_for(deleted_raw).get(ECHO), "authentication_failed")
    body = assert_401(client_for(moved_raw).get(ECHO), "authentication_failed")
    assert "expired" in body["error"]


def test_a_cached_key_expires_on_time(client_for, user):
    _, raw_key = api_key_create(user=user, expires_at=timezone.now() + timedelta(seconds=1))
    client = client_for(raw_key)
    assert client.get(ECHO).status_code == 200
    assert client.get(ECHO).status_code == 200
    time.sleep(1.1)
    body = assert_401(client.get(ECHO), "authentication_failed")
    assert "expired" in body["error"]


@override_settings(API_KEY_CACHE_SECONDS=0)
def test_the_key_cache_can_be_turned_off(api_client, django_assert_num_queries):
    assert api_client.get(ECHO).status_code == 200
    with django_assert_num_queries(1):
        assert api_client.get(ECHO).status_code == 200


def test_key_shape(user):
    _, raw_key = api_key_create(user=user)
    assert raw_key.startswith("ctx_")
    assert len(raw_key) >= 4 + 32
    assert raw_key[4:].isalnum()
    assert raw_key[4:].isascii()


@override_settings(API_RATE_LIMIT="3/min")
def test_throttled_per_key_with_retry_after(
    api_client, client_for, staff_api_key, each_shared_cache
):
    for _ in range(3):
        assert api_client.get(ECHO).status_code == 200
    response = api_client.get(ECHO)
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    # Another key has its own budget.
    assert client_for(staff_api_key).get(ECHO).status_code == 200
