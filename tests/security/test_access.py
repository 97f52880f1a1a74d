"""Who may call what, for every operation in the schema (new ones are covered as they
appear): keys, ownership, staff routes and task types, CSRF on session writes."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin import site as admin_site
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke
from apps.ai_interactions.models import AIInteraction, InteractionStatus
from apps.tasks.models import Task, TaskStatus
from apps.tasks.registry import task_types
from contextos.exceptions import GATEWAY_PATH_PREFIX, is_gateway_path
from tests.factories import InteractionFactory, TaskFactory, UserFactory
from tests.security.routes import Operation, operations

pytestmark = pytest.mark.django_db

PROTECTED = [op for op in operations() if not op.public]
UNSAFE = [op for op in PROTECTED if op.method not in ("GET", "HEAD", "OPTIONS")]
DETAIL = [op for op in PROTECTED if op.has_id and not op.staff_only]
STAFF_ONLY = [op for op in PROTECTED if op.staff_only]
# Outside the schema and open by design (the API's index only names its endpoints).
SCHEMA_AND_DOCS = ["/api/schema/", "/api/docs/", "/api/redoc/", "/api/v1/"]


def labels(ops: list[Operation]) -> list[str]:
    return [op.label for op in ops]


def error_code(response) -> str:
    """The machine-readable code of an error, in the shape its path uses."""
    body = response.json()
    if is_gateway_path(response.wsgi_request):
        return body["error"]["code"]
    assert set(body) == {"error", "code", "details", "request_id"}, body
    return body["code"]


def test_only_the_probes_are_public():
    assert labels([op for op in operations() if op.public]) == [
        "GET /api/v1/health/live",
        "GET /api/v1/health/ready",
    ]
    assert STAFF_ONLY, "the staff health report is a staff route"


def _leaf_routes(resolvers, prefix=""):
    """(route, pattern) of every view, routes joined as ``resolve()`` reports them."""
    for entry in resolvers:
        route = URLResolver._join_route(prefix, str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from _leaf_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def test_every_api_route_of_the_urlconf_is_in_the_schema():
    """So that iterating over the schema's operations misses no endpoint."""
    in_schema = {resolve(op.url()).route for op in operations()}
    in_urlconf = {
        route
        for route, pattern in _leaf_routes(get_resolver().url_patterns)
        if route.startswith(("api/", "v1/", "^(api|v1)/"))
        and pattern.name not in ("schema", "swagger-ui", "redoc", "redoc-bundle", "api-root")
        and route != "^(api|v1)/"  # the JSON 404 for anything else
    }
    assert in_urlconf == in_schema


@pytest.mark.parametrize("path", SCHEMA_AND_DOCS)
def test_schema_and_docs_are_open(anon_client, path):
    assert anon_client.get(path).status_code == 200


@pytest.fixture(params=["none", "malformed", "unknown", "revoked", "expired", "basic"])
def bad_credentials(request, user) -> dict[str, str]:
    kind = request.param
    if kind == "none":
        return {}
    if kind == "malformed":
        return {"HTTP_AUTHORIZATION": "Bearer not a key"}
    if kind == "unknown":
        return {"HTTP_AUTHORIZATION": "Bearer ctx_" + "A" * 40}
    if kind == "basic":
        return {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}
    api_key, raw_key = api_key_create(user=user)
    if kind == "revoked":
        api_key_revoke(api_key=api_key)
    else:
        api_key.expires_at = timezone.now() - timedelta(seconds=1)
        api_key.save()
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


@pytest.mark.parametrize("op", PROTECTED, ids=labels(PROTECTED))
def test_every_protected_operation_answers_401_without_a_valid_key(op, bad_credentials):
    client = APIClient()
    client.credentials(**bad_credentials)
    response = op.call(client)
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_code(response) in ("not_authenticated", "authentication_failed")


@pytest.fixture
def others_objects() -> dict:
    """Objects of another user, in states where their owner could act on each of them."""
    owner = UserFactory()
    return {
        "owner": owner,
        Task: [TaskFactory(owner=owner, status=s) for s in (TaskStatus.QUEUED, TaskStatus.FAILED)],
        AIInteraction: [
            InteractionFactory(owner=owner, status=s)
            for s in (InteractionStatus.SUCCEEDED, InteractionStatus.FAILED)
        ],
        APIKey: [api_key_create(user=owner, name=name)[0] for name in ("laptop", "server")],
    }


def _state(row) -> tuple:
    """What acting on a row would change (keys have no status; they are revoked)."""
    return (row.pk, getattr(row, "status", None), getattr(row, "revoked_at", None), row.updated_at)


