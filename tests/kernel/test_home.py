"""The pages a newcomer lands on: ``/`` and the API's index at ``/api/v1/``."""

import pytest
from django.urls import resolve

pytestmark = pytest.mark.django_db


def test_home_links_to_the_docs_the_admin_and_the_probes(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for path in ("/api/docs/", "/api/redoc/", "/admin/", "/api/v1/health/live", "/metrics"):
        assert f'href="http://testserver{path}"' in page, path
    assert "http://testserver/v1" in page  # the openai client's base_url


def test_the_api_index_names_endpoints_that_exist(client):
    response = client.get("/api/v1/")
    assert response.status_code == 200
    body = response.json()
    assert body["authentication"] == "Authorization: Bearer <api key>"
    for name, url in body["endpoints"].items():
        assert url.startswith("http://testserver/"), name
        resolve(url.removeprefix("http://testserver"))  # raises for a URL that does not exist


def test_they_only_answer_reads(client):
    assert client.post("/").status_code == 405
    response = client.post("/api/v1/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
