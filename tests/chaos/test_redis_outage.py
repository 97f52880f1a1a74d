"""Redis (cache and broker of the web server and the worker) stopped for a while under load."""

import os
import time

from django.utils import timezone

from apps.tasks.models import Task, TaskStatus
from tests.chaos.conftest import (
    Answer,
    Call,
    Client,
    finish_with_recovery,
    is_error_body,
    outage_under_load,
)

OUTAGE_SECONDS = float(os.environ.get("CHAOS_REDIS_OUTAGE_SECONDS", "10"))
# Messages a worker had taken but not acknowledged when Redis went away come back
# after the visibility timeout: short here, so that the test sees them through.
WORKER_ENV = {
    "CELERY_VISIBILITY_TIMEOUT": "20",
    "CELERY_TASK_TIME_LIMIT": "15",
    "CELERY_TASK_SOFT_TIME_LIMIT": "12",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "CELERY_UNACKED_RESTORE_THROTTLE": "1",
}
BROKER_DOWN_CODES = {"broker_unavailable", "service_unavailable"}


def refused_clearly(answer: Answer) -> bool:
    """A 503 in the error format, saying the broker is down."""
    return (
        answer.status == 503 and is_error_body(answer) and answer.body["code"] in BROKER_DOWN_CODES
    )


def test_redis_down_for_a_while_under_load(serve, chaos_key):
    services = serve(worker_env=WORKER_ENV)
    client = Client(services.base, chaos_key)
    first = client.post("/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {}})
    interaction = client.post("/api/v1/ai/interactions/", {"prompt": "before the outage"})
    assert (first.status, interaction.status) == (202, 201)
    task_path = f"/api/v1/tasks/{first.body['id']}/"
    sleep = {"type": "diagnostics.sleep", "params": {"seconds": 0.05, "steps": 1}}
    calls = [
        Call("live", 1, lambda r: ("GET", "/api/v1/health/live", None), frozenset({200})),
        Call(
            "task list", 2, lambda r: ("GET", "/api/v1/tasks/?page_size=20", None), frozenset({200})
        ),
        Call("task detail", 2, lambda r: ("GET", task_path, None), frozenset({200})),
        Call(
            "interaction list",
            2,
            lambda r: ("GET", "/api/v1/ai/interactions/?page_size=20", None),
            frozenset({200}),
        ),
        Call(
            "ai sync",
            1,
            lambda r: ("POST", "/api/v1/ai/interactions/", {"prompt": f"q{r.randrange(5)}"}),
            frozenset({201}),
        ),
        Call(
            "task submit",
            2,
            lambda r: ("POST", "/api/v1/tasks/", sleep),
            frozenset({202}),
            tolerated=refused_clearly,
        ),
    ]
    back_wall = []
    outage = outage_under_load(
        services.base,
        chaos_key,
        calls,
        seconds=OUTAGE_SECONDS,
        begin=services.redis.stop,
        end=lambda: (services.redis.start(), back_wall.append(timezone.now())),
        settle=lambda: time.sleep(5),
        warmup=3,
    )
    report = outage.report

    # Tasks accepted (2xx) at any time, outage included, all run.
    submitted = [s for s in report.samples if s.name == "task submit" and s.status == 202]
    accepted = [s.body["id"] for s in submitted]
    accepted_while_down = len(outage.during(submitted))
    tasks = Task.objects.filter(pk__in=accepted)
    republished = finish_with_recovery(
        tasks.exclude(status=TaskStatus.SUCCEEDED), services.redis.broker_url, timeout=120
    )
    assert set(tasks.values_list("status", flat=True)) == {TaskStatus.SUCCEEDED}
    all_done_after = time.monotonic() - outage.ended
    # The worker took work again by itself.
    first_finish = tasks.filter(finished_at__gt=back_wall[0]).order_by("finished_at").first()
    resumed_after = (first_finish.finished_at - back_wall[0]).total_seconds()

    refused = report.of("tolerated")
    print(
        f"\nredis-outage: {OUTAGE_SECONDS:g} s down; {report.summary()}; "
        f"{len(accepted)} tasks accepted ({accepted_while_down} while Redis was down), "
        f"all succeeded {all_done_after:.1f} s after Redis returned "
        f"({republished} lost messages published again by recovery); "
        f"{len(refused)} submissions refused with 503; "
        f"/ready 503 x{sum(a.status == 503 for a in outage.readiness)}; "
        f"worker working again {resumed_after:.1f} s after Redis returned"
    )
    assert resumed_after < 60
    assert accepted_while_down > 0
    statuses = report.statuses()
    assert not report.errors, [(s.name, s.status, s.body) for s in report.errors[:5]]
    assert not any(s.status >= 500 and s.outcome != "tolerated" for s in report.samples)
    for name, ok in [
        ("live", 200),
        ("task list", 200),
        ("task detail", 200),
        ("interaction list", 200),
        ("ai sync", 201),
    ]:
        assert any(s.name == name and s.status == ok for s in outage.during(report.samples))
        assert statuses[(name, ok)] > 0, name
    # Readiness says what is down, within its deadline, every time.
    assert outage.readiness
    for answer in outage.readiness:
        assert answer.status == 503, answer
        assert answer.seconds < 3.0
        assert answer.body["status"] == "unavailable"
        assert answer.body["checks"]["cache"]["status"] == "error"
        assert answer.body["checks"]["broker"]["status"] == "error"
        assert answer.body["checks"]["database"]["status"] == "ok"
    assert Client(services.base).get("/api/v1/health/ready").status == 200