@pytest.mark.parametrize("op", DETAIL, ids=labels(DETAIL))
def test_another_users_objects_answer_404(op, others_objects, api_client, client_for):
    model = op.model
    targets = others_objects[model]  # a new detail model needs its objects above
    before = [_state(row) for row in targets]
    unknown = op.call(api_client, uuid.uuid4())
    assert unknown.status_code == 404

    for target in targets:
        response = op.call(api_client, target.pk)
        assert response.status_code == 404, (_state(target), response.content)
        # Indistinguishable from an id that does not exist.
        assert response.json()["error"] == unknown.json()["error"]

    after = [
        _state(row)
        for row in model.objects.filter(pk__in=[t.pk for t in targets]).order_by("created_at")
    ]
    assert sorted(after) == sorted(before)
    # Their owner does see them: the 404 is about ownership.
    _, owner_key = api_key_create(user=others_objects["owner"])
    read = next(o for o in DETAIL if o.method == "GET" and o.model is model)
    assert read.call(client_for(owner_key), targets[0].pk).status_code == 200


@pytest.mark.parametrize("op", STAFF_ONLY, ids=labels(STAFF_ONLY))
def test_staff_routes_refuse_other_users(op, api_client, staff_client):
    response = op.call(api_client)
    assert response.status_code == 403, response.content
    assert error_code(response) == "permission_denied"
    assert op.call(staff_client).status_code != 403


def test_staff_task_types_are_hidden_and_refused_for_other_users(api_client, staff_client):
    staff_types = [t.name for t in task_types() if t.staff_only and not t.internal]
    assert staff_types, "a staff-only task type is registered (tests.tasktypes at least)"
    listed = {t["type"] for t in api_client.get("/api/v1/tasks/types/").json()}
    listed_for_staff = {t["type"] for t in staff_client.get("/api/v1/tasks/types/").json()}
    for name in staff_types:
        assert name not in listed
        assert name in listed_for_staff
        response = api_client.post("/api/v1/tasks/", {"type": name}, format="json")
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "permission_denied"
    assert not Task.objects.filter(type__in=staff_types).exists()


def test_internal_task_types_cannot_be_submitted(api_client, staff_client):
    internal = [t.name for t in task_types() if t.internal]
    assert internal
    for client in (api_client, staff_client):
        listed = {t["type"] for t in client.get("/api/v1/tasks/types/").json()}
        for name in internal:
            assert name not in listed
            response = client.post("/api/v1/tasks/", {"type": name, "params": {}}, format="json")
            assert response.status_code in (400, 403), response.content
    assert not Task.objects.exists()


# --- Session authentication and CSRF ----------------------------------------------------


@pytest.fixture
def session_client(staff_user) -> APIClient:
    """A browser logged in to the admin: the session cookie, no API key."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    return client


def test_session_login_reads_the_api(session_client):
    assert session_client.get("/api/v1/tasks/").status_code == 200


# The gateway's protocols (/v1/) take API keys alone; the REST API also a staff login.
GATEWAY = [op for op in PROTECTED if op.path.startswith(GATEWAY_PATH_PREFIX)]
SESSION_WRITES = [op for op in UNSAFE if op not in GATEWAY]


@pytest.mark.parametrize("op", SESSION_WRITES, ids=labels(SESSION_WRITES))
def test_session_writes_without_csrf_token_are_refused(op, session_client):
    response = op.call(session_client)
    assert response.status_code == 403, response.content
    assert "CSRF" in response.content.decode()


@pytest.mark.parametrize("op", GATEWAY, ids=labels(GATEWAY))
def test_a_login_session_is_no_way_into_the_gateway(op, session_client):
    """OpenAI's and Anthropic's protocols authenticate by key: a browser logged in to
    the admin is refused there (401 in the protocol's shape) and given no cookie."""
    response = op.call(session_client)
    assert response.status_code == 401, response.content
    assert error_code(response) == "not_authenticated"
    assert not response.cookies


def test_session_write_with_csrf_token_is_accepted(session_client):
    token = "a" * 32
    session_client.cookies["csrftoken"] = token
    response = session_client.post(
        "/api/v1/ai/interactions/", {"prompt": "hello"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201, response.content


# --- Admin ----------------------------------------------------------------------------


ADMIN_PAGES = ["admin:index"] + [
    f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
    for model in admin_site._registry
]


@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_admin_pages_need_a_staff_login(client, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    client.force_login(UserFactory())  # logged in, not staff
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_post_without_csrf_token_is_refused(staff_user):
    from django.test import Client

    staff_user.is_superuser = True
    staff_user.save()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    target = UserFactory()
    response = browser.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    assert response.status_code == 403
    assert type(target).objects.filter(pk=target.pk).exists()
