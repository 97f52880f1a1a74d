"""`manage.py purge`: old finished records go in batches, new and unfinished ones stay."""

import io
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.ai_interactions.answer_cache import response_cache_key
from apps.ai_interactions.models import AIInteraction, InteractionStatus
from apps.ai_interactions.services import interaction_create
from apps.tasks.models import Task, TaskAttempt, TaskStatus
from apps.tasks.services import task_submit
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.django_db


def purge(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("purge", *args, stdout=out)
    return out.getvalue().splitlines()


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def make_task(user, *, status: str, age_days: float) -> Task:
    task, _ = task_submit(owner=user, type_name="diagnostics.sleep", params={})
    Task.objects.filter(pk=task.pk).update(status=status, created_at=days_ago(age_days))
    return task


def ask(user, prompt: str, *, age_days: float, status: str | None = None) -> AIInteraction:
    interaction = interaction_create(owner=user, messages=[{"role": "user", "content": prompt}])
    fields = {"created_at": days_ago(age_days)} | ({"status": status} if status else {})
    AIInteraction.objects.filter(pk=interaction.pk).update(**fields)
    return interaction


def make_result(task_id: str, *, age_days: float) -> TaskResult:
    result = TaskResult.objects.create(task_id=task_id, status="SUCCESS", task_name="x")
    TaskResult.objects.filter(pk=result.pk).update(date_done=days_ago(age_days))
    return result


@pytest.fixture
def records(user):
    """Old and new tasks, interactions (with cached answers) and Celery results."""
    old_succeeded = make_task(user, status=TaskStatus.SUCCEEDED, age_days=40)
    TaskAttempt.objects.create(
        task=old_succeeded, number=1, status=TaskStatus.FAILED, celery_task_id="first"
    )
    old = {
        "tasks": {
            old_succeeded.pk,
            make_task(user, status=TaskStatus.FAILED, age_days=31).pk,
            make_task(user, status=TaskStatus.CANCELLED, age_days=35).pk,
        },
        # Two old interactions from one prompt: one cached answer, counted once.
        "interactions": {
            ask(user, "only asked long ago", age_days=40).pk,
            ask(user, "only asked long ago", age_days=39).pk,
            ask(user, "asked long ago and again today", age_days=40).pk,
        },
        "results": {make_result("old-1", age_days=31).pk, make_result("old-2", age_days=60).pk},
    }
    kept_interaction = ask(user, "asked long ago and again today", age_days=0)
    AIInteraction.objects.filter(pk=kept_interaction.pk).update(task=old_succeeded)
    new = {
        "tasks": {
            make_task(user, status=TaskStatus.SUCCEEDED, age_days=29).pk,
            make_task(user, status=TaskStatus.RUNNING, age_days=60).pk,
            make_task(user, status=TaskStatus.QUEUED, age_days=60).pk,
        },
        "interactions": {
            kept_interaction.pk,
            ask(user, "asked yesterday", age_days=1).pk,
            ask(user, "still running", age_days=60, status=InteractionStatus.RUNNING).pk,
        },
        "results": {make_result("new", age_days=29).pk},
    }
    return old, new


def answer_key(prompt: str) -> str:
    digest = AIInteraction.objects.filter(prompt=prompt).values_list("prompt_hash", flat=True)[0]
    return response_cache_key(digest)


def existing() -> dict[str, set]:
    return {
        "tasks": set(Task.objects.values_list("pk", flat=True)),
        "interactions": set(AIInteraction.objects.values_list("pk", flat=True)),
        "results": set(TaskResult.objects.values_list("pk", flat=True)),
    }


EXPECTED_TABLE = [
    "tasks         3 tasks, 1 attempt",
    "interactions  3 interactions, 1 cached answer",
    "results       2 results",
]


def test_dry_run_counts_and_removes_nothing_then_purge_removes_exactly_the_old(records):
    old, new = records
    cache.set("unrelated:key", "stays", timeout=60)
    keys = {
        prompt: answer_key(prompt)
        for prompt in ("only asked long ago", "asked long ago and again today", "asked yesterday")
    }
    assert all(cache.get(key) is not None for key in keys.values())
    before = existing()

    dry = purge("--older-than", "30d", "--dry-run", "--batch-size", "1")
    assert dry[0].startswith("Dry run, nothing deleted: records created before ")
    assert dry[0].endswith(" UTC (older than 30d).")
    assert dry[1:] == ["KIND          WOULD REMOVE", *EXPECTED_TABLE]
    assert existing() == before
    assert all(cache.get(key) is not None for key in keys.values())

    done = purge("--older-than", "30d", "--batch-size", "1")
    assert done[0].startswith("Records created before ")
    assert done[1:] == ["KIND          REMOVED", *EXPECTED_TABLE]
    assert existing() == {kind: before[kind] - old[kind] for kind in before}
    assert all(new[kind] <= existing()[kind] for kind in new)
    assert not TaskAttempt.objects.exists()
    # The answer only the purged interactions used is gone; answers still used stay.
    assert cache.get(keys["only asked long ago"]) is None
    assert cache.get(keys["asked long ago and again today"]) is not None
    assert cache.get(keys["asked yesterday"]) is not None
    assert cache.get("unrelated:key") == "stays"
    # An interaction made by a purged task stays, no longer linked to it.
    assert AIInteraction.objects.get(prompt="asked long ago and again today").task is None

    again = purge("--older-than", "30d")
    assert again[1:] == [
        "KIND          REMOVED",
        "tasks         0 tasks, 0 attempts",
        "interactions  0 interactions, 0 cached answers",
        "results       0 results",
    ]


def test_what_limits_the_purge_to_one_kind(records):
    old, _ = records
    before = existing()
    assert purge("--older-than", "720h", "--what", "results")[1:] == [
        "KIND     REMOVED",
        "results  2 results",
    ]
    assert existing() == before | {"results": before["results"] - old["results"]}


def test_hours_and_minutes_count_from_now(user):
    task = make_task(user, status=TaskStatus.SUCCEEDED, age_days=0)
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(minutes=100))
    assert purge("--older-than", "2h", "--what", "tasks")[-1] == "tasks  0 tasks, 0 attempts"
    assert purge("--older-than", "90m", "--what", "tasks")[-1] == "tasks  1 task, 0 attempts"
    assert not Task.objects.exists()


@pytest.mark.parametrize("age", ["30", "30x", "0d", "-5d", "d", "", "1.5d", "30 d", "99999999d"])
def test_a_bad_age_is_refused_with_the_reason(records, age):
    before = existing()
    with pytest.raises(CommandError, match=r"--older-than .* (is not an age|reaches before)"):
        purge(f"--older-than={age}")
    assert existing() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30d", "--what", "users"], "invalid choice: 'users'"),
        (["--older-than", "30d", "--batch-size", "0"], "invalid positive value"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_bad_options_are_refused(args, message):
    with pytest.raises(CommandError, match=message):
        purge(*args)


def test_from_the_command_line_a_bad_age_exits_non_zero_with_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "purge", "--older-than", "soon"],
        cwd=ROOT,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "CommandError: --older-than 'soon' is not an age: use a positive whole number of "
        "days, hours or minutes, such as 30d, 12h or 90m."
    ]
