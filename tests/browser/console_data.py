"""A realistic data set for the staff console's pages: what a few weeks of use leave behind.

Calls made through the services (echo answers, cache hits, streams, embeddings) next to
bulk demo rows over 90 days, and the rows that stretch a page: failed calls and tasks
with long errors and tracebacks, prompts holding long unbroken text, a running task, a
batch and its interactions, revoked keys, a team with limits, routes and deployments,
Celery results and the periodic tasks.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db.models import Model
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import embedding_create, interaction_create, interaction_stream
from apps.governance.audit import audit_record
from apps.governance.services import limits_set, team_create, team_member_add
from apps.operations.demo_data import seed_interactions, seed_tasks
from apps.operations.services import periodic_tasks_setup
from apps.routing.models import Route
from apps.routing.table import ECHO_EMBEDDING_MODEL, ECHO_MODEL, routing_table, routing_table_clear
from apps.tasks.models import Task, TaskAttempt
from tests.factories import InteractionFactory, TaskFactory, UserFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.routes import deploy

USERNAMES = ("ada", "grace", "linus", "margaret", "ken", "nightly-evaluation-pipeline-service")

# Text people and providers really send: a pasted image as a data URL, a signed URL.
DATA_URL = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ" * 12
SIGNED_URL = (
    "https://storage.example.com/exports/2024/q3/customer-feedback-export.csv"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240901"
    "&X-Amz-Signature=" + "3f1c9a0b7e" * 12
)
LONG_ERROR = (
    "The provider answered 400: This model's maximum context length is 128000 tokens. "
    "However, your messages resulted in 131072 tokens (130560 in the messages, 512 in the "
    "functions). Please reduce the length of the messages or functions. "
    f"While fetching {SIGNED_URL}: request_id=req_{'a1b2c3d4e5' * 8}"
)
TRACEBACK = (
    """Traceback (most recent call last):
  File "/app/apps/tasks/execution.py", line 143, in execute
    result = task_type.run(context)
             ^^^^^^^^^^^^^^^^^^^^^^
  File "/app/apps/ai_interactions/task_types.py", line 60, in generate
    interaction_run(interaction=interaction, use_cache=context.params["cache"], final=final)
  File "/app/apps/ai_interactions/services.py", line 412, in _answered_admitted
    chunks, routed = _streamed(interaction, route)
                     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/apps/ai_interactions/providers/openai.py", line 221, in stream
    raise ProviderCallError(message, status=response.status_code, error_type="invalid_request")
