"""The tasks domain's counter on ``/metrics``: tasks finished, by type and final status."""

from contextos import metrics

TASKS = metrics.SharedCounter(
    "contextos_tasks_total",
    "Tasks finished, by type and final status (succeeded, failed, cancelled).",
    ("type", "status"),
)


def task_finished(*, type_name: str, status: str) -> None:
    metrics.count(TASKS.by(type_name, status))
