"""One of two providers of a route is down for a while under load: no client notices."""

import os

from apps.routing.models import Route
from tests.chaos.conftest import Call, run_load
from tests.fakes.openai_server import FakeOpenAI
from tests.routes import deploy

OUTAGE_SECONDS = float(os.environ.get("CHAOS_ROUTING_OUTAGE_SECONDS", "30"))
CLIENTS = 20
ROUTE = "chaos-gpt"


def test_one_provider_down_for_30_s_under_20_clients_fails_no_request(serve, chaos_key):
    with FakeOpenAI() as east, FakeOpenAI() as west:
        east.default_delay = west.default_delay = 0.02
        route = Route.objects.create(name=ROUTE, strategy="weighted")
        deploy(route, east, "east", timeout=5, max_attempts=2)
        deploy(route, west, "west", timeout=5, max_attempts=2)
        env = {"WEB_CONCURRENCY": "2", "AI_RETRY_BASE_DELAY": "0.05", "AI_RETRY_MAX_DELAY": "0.2"}
        base = serve(web_env=env).base

        east.outage(OUTAGE_SECONDS)
        chat = Call(
            "routed chat",
            1,
            lambda r: (
                "POST",
                "/v1/chat/completions",
                {
                    "model": ROUTE,
                    "messages": [{"role": "user", "content": f"q {r.random()}"}],
                    "cache": False,
                },
            ),
            frozenset({200}),
        )
        report = run_load(base, chaos_key, [chat], clients=CLIENTS, seconds=OUTAGE_SECONDS)

        def calls(fake: FakeOpenAI) -> int:
            return sum(1 for r in fake.requests if r["path"] == "/v1/chat/completions")

        print(
            f"\nrouting-outage: {CLIENTS} clients, {report.summary()}; "
            f"upstream calls: east (down) {calls(east)}, west {calls(west)}"
        )
        assert report.samples
        assert not report.errors, [(s.status, s.body) for s in report.errors[:5]]
        # The dead deployment cooled down: it saw a few failures and probes, no half share.
        assert calls(east) < len(report.samples) / 10
