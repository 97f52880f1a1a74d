"""The self-service keys API: a user's own keys, created with limits no looser than the
caller's, tightened, revoked; the raw key shown once; spend in the current period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create
from apps.governance.admission import spend_usd
from apps.governance.limits import LimitConfig, Scope
from apps.governance.models import AuditEntry, Limits
from apps.governance.services import limits_set, team_create, team_member_add
from tests.factories import InteractionFactory, UserFactory

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/keys/"
FIELDS = {
    "id",
    "name",
    "prefix",
    "team",
    "expires_at",
    "revoked_at",
    "created_at",
    "last_used_at",
    "allowed_models",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "budget_usd",
    "budget_period",
    "spend_usd",
}


def create(client, **body):
    return client.post(KEYS, body, format="json")


def test_create_shows_the_raw_key_once_and_it_works(api_client, client_for, user):
    response = create(api_client, name="ci", rpm_limit=10, budget_usd="5", budget_period="day")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == FIELDS | {"key"}
    assert body["key"].startswith(body["prefix"])
    assert body["name"] == "ci"
    assert body["rpm_limit"] == 10
    assert body["budget_usd"] == "5.000000"
    assert body["budget_period"] == "day"
    assert body["spend_usd"] == "0.00000000"
    assert body["team"] is None
    assert body["revoked_at"] is None
    key = APIKey.objects.get(pk=body["id"])
    assert key.user == user
    assert "key" not in api_client.get(f"{KEYS}{body['id']}/").json()
    listed = api_client.get(KEYS).json()["results"]
    assert all(set(item) == FIELDS for item in listed)
    assert body["key"] not in str(listed)
    # The new key authenticates as the user.
    assert client_for(body["key"]).get(f"{KEYS}{body['id']}/").status_code == 200


def test_limits_left_out_stay_unset(api_client):
    body = create(api_client, name="plain").json()
    for field in (
        "allowed_models",
        "rpm_limit",
        "tpm_limit",
        "max_parallel_requests",
        "budget_usd",
        "budget_period",
    ):
        assert body[field] is None, field
    assert not Limits.objects.filter(api_key_id=body["id"]).exists()


def test_create_is_audited(api_client, user):
    key_id = create(api_client, name="audited", tpm_limit=1000).json()["id"]
    entries = AuditEntry.objects.filter(target_id=key_id).order_by("at", "id")
    assert [e.action for e in entries] == ["key.create", "limits.set"]
    assert all(e.actor == user for e in entries)
    assert entries[0].after["name"] == "audited"
    assert entries[1].before["tpm_limit"] is None
    assert entries[1].after["tpm_limit"] == 1000
    assert entries[1].request_id  # the API request's id


@pytest.mark.parametrize(
    ("mine", "asked", "field"),
    [
        ({"rpm_limit": 10}, {"rpm_limit": 11}, "rpm_limit"),
        ({"tpm_limit": 100}, {"tpm_limit": 1000}, "tpm_limit"),
        ({"max_parallel_requests": 2}, {"max_parallel_requests": 3}, "max_parallel_requests"),
        ({"budget_usd": "5"}, {"budget_usd": "5.01"}, "budget_usd"),
        (
            {"budget_usd": "5", "budget_period": "month"},
            {"budget_usd": "5", "budget_period": "day"},
            "budget_period",
        ),
        ({"allowed_models": ["gpt-4o*"]}, {"allowed_models": ["claude-*"]}, "allowed_models"),
        ({"allowed_models": ["gpt-4o*"]}, {"allowed_models": ["gpt-*"]}, "allowed_models"),
    ],
)
def test_a_key_looser_than_my_user_is_400_naming_the_field(api_client, user, mine, asked, field):
    limits_set(holder=user, changes=mine)
    response = create(api_client, name="loose", **asked)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "limits_too_loose"
    assert list(body["details"]) == [field]
    assert body["request_id"]
    assert APIKey.objects.filter(user=user).count() == 1  # only the fixture's key


@pytest.mark.parametrize(
    "asked",
    [
        {"rpm_limit": 10},
        {"rpm_limit": 3},
        {"budget_usd": "5", "budget_period": "total"},
        {"allowed_models": ["gpt-4o-mini", "gpt-4o*"]},
    ],
)
def test_a_key_as_tight_or_tighter_than_mine_is_created(api_client, user, asked):
    limits_set(
        holder=user,
        changes={"rpm_limit": 10, "budget_usd": "5", "allowed_models": ["gpt-4o*"]},
    )
    assert create(api_client, **asked).status_code == 201


def test_the_calling_keys_limits_bound_the_new_key(user, client_for):
    calling, raw = api_key_create(user=user)
    limits_set(holder=calling, changes={"rpm_limit": 5})
    response = create(client_for(raw), rpm_limit=6)
    assert response.status_code == 400
    assert "rpm_limit" in response.json()["details"]
    assert create(client_for(raw), rpm_limit=5).status_code == 201


def test_team_must_be_mine_and_bounds_the_key(api_client, user):
    team = team_create(name="research")
    other_team = team_create(name="sales")
    limits_set(holder=team, changes={"max_parallel_requests": 4})
    response = create(api_client, team=str(team.pk))
    assert response.status_code == 400
    assert "team" in response.json()["details"]
    team_member_add(team=team, user=user)
    assert create(api_client, team=str(team.pk), max_parallel_requests=5).status_code == 400
    body = create(api_client, team=str(team.pk), max_parallel_requests=4).json()
    assert body["team"] == str(team.pk)
    assert create(api_client, team=str(other_team.pk)).status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"tpm_limit": -1}, "tpm_limit"),
        ({"max_parallel_requests": "many"}, "max_parallel_requests"),
        ({"budget_usd": "-1"}, "budget_usd"),
        ({"budget_period": "year", "budget_usd": "1"}, "budget_period"),
        ({"budget_period": "day"}, "budget_period"),
        ({"allowed_models": [""]}, "allowed_models"),
        ({"allowed_models": [3]}, "allowed_models"),
        ({"allowed_models": "gpt-4o"}, "allowed_models"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"team": "not-a-uuid"}, "team"),
        ({"key": "ctx_mine"}, "key"),
    ],
)
def test_bad_input_is_400_naming_the_field(api_client, body, field):
    response = create(api_client, **body)
    assert response.status_code == 400
    assert field in response.json()["details"]


def test_a_zero_budget_is_allowed(api_client):
    assert create(api_client, budget_usd="0").json()["budget_usd"] == "0.000000"


def test_another_users_key_is_404_and_stays_untouched(api_client, staff_client):
    stranger = UserFactory()
    theirs, _raw = api_key_create(user=stranger, name="theirs")
    url = f"{KEYS}{theirs.pk}/"
    for response in (
        api_client.get(url),
        api_client.patch(url, {"name": "mine now"}, format="json"),
        api_client.delete(url),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.name == "theirs"
    assert theirs.revoked_at is None
    assert str(theirs.pk) not in str(api_client.get(KEYS).json())
    # Staff see every key.
    assert staff_client.get(url).status_code == 200
    assert str(theirs.pk) in str(staff_client.get(KEYS, {"page_size": 200}).json())


@pytest.mark.parametrize("bad_id", ["nope", "00000000-0000-0000-0000-000000000000"])
def test_unknown_ids_are_404(api_client, bad_id):
    response = api_client.get(f"{KEYS}{bad_id}/")
    assert response.status_code == 404
    assert response.json()["error"] == "No such key."


def test_patch_tightens_and_renames(api_client):
    key_id = create(
        api_client, name="a", rpm_limit=10, budget_usd="5", allowed_models=["gpt-*"]
    ).json()["id"]
    response = api_client.patch(
        f"{KEYS}{key_id}/",
        {
            "name": "b",
            "rpm_limit": 5,
            "tpm_limit": 100,
            "budget_usd": "1",
            "budget_period": "total",
            "allowed_models": ["gpt-4o"],
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["rpm_limit"], body["tpm_limit"]) == ("b", 5, 100)
    assert (body["budget_usd"], body["budget_period"]) == ("1.000000", "total")
    assert body["allowed_models"] == ["gpt-4o"]
    assert "key" not in body
    actions = AuditEntry.objects.filter(target_id=key_id).values_list("action", flat=True)
    assert sorted(actions) == ["key.create", "key.update", "limits.set", "limits.set"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rpm_limit": 11}, "rpm_limit"),
        ({"rpm_limit": None}, "rpm_limit"),
        ({"budget_usd": "6"}, "budget_usd"),
        ({"budget_usd": None}, "budget_usd"),
        ({"budget_period": "day"}, "budget_period"),
        ({"allowed_models": ["*"]}, "allowed_models"),
        ({"allowed_models": []}, "allowed_models"),
        ({"allowed_models": None}, "allowed_models"),
    ],
)
def test_patch_loosening_is_400_naming_the_field(api_client, change, field):
    key_id = create(
        api_client, rpm_limit=10, budget_usd="5", budget_period="week", allowed_models=["gpt-*"]
    ).json()["id"]
    response = api_client.patch(f"{KEYS}{key_id}/", change, format="json")
    assert response.status_code == 400
    assert list(response.json()["details"]) == [field]
    limits = Limits.objects.get(api_key_id=key_id)
    assert (limits.rpm_limit, limits.budget_usd, limits.budget_period) == (
        10,
        Decimal(5),
        "week",
    )


def test_patch_refuses_fields_it_does_not_change(api_client):
    key_id = create(api_client).json()["id"]
    response = api_client.patch(f"{KEYS}{key_id}/", {"expires_at": None}, format="json")
    assert response.status_code == 400
    assert "expires_at" in response.json()["details"]


def test_delete_revokes_the_key_at_once(api_client, client_for):
    created = create(api_client, name="to revoke").json()
    assert client_for(created["key"]).get(KEYS).status_code == 200  # cached as valid
    response = api_client.delete(f"{KEYS}{created['id']}/")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert APIKey.objects.get(pk=created["id"]).is_revoked
    assert client_for(created["key"]).get(KEYS).status_code == 401
    again = api_client.delete(f"{KEYS}{created['id']}/").json()
    assert again["revoked_at"] == response.json()["revoked_at"]
    revocations = AuditEntry.objects.filter(target_id=created["id"], action="key.revoke")
    assert revocations.count() == 1


def test_spend_counts_the_keys_interactions_in_its_period(api_client, user):
    key_id = create(api_client, budget_usd="10", budget_period="day").json()["id"]
    api_key = APIKey.objects.get(pk=key_id)
    other_key, _ = api_key_create(user=user)
    now = timezone.now()
    for cost, key, when in (
        ("0.25", api_key, now),
        ("0.50", api_key, now),
        ("7.00", api_key, now - timedelta(days=2)),  # an earlier day
        ("3.00", other_key, now),  # another key
    ):
        row = InteractionFactory(owner=user, api_key=key, cost_usd=Decimal(cost))
        type(row).objects.filter(pk=row.pk).update(created_at=when)
    body = api_client.get(f"{KEYS}{key_id}/").json()
    assert Decimal(body["spend_usd"]) == Decimal("0.75")
    expected = spend_usd(Scope("key", key_id, LimitConfig(period="day")))
    assert Decimal(body["spend_usd"]) == expected
    listed = {item["id"]: item for item in api_client.get(KEYS).json()["results"]}
    assert Decimal(listed[key_id]["spend_usd"]) == Decimal("0.75")
    # A key without a budget shows its spend of the month.
    assert Decimal(listed[str(other_key.pk)]["spend_usd"]) == spend_usd(
        Scope("key", str(other_key.pk), LimitConfig(period="month")),
        datetime.now(UTC),
    )


def test_list_query_count_does_not_grow(api_client, user, django_assert_max_num_queries):
    for _ in range(2):
        create(api_client, rpm_limit=5)
    with django_assert_max_num_queries(8) as few:
        assert len(api_client.get(KEYS).json()["results"]) == 3
    # Counted now: every request (the creations below) empties the connection's query log.
    first = len(few.captured_queries)
    for number in range(20):
        create(api_client, budget_usd="1", budget_period=["day", "week", "total"][number % 3])
    with django_assert_max_num_queries(first):
        assert len(api_client.get(KEYS).json()["results"]) == 23


def test_keys_need_a_key(anon_client):
    response = anon_client.get(KEYS)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
