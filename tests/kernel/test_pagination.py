"""Cursor pagination as every list uses it: a cursor the API did not issue is a 400."""

import base64

import pytest
from django.urls import reverse

from tests.factories import InteractionFactory, TaskFactory

pytestmark = pytest.mark.django_db

LISTS = {"tasks:task-list": TaskFactory, "ai:interaction-list": InteractionFactory}


@pytest.mark.parametrize("route", LISTS)
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "é",
        base64.b64encode(b"o=-1").decode(),
        base64.b64encode(b"r=x").decode(),
        base64.b64encode(b"p=not-a-time").decode(),
        base64.b64encode(b"p=yesterday").decode(),
    ],
    ids=["not-base64", "not-ascii", "negative-offset", "bad-reverse", "bad-position", "bad-day"],
)
def test_an_invalid_cursor_is_400(api_client, user, route, cursor):
    LISTS[route](owner=user)
    response = api_client.get(reverse(route), {"cursor": cursor})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_cursor"
    assert body["error"] == (
        "Invalid 'cursor' query parameter: use the 'next' or 'previous' link of a list."
    )
    assert body["details"] == {"cursor": ["Not a cursor this API issued."]}
