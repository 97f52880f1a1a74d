"""Built-in task types."""

from typing import Any

from apps.tasks.execution import TaskContext
from apps.tasks.registry import register


class DiagnosticFailure(Exception):
    """The failure ``diagnostics.sleep`` raises when asked to."""


@register(
    "diagnostics.sleep",
    description=(
        "Sleep for `seconds` in `steps` equal steps, reporting progress after each step "
        "and stopping between steps when cancelled. With `fail: true` it fails on purpose "
        "after the last step."
    ),
    params_schema={
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "maximum": 600, "default": 1},
            "steps": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
            "fail": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    },
    idempotent=True,
)
def diagnostics_sleep(context: TaskContext) -> dict[str, Any]:
    seconds = context.params["seconds"]
    steps = context.params["steps"]
    for step in range(1, steps + 1):
        context.sleep(seconds / steps)
        context.progress(step, steps, f"Slept step {step} of {steps}")
    if context.params["fail"]:
        raise DiagnosticFailure("Failed on purpose, as asked (fail: true).")
    return {"slept_seconds": seconds, "steps": steps}
