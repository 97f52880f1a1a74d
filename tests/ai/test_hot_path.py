"""The gateway's hot path: where a call's time goes (``Server-Timing``), and the running
row of a budgeted call written while its provider answers, not before it is asked."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connections

from apps.ai_interactions.models import AIInteraction, InteractionStatus
from apps.governance.admission import spend_usd
from apps.governance.limits import LimitConfig, Scope
from apps.routing.models import Route
from contextos.timing import STAGES
from tests.fakes import Reply
from tests.governance.test_enforcement import chat, limited_key, route_to
from tests.routes import deploy
from tests.sql import statements_sent


def stages_of(response) -> dict[str, float]:
    stages = {}
    for part in response["Server-Timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


@pytest.fixture
def upstream(fake_openai, settings):
    settings.AI_PROVIDER_TIMEOUT = 5.0
    route_to(fake_openai)
    return fake_openai


@pytest.mark.django_db
def test_server_timing_says_where_each_call_spent_its_time(client_for, user, upstream, settings):
    settings.SERVER_TIMING = True
    _, raw = limited_key(user, budget_usd=Decimal(10), rpm_limit=100, tpm_limit=100_000)
    client = client_for(raw)
    upstream.script(Reply(delay=0.2))

    miss = chat(client, "where does the time go", cache=True)
    hit = chat(client, "where does the time go", cache=True)

    assert miss.status_code == hit.status_code == 200
    asked = stages_of(miss)
    assert set(asked) == {*STAGES, "total"}
    assert asked["provider"] >= 200  # the upstream's pause is the provider's time
    assert sum(asked[name] for name in STAGES) <= asked["total"]
    assert asked["total"] < 200 + 1000
    cached = stages_of(hit)
    assert not {"provider", "route"} & set(cached)  # answered from the cache
    assert {"auth", "parse", "limits", "cache", "record"} <= set(cached)
    assert cached["total"] < asked["total"] - 200


@pytest.mark.django_db
def test_no_server_timing_unless_it_is_asked_for(client_for, user, upstream, settings):
    settings.SERVER_TIMING = False
    _, raw = limited_key(user, budget_usd=Decimal(10))

    answered = chat(client_for(raw), "say nothing of time")

    assert answered.status_code == 200
    assert "Server-Timing" not in answered


@pytest.mark.django_db(transaction=True)
def test_a_budgeted_call_holds_its_reservation_in_the_database_while_its_provider_answers(
    client_for, user, upstream
):
    key, raw = limited_key(user, budget_usd=Decimal(10))
    scope = Scope("key", str(key.pk), LimitConfig(period="day"))
    upstream.script(Reply(delay=1.5))
    answered = {}

    def ask() -> None:
        try:
            answered["response"] = chat(client_for(raw), "a slow answer")
        finally:
            connections.close_all()

    call = threading.Thread(target=ask)

    call.start()
    running = None
    deadline = time.monotonic() + 1.2
    while running is None and time.monotonic() < deadline:
        running = AIInteraction.objects.filter(api_key=key).first()
        time.sleep(0.02)
    reserved_meanwhile = spend_usd(scope, with_reserved=True)
    call.join()

    # Seen while the provider was still answering: a spend rebuilt from PostgreSQL then
    # (Redis flushed mid-call) counts the call's worst case.
    assert running is not None
    assert running.status == InteractionStatus.RUNNING
    assert running.reserved_usd > 0
    assert reserved_meanwhile == running.reserved_usd
    assert answered["response"].status_code == 200
    (row,) = AIInteraction.objects.filter(api_key=key)  # the same row, written over
    assert row.pk == running.pk
    assert row.created_at == running.created_at
    assert row.status == InteractionStatus.SUCCEEDED
    assert row.reserved_usd == 0
    assert spend_usd(scope, with_reserved=True) == row.cost_usd > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("limits", "configured", "flushed"),
    [
        ({"budget_usd": Decimal(10)}, "", False),  # the running row is on disk already
        ({"rpm_limit": 100}, "", True),  # no running row: the outcome is the call's only record
        ({"budget_usd": Decimal(10)}, "on", True),  # DATABASE_SYNCHRONOUS_COMMIT decides
    ],
    ids=["budgeted", "unbudgeted", "configured"],
)
def test_only_an_outcome_over_a_row_already_on_disk_commits_without_waiting_for_the_flush(
    client_for, user, upstream, settings, limits, configured, flushed
):
    settings.DATABASE_SYNCHRONOUS_COMMIT = configured
    key, raw = limited_key(user, **limits)

    with statements_sent() as statements:
        response = chat(client_for(raw), "an answer worth keeping")

    assert response.status_code == 200, response.content
    table = AIInteraction._meta.db_table
    (write,) = [
        sql for sql in statements if sql.startswith((f'INSERT INTO "{table}"', f'UPDATE "{table}"'))
    ]
    assert ("synchronous_commit" not in write) is flushed
    # Seen at once by every reader, as any committed change: the outcome is there.
    (row,) = AIInteraction.objects.filter(api_key=key)
    assert row.status == InteractionStatus.SUCCEEDED
    assert row.response == response.json()["choices"][0]["message"]["content"]
    assert row.reserved_usd == 0


class RoundTrips:
    """What is sent to Redis, one list of commands per round trip (a command, or a
    pipeline); scripts by name, and marked ``sent`` when sent with their reply left to
    read later (:func:`contextos.cache.script_sent`). Metric counts (sent once a second
    under gunicorn) and cached rows' version checks, which are not a call's own, are left
    out."""

    def __init__(self, monkeypatch, scripts: dict[str, str]) -> None:
        from redis.client import Pipeline, Redis
        from redis.connection import AbstractConnection

        self.trips: list[list[str]] = []
        waited = threading.local()

        def name(args: tuple) -> str:
            command = str(args[0]).upper()
            if command == "EVALSHA":
                return scripts.get(args[1], "a script")
            if command.startswith("HINCRBY"):
                return "metrics"
            if command == "GET" and str(args[1]).endswith(":version"):
                return "version"
            return command

        execute_command, execute = Redis.execute_command, Pipeline.execute
        send_command = AbstractConnection.send_command

        def one(client, *args, **options):
            self.trips.append([name(args)])
            waited.inside = True
            try:
                return execute_command(client, *args, **options)
            finally:
                waited.inside = False

        def sent(connection, *args, **options):
            if not getattr(waited, "inside", False):
                self.trips.append([f"{name(args)} sent"])
            return send_command(connection, *args, **options)

        def pipelined(pipe, raise_on_error=True):
            self.trips.append([name(args) for args, _ in pipe.command_stack])
            return execute(pipe, raise_on_error)

        monkeypatch.setattr(Redis, "execute_command", one)
        monkeypatch.setattr(Pipeline, "execute", pipelined)
        monkeypatch.setattr(AbstractConnection, "send_command", sent)

    def of(self, call) -> list[list[str]]:
        self.trips = []
        response = call()
        assert response.status_code == 200, response.content
        return [trip for trip in self.trips if set(trip) - {"metrics", "version"}]


def script_names() -> dict[str, str]:
    from apps.ai_interactions.answer_cache import _scripts
    from apps.governance.admission import _ADMIT, _SETTLE
    from apps.routing.cooldown import _mget_script
    from contextos.cache import redis_client

    lookup, land = _scripts()
    register = redis_client().register_script
    return {
        register(_ADMIT).sha: "admit",
        register(_SETTLE).sha: "settle",
        lookup.sha: "lookup",
        land.sha: "land",
        _mget_script().sha: "states",
    }


@pytest.mark.django_db
def test_a_call_through_three_deployments_looks_up_and_reads_states_with_its_admission(
    client_for, user, upstream, monkeypatch
):
    """Round trips to Redis, once the key is known to the process: the admission, with the
    key's confirmation, the answer's lookup and the deployments' states. Then the
    settlement is sent, its reply read once the response is out, and for a miss the answer
    kept (after the response)."""
    route = Route.objects.get(name="gpt-4o")  # the upstream's, with a first deployment
    deploy(route, upstream, "second")
    deploy(route, upstream, "third")
    _, raw = limited_key(user, budget_usd=Decimal(10), rpm_limit=100, tpm_limit=100_000)
    client = client_for(raw)
    trips = RoundTrips(monkeypatch, script_names())
    # The scripts loaded; the key read (its first use written), then cached again.
    first = trips.of(lambda: chat(client, "warm", cache=True))
    chat(client, "warm", cache=True)

    miss = trips.of(lambda: chat(client, "counted", cache=True))
    hit = trips.of(lambda: chat(client, "counted", cache=True))

    key = ["GET", "INCRBY", "EXPIRE"]  # and the request counted for the rate limit
    admission = ["admit", "lookup", "states"]
    assert first[0] == key
    assert miss == [admission, ["settle sent"], ["land"]]
    assert hit == [admission, ["settle sent"]]
