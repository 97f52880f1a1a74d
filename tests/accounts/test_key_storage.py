"""Only a hash of an API key is stored; the raw key is shown once and found nowhere."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_hash
from tests.security.routes import exercise

ECHO = "/api/v1/_test/echo/"


def database_contains(needle: str) -> list[str]:
    """Every table.column of a text type whose values contain ``needle``."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'public'
              AND data_type IN ('text', 'character varying', 'jsonb', 'json')
            ORDER BY table_name, column_name
            """
        )
        for table, column in cursor.fetchall():
            cursor.execute(
                f'SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE %s LIMIT 1',  # noqa: S608
                [f"%{needle}%"],
            )
            if cursor.fetchone():
                found.append(f"{table}.{column}")
    return found


@pytest.mark.django_db
@pytest.mark.urls("tests.kernel.urls")
def test_raw_key_appears_nowhere_in_the_database(user, client_for):
    out = io.StringIO()
    call_command("create_api_key", user.username, "--name", "ci", stdout=out)
    raw_key = out.getvalue().strip()
    client = client_for(raw_key)
    assert client.get(ECHO).status_code == 200
    assert client.post(ECHO, {"name": raw_key[:20]}, format="json").status_code == 201
    # Every operation of the API, successes and failures (a worker's rows: tests/security).
    statuses = {response.status_code for response in exercise(client)}
    assert {200, 201, 202, 400, 404} <= statuses

    assert database_contains(raw_key) == []
    assert database_contains(raw_key[4:]) == []
    stored = APIKey.objects.get(user=user, name="ci")  # the keys API made others
    assert stored.key_hash == api_key_hash(raw_key)
    assert stored.prefix == raw_key[: len(stored.prefix)]


@pytest.mark.django_db
def test_create_api_key_prints_the_key_alone(user):
    out = io.StringIO()
    call_command("create_api_key", user.username, "--expires-in-days", "7", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ctx_")
    api_key = APIKey.objects.get(user=user)
    assert api_key.expires_at is not None
    assert 6.9 < (api_key.expires_at - api_key.created_at).total_seconds() / 86400 <= 7


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [(["nobody"], "No user named"), (["{user}", "--expires-in-days", "0"], "at least 1")],
)
def test_create_api_key_refuses_bad_arguments(user, args, message):
    args = [arg.format(user=user.username) for arg in args]
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args)
    assert not APIKey.objects.exists()


@pytest.mark.django_db
def test_admin_shows_a_new_key_once_and_stores_only_its_hash(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    response = client.post(
        "/admin/accounts/apikey/add/",
        {"user": staff_user.pk, "name": "from admin", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200
    page = response.content.decode()
    raw_key = page.split('id="raw-key"')[1].split(">", 1)[1].split("<", 1)[0]
    assert raw_key.startswith("ctx_")
    assert "no-store" in response["Cache-Control"]
    # Shown in the page only: no message, so nothing in the messages cookie.
    assert "messages" not in response.cookies
    assert all(raw_key not in morsel.value for morsel in client.cookies.values())
    api_key = APIKey.objects.get(name="from admin")
    assert api_key.key_hash == api_key_hash(raw_key)
    assert database_contains(raw_key) == []
    # The change page does not show it again.
    page = client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    assert raw_key not in page
    assert api_key.prefix in page


@pytest.mark.django_db
def test_admin_key_page_is_read_only_and_its_revoke_button_stops_the_key(
    client, staff_user, user, client_for
):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    api_key, raw_key = api_key_create(user=user, name="old name")
    assert client_for(raw_key).get("/api/v1/tasks/").status_code == 200
    page = client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert 'value="revoke"' in page
    # The form's fields cannot be posted either.
    refused = client.post(f"/admin/accounts/apikey/{api_key.pk}/change/", {"name": "new name"})
    assert refused.status_code == 403

    response = client.post(
        f"/admin/accounts/apikey/{api_key.pk}/act/", {"record_action": "revoke"}, follow=True
    )

    assert response.redirect_chain[-1][0] == f"/admin/accounts/apikey/{api_key.pk}/change/"
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [f"API key {api_key.prefix} revoked: it is refused from now on."]
    api_key.refresh_from_db()
    assert api_key.name == "old name"
    assert api_key.revoked_at is not None
    assert 'value="revoke"' not in response.content.decode()
    assert client_for(raw_key).get("/api/v1/tasks/").status_code == 401
    # Revoking again (a stale page) says so and changes nothing.
    again = client.post(
        f"/admin/accounts/apikey/{api_key.pk}/act/", {"record_action": "revoke"}, follow=True
    )
    assert [str(m) for m in again.context["messages"]] == [
        "“revoke” is not possible for this record now."
    ]
