"""Task types that exist only in the tests (loaded through TASK_TYPE_MODULES)."""

import os
import time
from typing import Any

from django.core.cache import cache

from apps.tasks.execution import TaskContext
from apps.tasks.registry import register

OPEN_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False}
SLEEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 0}},
    "additionalProperties": False,
}


class FlakyError(Exception):
    pass


class TransientError(Exception):
    pass


def effect_key(task_id) -> str:
    return f"test:effect:{task_id}"


def count(task_id) -> int:
    key = effect_key(task_id)
    cache.add(key, 0, timeout=3600)
    return cache.incr(key)


@register("test.flaky", description="Fails on its first attempt only.", params_schema=OPEN_SCHEMA)
def flaky(context: TaskContext) -> dict[str, int]:
    if context.attempt == 1:
        raise FlakyError("First attempts always fail.")
    return {"attempt": context.attempt}


@register(
    "test.effect",
    description="Sleeps, then counts its effect once per completed run.",
    params_schema=SLEEP_SCHEMA,
)
def effect(context: TaskContext) -> dict[str, int]:
    sleep_in_steps(context, 10)
    return {"effects": count(context.task_id)}


def sleep_in_steps(context: TaskContext, steps: int) -> None:
    for step in range(1, steps + 1):
        context.sleep(context.params["seconds"] / steps)
        context.progress(step, steps)


def runs_key(task_id) -> str:
    return f"test:runs:{task_id}"


def record_run(task_id) -> int:
    """Append this process's id to the task's completed runs; return how many there are."""
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    key = cache.make_key(runs_key(task_id))
    runs = redis.rpush(key, os.getpid())
    redis.expire(key, 3600)
    return runs


def completed_runs(task_id) -> list[int]:
    """The process ids of the task's completed runs, in order."""
    from django_redis import get_redis_connection

    key = cache.make_key(runs_key(task_id))
    return [int(pid) for pid in get_redis_connection("default").lrange(key, 0, -1)]


@register(
    "test.recorded_sleep",
    description="Sleeps in steps like diagnostics.sleep, then records which process completed it.",
    params_schema=SLEEP_SCHEMA,
)
def recorded_sleep(context: TaskContext) -> dict[str, int]:
    sleep_in_steps(context, 5)
    return {"runs": record_run(context.task_id)}


@register(
    "test.transient",
    description="Raises a transient error on its first two runs.",
    params_schema=OPEN_SCHEMA,
    transient_errors=(TransientError,),
    retry_backoff_seconds=0.2,
)
def transient(context: TaskContext) -> dict[str, int]:
    runs = count(context.task_id)
    if runs < 3:
        raise TransientError(f"Transient failure number {runs}.")
    return {"runs": runs}


@register(
    "test.stubborn",
    description="Sleeps without ever reaching a checkpoint.",
    params_schema=SLEEP_SCHEMA,
)
def stubborn(context: TaskContext) -> None:
    time.sleep(context.params["seconds"])


@register(
    "test.staff_only",
    description="Only staff may submit this.",
    params_schema=OPEN_SCHEMA,
    staff_only=True,
)
def staff_only(context: TaskContext) -> str:
    return "done"


@register("test.owner", description="Answers its owner's username.", params_schema=OPEN_SCHEMA)
def owner(context: TaskContext) -> str:
    return context.owner.get_username()
