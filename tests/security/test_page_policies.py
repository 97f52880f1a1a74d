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


def test_api_answers_carry_no_page_policy(api_client):
    response = api_client.get("/api/v1/tasks/")
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response