apps.ai_interactions.providers.base.ProviderCallError: """
    + LONG_ERROR
)


@dataclass
class ConsoleData:
    """The rows whose detail pages are worth opening, by model (``app_label.ModelName``)."""

    shown: dict[str, list[Model]] = field(default_factory=dict)

    def show(self, *rows: Model) -> None:
        for row in rows:
            self.shown.setdefault(row._meta.label, []).append(row)


def console_data(*, admin: AbstractBaseUser, upstream: FakeOpenAI) -> ConsoleData:
    """Write the data set; ``admin`` is the staff member who changed what staff change."""
    now = timezone.now()
    users = [UserFactory(username=name) for name in USERNAMES]
    data = ConsoleData()
    _routes(data, upstream)
    keys = _governance(data, admin, users)
    _calls(data, users, keys)
    seed_interactions(count=300, owners=users)
    seed_tasks(count=150, owners=users)
    # The test run registers task types of its own (tests/tasktypes.py); staff see real ones.
    Task.objects.filter(type__startswith="test.").update(type="diagnostics.sleep")
    _tasks(data, users, keys, now)
    periodic_tasks_setup()
    operators = Group.objects.create(name="Operators")
    operators.permissions.set(Permission.objects.filter(codename__startswith="view_"))
    users[0].groups.add(operators)
    data.show(operators)
    return data


def _routes(data: ConsoleData, upstream: FakeOpenAI) -> None:
    routing_table()  # makes the built-in echo routes, as the first call on a new database does
    fast = Route.objects.create(name="gpt-4o-mini", strategy="weighted", fallbacks=[ECHO_MODEL])
    main = deploy(
        fast,
        upstream,
        "azure-east-us-2",
        model="gpt-4o-mini-2024-07-18",
        weight=3,
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
        context_window=128_000,
        rpm=500,
        tpm=200_000,
    )
    deploy(
        fast,
        upstream,
        "openai",
        model="gpt-4o-mini",
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
    )
    smart = Route.objects.create(
        name="claude-3-5-sonnet", strategy="priority", fallbacks=["gpt-4o-mini", ECHO_MODEL]
    )
    deploy(
        smart,
        upstream,
        "anthropic-proxy",
        model="claude-3-5-sonnet-20241022",
        input_price_per_mtok=Decimal("3"),
        output_price_per_mtok=Decimal("15"),
        context_window=200_000,
        enabled=False,
    )
    routing_table_clear()
    data.show(fast, main, main.provider)


def _governance(
    data: ConsoleData, admin: AbstractBaseUser, users: list[AbstractBaseUser]
) -> list[APIKey]:
    research = team_create(name="Research", actor=admin)
    support = team_create(name="Customer support", actor=admin)
    for user, role in zip(users[:3], ("admin", "member", "member"), strict=True):
        team_member_add(team=research, user=user, role=role, actor=admin)
    team_member_add(team=support, user=users[3], actor=admin)
    team_limits = limits_set(
        holder=research,
        changes={
            "allowed_models": ["gpt-4o-mini", "echo-*", "claude-3-5-sonnet"],
            "rpm_limit": 600,
            "tpm_limit": 2_000_000,
            "budget_usd": "250",
            "budget_period": "month",
        },
        actor=admin,
    )
    limits_set(holder=users[4], changes={"budget_usd": "5", "budget_period": "day"}, actor=admin)

    keys = []
    for number, user in enumerate(users):
        team = research if number < 3 else None
        key, _ = api_key_create(user=user, name=f"{user.username} laptop", team=team, actor=admin)
        keys.append(key)
    ci_key, _ = api_key_create(
        user=users[5], name="CI evaluation runner (nightly, all models)", actor=admin
    )
    limits_set(
        holder=ci_key,
        changes={"rpm_limit": 60, "tpm_limit": 100_000, "max_parallel_requests": 4},
        actor=admin,
    )
    revoked, _ = api_key_create(user=users[1], name="leaked in a notebook", actor=admin)
    api_key_revoke(api_key=revoked, actor=admin)
    old, _ = api_key_create(user=users[2], name="hackathon", expires_in_days=1, actor=admin)
    APIKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=3))
    audit_record(
        action="key.update",
        target=ci_key,
        actor=admin,
        before={"name": "ci", "expires_at": None},
        after={"name": ci_key.name, "note": f"rotated after the export {SIGNED_URL} leaked"},
        request_id=uuid.uuid4().hex,
    )
    data.show(research, team_limits, ci_key, revoked, users[1])
    return [*keys, ci_key]


def _calls(data: ConsoleData, users: list[AbstractBaseUser], keys: list[APIKey]) -> None:
    """Calls through the services, as the API makes them (echo answers at once)."""
    topics = ("refund policy", "shipping delays", "password reset", "invoice #2024-0915")
    for number in range(40):
        user, key = users[number % 5], keys[number % 5]
        prompt = f"Draft a short reply about the {topics[number % len(topics)]}."
        interaction_create(
            owner=user,
            api_key=key,
            messages=[{"role": "user", "content": prompt}],
            metadata={"tags": ["support", f"agent-{number % 3}"]},
        )
    for number in range(5):
        embedding = embedding_create(
            owner=users[number],
            api_key=keys[number],
            model_name=ECHO_EMBEDDING_MODEL,
            params={"input": [f"customer ticket {number}", "order status"]},
        )
    for number in range(5):
        _, chunks = interaction_stream(
            owner=users[number],
            api_key=keys[number],
            messages=[{"role": "user", "content": f"Stream a haiku about queue #{number}"}],
        )
        for _ in chunks:
            pass
    pasted = interaction_create(
        owner=users[0],
        api_key=keys[0],
        messages=[
            {"role": "system", "content": "You describe images for accessibility."},
            {"role": "user", "content": f"Describe this screenshot: {DATA_URL}"},
        ],
    )
    failed = InteractionFactory(
        owner=users[5],
        api_key=keys[5],
        status="failed",
        provider="azure-east-us-2",
        model="gpt-4o-mini",
        deployment="azure-east-us-2/gpt-4o-mini-2024-07-18",
        fallback=True,
        messages=[{"role": "user", "content": f"Summarize the export at {SIGNED_URL}"}],
        prompt=f"Summarize the export at {SIGNED_URL}",
        response="",
        error={"message": LONG_ERROR, "type": "invalid_request", "provider_status": 400},
        provider_error_type="invalid_request",
        provider_status=400,
        attempts=[
            {
                "deployment": "azure-east-us-2/gpt-4o-mini-2024-07-18",
                "status": 400,
                "error": LONG_ERROR,
                "latency_ms": 412.5,
            },
            {"deployment": "openai/gpt-4o-mini", "status": 503, "error": "Service Unavailable"},
        ],
        input_tokens=131_072,
        latency_ms=1830.2,
        tags=["nightly-eval", "long-context"],
        metadata={"tags": ["nightly-eval", "long-context"], "run": "2024-09-15T02:00:00Z"},
        started_at=timezone.now(),
        completed_at=timezone.now(),
    )
    for number in range(12):
        InteractionFactory(
            owner=users[number % 6],
            status="failed",
            provider="openai",
            model="gpt-4o-mini",
            deployment="openai/gpt-4o-mini",
            response="",
            error={"message": f"The provider answered 429: Rate limit reached. {LONG_ERROR}"},
            provider_error_type="rate_limited",
            provider_status=429,
            latency_ms=95.0 + number,
        )
    data.show(failed, pasted, embedding)


def _tasks(data: ConsoleData, users: list[AbstractBaseUser], keys: list[APIKey], now) -> None:
    failed = TaskFactory(
        owner=users[5],
        api_key=keys[5],
        type="ai.generate",
        params={"interaction_id": str(uuid.uuid4()), "cache": True},
        status="failed",
        attempt=2,
        progress={"current": 0, "total": 1, "percent": 0.0, "message": "Asking the provider"},
        error={"message": LONG_ERROR, "type": "ProviderCallError"},
        error_traceback=TRACEBACK,
        worker="celery@worker-2.prod.internal",
        started_at=now - timedelta(minutes=12),
        finished_at=now - timedelta(minutes=11),
        heartbeat_at=now - timedelta(minutes=11),
    )
    TaskAttempt.objects.create(
        task=failed,
        number=1,
        status="failed",
        error={"message": "The provider answered 503", "type": "ProviderUnavailable"},
        error_traceback=TRACEBACK,
        celery_task_id=str(uuid.uuid4()),
        started_at=now - timedelta(minutes=40),
        finished_at=now - timedelta(minutes=39),
    )
    running = TaskFactory(
        owner=users[0],
        type="diagnostics.sleep",
        params={"seconds": 600, "steps": 20},
        status="running",
        progress={"current": 7, "total": 20, "percent": 35.0, "message": "Slept step 7 of 20"},
        worker="celery@worker-1.prod.internal",
        started_at=now - timedelta(minutes=3),
        heartbeat_at=now,
    )
    TaskFactory(owner=users[1], type="diagnostics.sleep", status="queued")
    TaskFactory(
        owner=users[2],
        status="cancelled",
        cancel_requested_at=now - timedelta(hours=1),
        started_at=now - timedelta(hours=1, minutes=2),
        finished_at=now - timedelta(hours=1),
    )
    prompts = [
        "Classify the ticket: my parcel never arrived",
        "Classify the ticket: charged twice for one order",
        f"Classify the ticket: the link {SIGNED_URL} is broken",
    ]
    batch = TaskFactory(
        owner=users[5],
        api_key=keys[5],
        type="ai.batch",
        params={"prompts": prompts, "model": ECHO_MODEL, "cache": True},
        status="succeeded",
        progress={"current": 3, "total": 3, "percent": 100.0, "message": "3 of 3 prompts answered"},
        worker="celery@worker-1.prod.internal",
        started_at=now - timedelta(minutes=30),
        finished_at=now - timedelta(minutes=29),
    )
    results = []
    for index, prompt in enumerate(prompts):
        ok = index < 2
        interaction = InteractionFactory(
            owner=users[5],
            api_key=keys[5],
            task=batch,
            mode="batch",
            status="succeeded" if ok else "failed",
            messages=[{"role": "user", "content": prompt}],
            prompt=prompt,
            response=f"Echo: {prompt}" if ok else "",
            error=None if ok else {"message": LONG_ERROR, "type": "invalid_request"},
            metadata={"task_id": str(batch.pk), "index": index},
            input_tokens=12,
            output_tokens=14 if ok else 0,
            latency_ms=3.5,
        )
        results.append({"id": str(interaction.pk), "status": interaction.status})
    Task.objects.filter(pk=batch.pk).update(result={"interactions": results, "failed": 1})

    for task, status, result, traceback in (
        (
            failed,
            "FAILURE",
            {"exc_type": "ProviderCallError", "exc_message": [LONG_ERROR]},
            TRACEBACK,
        ),
        (batch, "SUCCESS", {"interactions": results, "failed": 1}, ""),
        (running, "STARTED", {"pid": 4242, "hostname": "celery@worker-1.prod.internal"}, ""),
    ):
        TaskResult.objects.create(
            task_id=task.celery_task_id,
            task_name="tasks.execute",
            task_args=json.dumps([str(task.pk), task.celery_task_id]),
            task_kwargs="{}",
            status=status,
            worker=task.worker,
            content_type="application/json",
            content_encoding="utf-8",
            result=json.dumps(result),
            traceback=traceback,
            date_done=now,
        )
    for task in (failed, running, batch):
        Task.objects.filter(pk=task.pk).update(created_at=task.started_at - timedelta(seconds=2))
    data.show(failed, running, batch, AIInteraction.objects.filter(task=batch).last())
    data.show(TaskResult.objects.get(task_id=failed.celery_task_id))
