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
from contextos.timing import STAGES
from tests.fakes import Reply
from tests.governance.test_enforcement import chat, limited_key, route_to


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
