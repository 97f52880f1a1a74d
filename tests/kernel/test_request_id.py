"""X-Request-ID: accepted when sane, generated otherwise, always echoed."""

import pytest


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123.def:456_x", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("bad id with spaces", False),
        ("<script>", False),
        ("", False),
    ],
)
def test_request_id_is_echoed_or_replaced(anon_client, sent, kept):
    response = anon_client.get("/api/v1/health/live", HTTP_X_REQUEST_ID=sent)
    echoed = response["X-Request-ID"]
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent
        assert 1 <= len(echoed) <= 128


@pytest.mark.django_db
def test_each_request_gets_its_own_id(anon_client):
    first = anon_client.get("/api/v1/health/live")["X-Request-ID"]
    second = anon_client.get("/api/v1/health/live")["X-Request-ID"]
    assert first != second


@pytest.mark.django_db
def test_error_body_and_header_share_the_clients_id(anon_client):
    response = anon_client.get("/api/v1/nowhere/", HTTP_X_REQUEST_ID="trace-42")
    assert response["X-Request-ID"] == "trace-42"
    assert response.json()["request_id"] == "trace-42"
