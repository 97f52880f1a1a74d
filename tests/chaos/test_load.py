"""Mixed load at 50 concurrent clients: reads, cached AI calls and task submissions."""

import os

from tests.chaos.conftest import Call, Client, run_load

LOAD_SECONDS = float(os.environ.get("CHAOS_LOAD_SECONDS", "60"))
CLIENTS = 50
PROMPTS = [f"cached question {n}" for n in range(10)]


def test_mixed_load_with_no_errors(serve, chaos_key):
    base = serve(web_env={"WEB_CONCURRENCY": "2"}).base
    client = Client(base, chaos_key)
    task_ids = [
        client.post("/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {}}).body["id"]
        for _ in range(5)
    ]
    interaction_ids = []
    for prompt in PROMPTS:  # the answers the load asks for again are cached
        answer = client.post("/api/v1/ai/interactions/", {"prompt": prompt})
        assert answer.status == 201, answer.body
        interaction_ids.append(answer.body["id"])

    sleep = {"type": "diagnostics.sleep", "params": {"seconds": 0}}
    calls = [
        Call(
            "task list",
            25,
            lambda r: ("GET", "/api/v1/tasks/?page_size=20", None),
            frozenset({200}),
        ),
        Call(
            "task detail",
            15,
            lambda r: ("GET", f"/api/v1/tasks/{r.choice(task_ids)}/", None),
            frozenset({200}),
        ),
        Call(
            "interaction list",
            15,
            lambda r: ("GET", "/api/v1/ai/interactions/?page_size=20", None),
            frozenset({200}),
        ),
        Call(
            "interaction detail",
            5,
            lambda r: ("GET", f"/api/v1/ai/interactions/{r.choice(interaction_ids)}/", None),
            frozenset({200}),
        ),
        Call(
            "ai cached",
            25,
            lambda r: ("POST", "/api/v1/ai/interactions/", {"prompt": r.choice(PROMPTS)}),
            frozenset({201}),
        ),
        Call("task submit", 15, lambda r: ("POST", "/api/v1/tasks/", sleep), frozenset({202})),
    ]
    report = run_load(base, chaos_key, calls, clients=CLIENTS, seconds=LOAD_SECONDS)
    print(f"\nload: {CLIENTS} clients, {report.summary()}\n{report.per_call()}")
    assert not report.errors, [(s.name, s.status, s.body) for s in report.errors[:5]]
    cached = [s for s in report.samples if s.name == "ai cached"]
    assert cached
    assert all(s.body["cached"] for s in cached)
