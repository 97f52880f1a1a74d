"""PostgreSQL unreachable from the web server (its link cut), then back."""

import os
import time

from tests.chaos.conftest import Answer, Call, Client, is_error_body, outage_under_load, wait_for

OUTAGE_SECONDS = float(os.environ.get("CHAOS_DATABASE_OUTAGE_SECONDS", "10"))
# An answer while PostgreSQL is away must come within a few seconds, not hang.
PROMPT_SECONDS = 5.0


def refused_clearly(answer: Answer) -> bool:
    return answer.status == 503 and is_error_body(answer, "database_unavailable")


def test_database_unreachable_then_back(postgres_link, start_web, chaos_key):
    from django.db import connection

    database = connection.settings_dict["NAME"]
    base = start_web(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{postgres_link.port}/{database}",
        API_RATE_LIMIT="1000000/min",
    )
    client = Client(base, chaos_key)
    task = client.post("/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {}})
    assert task.status == 202, task.body
    task_path = f"/api/v1/tasks/{task.body['id']}/"
    calls = [
        Call("live", 1, lambda r: ("GET", "/api/v1/health/live", None), frozenset({200})),
        Call(
            "task list",
            2,
            lambda r: ("GET", "/api/v1/tasks/?page_size=20", None),
            frozenset({200}),
            tolerated=refused_clearly,
        ),
        Call(
            "task detail",
            2,
            lambda r: ("GET", task_path, None),
            frozenset({200}),
            tolerated=refused_clearly,
        ),
        Call(
            "ai sync",
            1,
            lambda r: ("POST", "/api/v1/ai/interactions/", {"prompt": f"q{r.randrange(5)}"}),
            frozenset({201}),
            tolerated=refused_clearly,
        ),
        Call(
            "task submit",
            1,
            lambda r: ("POST", "/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {}}),
            frozenset({202}),
            tolerated=refused_clearly,
        ),
    ]
    restored_at: list[float] = []
    recovered_after: list[float] = []

    def restore() -> None:
        postgres_link.restore()
        restored_at.append(time.monotonic())

    def serving() -> bool:
        return all(
            answer.status in (200, 202)
            for answer in (
                client.get("/api/v1/tasks/?page_size=5"),
                client.post("/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {}}),
                Client(base).get("/api/v1/health/ready"),
            )
        )

    def serving_again() -> None:
        """Wait, while the load goes on, until the same web process serves again."""
        wait_for(serving, timeout=30, interval=0.2, message="the web server never recovered")
        recovered_after.append(time.monotonic() - restored_at[0])
        time.sleep(2)

    outage = outage_under_load(
        base,
        chaos_key,
        calls,
        seconds=OUTAGE_SECONDS,
        begin=postgres_link.cut,
        end=restore,
        settle=serving_again,
    )
    report = outage.report
    refused = report.of("tolerated")
    print(
        f"\ndatabase-outage: {OUTAGE_SECONDS:g} s unreachable; {report.summary()}; "
        f"{len(refused)} answered 503 database_unavailable (slowest "
        f"{max((s.seconds for s in refused), default=0):.2f} s); "
        f"/ready 503 x{sum(a.status == 503 for a in outage.readiness)}; "
        f"serving again {recovered_after[0]:.1f} s after PostgreSQL returned, same process"
    )
    assert not report.errors, [(s.name, s.status, s.body) for s in report.errors[:5]]
    assert refused, "no request met the outage"
    assert max(s.seconds for s in refused) < PROMPT_SECONDS
    for answer in outage.readiness:
        assert answer.status == 503, answer
        assert answer.seconds < 3.0
        assert answer.body["checks"]["database"]["status"] == "error"
        assert answer.body["checks"]["cache"]["status"] == "ok"
