"""Task types of the AI domain: async interactions (internal) and batches."""

from typing import Any

from apps.ai_interactions.catalog import route_get
from apps.ai_interactions.models import AIInteraction, InteractionMode, InteractionStatus
from apps.ai_interactions.providers.base import ProviderCallError
from apps.ai_interactions.services import GENERATE_TASK_TYPE, interaction_create, interaction_run
from apps.governance.limits import check_model, scopes_for
from apps.tasks.execution import TaskContext, TaskFailure
from apps.tasks.registry import register

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


def batch_admit(*, params: dict[str, Any], owner: Any, api_key: Any) -> None:
    """A batch for a model its key or user may not call is refused when submitted (403),
    before any prompt is asked."""
    check_model(scopes_for(api_key=api_key, user=owner), route_get(params.get("model")).name)


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
