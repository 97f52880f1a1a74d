"""Workers SIGKILLed (their whole process group) while they run tasks: every task still
succeeds, and none completes twice."""

import os
import signal
import threading
import time

from apps.tasks.models import Task, TaskStatus
from tests.chaos.conftest import QUEUE, Client, finish_with_recovery, process_group, wait_for
from tests.tasktypes import completed_runs

TASKS = 200
KILLS = 2
# Redelivery of a killed worker's messages within seconds instead of an hour; the time
# limits stay under the visibility timeout, as the settings test requires.
FAST_RECOVERY = {
    "CELERY_VISIBILITY_TIMEOUT": "8",
    "CELERY_TASK_TIME_LIMIT": "6",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "CELERY_UNACKED_RESTORE_THROTTLE": "1",
}


def submit_all(base: str, key: str, count: int, connections: int = 8) -> list[str]:
    """Submit ``count`` tasks through the API over ``connections`` connections; their ids."""
    ids: list[str] = []
    refused: list[object] = []
    lock = threading.Lock()

    def submit(share: int) -> None:
        client = Client(base, key)
        for _ in range(share):
            # test.recorded_sleep: diagnostics.sleep's twin (sleeps in steps, reporting
            # progress) that records in Redis which process completed each run.
            body = {"type": "test.recorded_sleep", "params": {"seconds": 0.5}}
            answer = client.post("/api/v1/tasks/", body)
            with lock:
                if answer.status == 202:
                    ids.append(answer.body["id"])
                else:
                    refused.append((answer.status, answer.body))
        client.close()

    threads = [
        threading.Thread(target=submit, args=(count // connections,)) for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not refused, refused[:3]
    return ids


def messages_of(server, rows: list[dict]) -> dict[str, str]:
    """Where each row's Celery message is in the broker: queued, unacked or nowhere."""
    import redis

    client = redis.Redis.from_url(server.broker_url)
    queued = b"".join(client.lrange(QUEUE, 0, -1))
    unacked = b"".join(client.hvals("unacked"))
    return {
        row["celery_task_id"]: "queued"
        if row["celery_task_id"].encode() in queued
        else "unacked"
        if row["celery_task_id"].encode() in unacked
        else "nowhere"
        for row in rows
    }


def test_worker_killed_twice_while_running_200_tasks(serve, chaos_key):
    started = time.monotonic()
    # The tests' own cache, where the task type records its runs.
    services = serve(own_cache=False, workers=0)

    def worker():
        return services.worker(concurrency=4, **FAST_RECOVERY)

    current = worker()
    ids = submit_all(services.base, chaos_key, TASKS)
    assert len(ids) == TASKS
    tasks = Task.objects.filter(pk__in=ids)

    killed: set[int] = set()
    running_when_killed = 0
    for kill in range(1, KILLS + 1):
        # Kill once a share of the work is done, while tasks run.
        wait_for(
            lambda kill=kill: (
                tasks.filter(status=TaskStatus.SUCCEEDED).count() >= TASKS * kill // (KILLS + 2)
                and tasks.filter(status=TaskStatus.RUNNING).exists()
            ),
            timeout=120,
            interval=0.05,
            message=f"no progress before kill {kill}",
        )
        killed |= process_group(current.process.pid)
        os.killpg(current.process.pid, signal.SIGKILL)  # the whole worker, children included
        current.process.wait()
        running_when_killed += tasks.filter(status=TaskStatus.RUNNING).count()
        current = worker()

    republished = finish_with_recovery(
        tasks.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]),
        services.redis.broker_url,
        timeout=240,
        describe=lambda rows: (
            f"{rows[:5]}; their messages in the broker: {messages_of(services.redis, rows)}"
        ),
    )

    succeeded = tasks.filter(status=TaskStatus.SUCCEEDED).count()
    runs = {task_id: completed_runs(task_id) for task_id in ids}
    # A run may complete its work and be killed before its outcome is written: then the
    # task runs again (at least once, as promised). Any other second run is a duplicate.
    rerun_after_kill = sum(1 for pids in runs.values() if len(pids) > 1)
    duplicates = {
        task_id: pids
        for task_id, pids in runs.items()
        if len(pids) != 1 and not set(pids[:-1]) <= killed
    }
    print(
        f"\nworker-kill: {succeeded}/{TASKS} succeeded, {len(duplicates)} duplicates, "
        f"{KILLS} kills ({running_when_killed} tasks running when killed, "
        f"{rerun_after_kill} run again after completing in a killed process, "
        f"{republished} lost messages published again by recovery), "
        f"{time.monotonic() - started:.1f} s"
    )
    assert {row.status for row in tasks} == {TaskStatus.SUCCEEDED}
    assert not duplicates
    assert all(pids for pids in runs.values())
    assert all(row.result == {"runs": len(runs[str(row.pk)])} for row in tasks)
