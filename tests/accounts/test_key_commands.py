"""Operators list and revoke API keys from the command line, never seeing a key's value."""

import io

import pytest
from django.core.management import CommandError, call_command

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_list_shows_prefixes_and_states_but_never_keys(user):
    mine, raw = api_key_create(user=user, name="laptop")
    other = UserFactory()
    api_key_create(user=other, name="server")
    listing = run("list_api_keys")
    assert mine.prefix in listing
    assert "laptop" in listing
    assert "server" in listing
    assert raw not in listing
    only_mine = run("list_api_keys", "--user", user.username)
    assert "laptop" in only_mine
    assert "server" not in only_mine


def test_revoke_by_prefix(user, client_for):
    api_key, raw = api_key_create(user=user)
    output = run("revoke_api_key", api_key.prefix)
    assert f"Revoked {api_key.prefix}" in output
    assert APIKey.objects.get(pk=api_key.pk).is_revoked
    assert "revoked" in run("list_api_keys")
    assert client_for(raw).get("/api/v1/tasks/").status_code == 401


def test_revoke_refuses_unknown_or_ambiguous_prefixes(user):
    with pytest.raises(CommandError, match="No API key"):
        call_command("revoke_api_key", "ctx_nothing")
    api_key_create(user=user)
    api_key_create(user=user)
    with pytest.raises(CommandError, match="more than one"):
        call_command("revoke_api_key", "ctx_")
    assert not APIKey.objects.filter(revoked_at__isnull=False).exists()
