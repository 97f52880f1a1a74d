"""A key cached by the web processes stops working at the next request once changed elsewhere."""

import pytest

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_revoke
from tests.integration.conftest import http_get

pytestmark = pytest.mark.server


def test_a_key_revoked_by_another_process_is_refused_at_the_next_request(start_web, api_key, user):
    base = start_web(WEB_CONCURRENCY="2")
    headers = {"Authorization": f"Bearer {api_key}"}
    # Enough requests for both gunicorn processes to have read (and cached) the key.
    for _ in range(20):
        assert http_get(f"{base}/api/v1/tasks/", headers=headers)[0] == 200

    api_key_revoke(api_key=APIKey.objects.get(user=user))

    for _ in range(10):
        status, _, body = http_get(f"{base}/api/v1/tasks/", headers=headers)
        assert status == 401, body
        assert b"revoked" in body


def test_a_deactivated_user_is_refused_at_the_next_request(start_web, api_key, user):
    base = start_web()
    headers = {"Authorization": f"Bearer {api_key}"}
    for _ in range(5):
        assert http_get(f"{base}/api/v1/tasks/", headers=headers)[0] == 200

    user.is_active = False
    user.save()

    assert http_get(f"{base}/api/v1/tasks/", headers=headers)[0] == 401
