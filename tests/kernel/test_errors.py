"""Every error under /api/ has the one JSON error body, whatever went wrong."""

import pytest
from django.test import Client, override_settings

ECHO = "/api/v1/_test/echo/"

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.kernel.urls")]


def assert_error_body(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code", "details", "request_id"}
    assert body["code"] == code
    assert body["error"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "post",
            ECHO,
            {"data": "{not json", "content_type": "application/json"},
            400,
            "malformed_request",
        ),
        (
            "post",
            ECHO,
            {"data": "[1, 2]", "content_type": "application/json"},
            400,
            "validation_error",
        ),
        (
            "post",
            ECHO,
            {"data": "name=x", "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("delete", ECHO, {}, 405, "method_not_allowed"),
        ("get", "/api/v1/no-such-thing/", {}, 404, "not_found"),
        ("get", "/api/nothing", {}, 404, "not_found"),
        ("get", "/api/v1/_test/conflict/", {}, 409, "conflict"),
    ],
    ids=[
        "malformed-json",
        "array-body",
        "text-plain",
        "wrong-method",
        "unknown-url",
        "unknown-url-no-slash",
        "conflict",
    ],
)
def test_error_body_for_each_failure(api_client, method, path, kwargs, status, code):
    response = getattr(api_client, method)(path, **kwargs)
    assert_error_body(response, status, code)


def test_validation_error_names_the_fields(api_client):
    response = api_client.post(ECHO, {"name": "x" * 50, "colour": "red"}, format="json")
    body = assert_error_body(response, 400, "validation_error")
    assert body["details"] == {"colour": ["Unknown field."]}

    response = api_client.post(ECHO, {"name": "x" * 50, "count": -1}, format="json")
    body = assert_error_body(response, 400, "validation_error")
    assert set(body["details"]) == {"name", "count"}


def test_array_body_is_rejected_with_field_details(api_client):
    response = api_client.post(ECHO, [1, 2], format="json")
    body = assert_error_body(response, 400, "validation_error")
    assert "non_field_errors" in body["details"]


def test_conflict_carries_its_details(api_client):
    body = assert_error_body(api_client.get("/api/v1/_test/conflict/"), 409, "conflict")
    assert body["details"] == {"status": "succeeded"}


def test_valid_request_passes(api_client):
    response = api_client.post(ECHO, {"name": "ok", "count": 2}, format="json")
    assert response.status_code == 201
    assert response.json() == {"name": "ok", "count": 2}


@pytest.mark.parametrize("path", ["/api/v1/_test/explode/", "/api/v1/_test/explode-django/"])
def test_unexpected_exception_is_a_500_without_trace(path, caplog):
    client = Client(raise_request_exception=False)
    response = client.get(path)
    body = assert_error_body(response, 500, "internal_error")
    assert body["error"] == "Internal server error."
    text = response.content.decode()
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    # The operator still gets the trace, tagged with the request id.
    logged = [r for r in caplog.records if r.exc_info]
    assert logged
    assert any(getattr(r, "request_id", None) == body["request_id"] for r in caplog.records)


@override_settings(MAX_REQUEST_BYTES=1024)
def test_body_over_the_limit_is_413(api_client):
    response = api_client.post(ECHO, {"name": "x" * 2000}, format="json")
    assert_error_body(response, 413, "payload_too_large")


def test_non_api_unknown_url_is_json_404_but_admin_keeps_django_pages():
    client = Client()
    assert_error_body(client.get("/no-such-page"), 404, "not_found")
    response = Client().get("/admin/login/", follow=False)
    assert response.status_code == 200
    assert "text/html" in response["Content-Type"]


def test_openai_paths_use_openai_error_shape():
    response = Client().get("/v1/no-such-endpoint")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_gateways_error_shapes_hold_when_served_below_a_path_prefix():
    # Behind a proxy that serves the app at /gateway (SCRIPT_NAME), the gateway's own
    # paths are still /v1/...: its clients still read their protocol's error shape.
    client = Client(SCRIPT_NAME="/gateway")
    openai = client.get("/v1/models")
    assert openai.status_code == 401
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    assert openai.json()["error"]["type"] == "authentication_error"
    anthropic = client.post("/v1/messages", {}, content_type="application/json")
    assert anthropic.status_code == 401
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"


def test_errors_are_json_even_when_a_browser_asks_for_html(client, staff_user):
    client.force_login(staff_user)
    page = client.get(ECHO, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "text/html" in page["Content-Type"]  # the browsable API, for staff
    response = client.post(ECHO, "{oops", content_type="application/json", HTTP_ACCEPT="text/html")
    assert_error_body(response, 400, "malformed_request")
