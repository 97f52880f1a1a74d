"""Pages (admin, Swagger UI, Redoc, home) send a Content-Security-Policy that allows no
inline script and nothing from another host, and Cross-Origin-Opener-Policy: same-origin."""

import pytest

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, set[str]]:
    policy = response["Content-Security-Policy"]
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = set(values)
    return parsed


@pytest.mark.parametrize("path", ["/", "/admin/login/", "/api/docs/", "/api/redoc/"])
def test_pages_allow_scripts_from_this_host_only(anon_client, path):
    response = anon_client.get(path)
    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == {"'self'"}
    assert policy["default-src"] == {"'self'"}
    assert policy["frame-ancestors"] == {"'none'"}
    assert policy["object-src"] == {"'none'"}
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    # No page carries an inline script the policy would block.
    body = response.content.decode()
    assert "<script>" not in body


def test_only_the_docs_allow_inline_styles(anon_client, admin_client):
    assert directives(anon_client.get("/api/docs/"))["style-src"] == {"'self'", "'unsafe-inline'"}
    assert directives(anon_client.get("/api/redoc/"))["style-src"] == {"'self'", "'unsafe-inline'"}
    for path in ("/", "/admin/login/", "/admin/", "/admin/tasks/task/"):
        response = (
            anon_client.get(path) if path in ("/", "/admin/login/") else admin_client.get(path)
        )
        assert directives(response)["style-src"] == {"'self'"}, path


def test_swagger_ui_gets_its_start_script_from_this_host(anon_client):
    page = anon_client.get("/api/docs/").content.decode()
    assert 'src="/api/docs/?script="' in page
    script = anon_client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/v1/models"])
def test_api_answers_carry_no_page_policy(api_client, path):
    response = api_client.get(path)
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response


@pytest.mark.parametrize("accept", ["text/html", "application/xml"])
def test_the_gateway_answers_json_whatever_the_client_accepts(api_client, accept):
    """OpenAI's and Anthropic's protocols speak JSON: a browser's ``Accept`` gets JSON on
    ``/v1`` (the browsable API's HTML is for the REST API), and no 406."""
    response = api_client.get("/v1/models", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["object"] == "list"
