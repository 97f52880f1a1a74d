"""Task types of the AI domain: async interactions (internal) and batches."""

from typing import Any

from django.conf import settings
from django.db.models import Func, IntegerField, Sum
from django.db.models.functions import Coalesce

from apps.ai_interactions.catalog import route_get
from apps.ai_interactions.models import AIInteraction, InteractionMode, InteractionStatus
from apps.ai_interactions.providers.base import ProviderCallError
from apps.ai_interactions.services import GENERATE_TASK_TYPE, interaction_create, interaction_run
from apps.governance.limits import check_model, scopes_for
from apps.tasks.execution import TaskContext, TaskFailure
from apps.tasks.registry import register
from apps.tasks.selectors import task_list
from apps.tasks.services import ACTIVE_STATUSES, LIMIT_RETRY_AFTER_SECONDS
from contextos.exceptions import TooManyRequests

PARAMS_SCHEMA = {
    "type": "object",
    "properties": {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
    },
    "additionalProperties": False,
}


class ProviderUnavailable(Exception):
    """A retryable provider failure: the task tries again later, with backoff."""


class AllPromptsFailed(TaskFailure):
    """Not one prompt of a batch was answered: the batch fails, its result still listing them."""


@register(
    GENERATE_TASK_TYPE,
    description="Answer one asynchronous AI interaction.",
    params_schema={
        "type": "object",
        "properties": {
            "interaction_id": {"type": "string", "format": "uuid"},
            "cache": {"type": "boolean", "default": True},
        },
        "required": ["interaction_id"],
        "additionalProperties": False,
    },
    internal=True,
    idempotent=True,
    transient_errors=(ProviderUnavailable,),
    max_auto_retries=5,
    retry_backoff_seconds=5.0,
    retry_backoff_max_seconds=120.0,
)
def generate(context: TaskContext) -> dict[str, Any]:
    interaction = AIInteraction.objects.get(pk=context.params["interaction_id"])
    if interaction.status == InteractionStatus.SUCCEEDED:
        return {"interaction_id": str(interaction.pk), "status": interaction.status}
    # With retries left, a retryable failure leaves the row queued, not failed.
    final = context.retries_left == 0
    try:
        interaction_run(interaction=interaction, use_cache=context.params["cache"], final=final)
    except ProviderCallError as error:
        if error.retryable and not final:
            raise ProviderUnavailable(error.message) from error
        raise
    return {"interaction_id": str(interaction.pk), "status": interaction.status}


class JSONArrayLength(Func):
    function = "jsonb_array_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, function="json_array_length", **extra)


def batch_admit(*, params: dict[str, Any], owner: Any, api_key: Any) -> None:
    """A batch for a model its key or user may not call is refused when submitted (403),
    before any prompt is asked. So is one that would give a non-staff user more than
    ``TASKS_MAX_BATCH_PROMPTS_PER_USER`` prompts in queued or running batches (429
    ``too_many_batch_prompts``): submissions and retries call this in the owner's turn
    (apps.tasks.services.owner_lock), so racing batches cannot pass the cap together.
    """
    check_model(scopes_for(api_key=api_key, user=owner), route_get(params.get("model")).name)
    if owner.is_staff:
        return
    cap = settings.TASKS_MAX_BATCH_PROMPTS_PER_USER
    # A non-staff user sees only their own tasks; the few active ones, by the owner index.
    in_flight = (
        task_list(user=owner, type_name="ai.batch")
        .filter(status__in=ACTIVE_STATUSES)
        .aggregate(prompts=Coalesce(Sum(JSONArrayLength("params__prompts")), 0))["prompts"]
    )
    requested = len(params["prompts"])
    if in_flight + requested > cap:
        raise TooManyRequests(
            f"This batch's {requested} prompts and the {in_flight} of the owner's queued or "
            f"running batches would be more than the {cap} allowed; try again when some have "
            "finished.",
            code="too_many_batch_prompts",
            details={
                "limit": cap,
                "in_flight": in_flight,
                "requested": requested,
                "retry_after": LIMIT_RETRY_AFTER_SECONDS,
            },
        )


@register(
    "ai.batch",
    description=(
        "Ask one model many prompts: one interaction per prompt, progress after each, "
        "cancellable between prompts. The result lists the interactions and their statuses "
        "and counts the prompts answered and failed; a batch whose every prompt failed fails."
    ),
    params_schema={
        "type": "object",
        "properties": {
            "prompts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": 1000,
            },
            "model": {"type": "string"},
            "params": PARAMS_SCHEMA,
            "cache": {"type": "boolean", "default": True},
        },
        "required": ["prompts"],
        "additionalProperties": False,
    },
    admit=batch_admit,
)
def batch(context: TaskContext) -> dict[str, Any]:
    prompts = context.params["prompts"]
    results: list[dict[str, Any]] = []
    answered = 0
    for number, prompt in enumerate(prompts, start=1):
        context.checkpoint()
        try:
            interaction = interaction_create(
                owner=context.owner,
                api_key=context.api_key,
                messages=[{"role": "user", "content": prompt}],
                model_name=context.params.get("model"),
                params=context.params.get("params") or {},
                mode=InteractionMode.BATCH,
                use_cache=context.params["cache"],
                metadata={"task_id": str(context.task_id), "index": number - 1},
                task_id=context.task_id,
            )
            results.append({"id": str(interaction.pk), "status": interaction.status})
            answered += interaction.status == InteractionStatus.SUCCEEDED
        except Exception as error:  # one failed prompt does not sink the batch
            interaction_id = getattr(error, "details", {}).get("interaction_id")
            results.append({"id": interaction_id, "status": InteractionStatus.FAILED})
        context.progress(number, len(prompts), _summary(answered, number, len(prompts)))
    failed = len(prompts) - answered
    result = {
        "interactions": results,
        "prompts": len(prompts),
        "answered": answered,
        "failed": failed,
        "summary": _summary(answered, len(prompts), len(prompts)),
    }
    if not answered:
        raise AllPromptsFailed(f"{failed} of {len(prompts)} prompts failed", result=result)
    return result


def _summary(answered: int, asked: int, total: int) -> str:
    """``2 of 3 prompts answered, 1 failed``: how many of the ``asked`` so far were answered."""
    summary = f"{answered} of {total} prompts answered"
    return f"{summary}, {asked - answered} failed" if asked > answered else summary
