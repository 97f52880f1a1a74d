"""The periodic tasks ContextOS runs, declared once; ``setup_periodic_tasks`` upserts them."""

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    description: str
    every: timedelta
    # Hourly and daily jobs run at a fixed time (crontab fields, UTC); others every ``every``.
    crontab: dict[str, str] = field(default_factory=dict)
    # A message not picked up by a worker within this many seconds is dropped.
    expire_seconds: int = 0


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob(
        name="health.beat-heartbeat",
        task="health.beat_heartbeat",
        description=(
            "Records that beat and a worker are alive; check_services and the staff "
            "health report show its age."
        ),
        every=timedelta(minutes=1),
        expire_seconds=60,
    ),
    PeriodicJob(
        name="tasks.recover-stuck",
        task="tasks.recover_stuck",
        description=(
            "Fails (or, for idempotent types, re-queues) tasks a lost worker left running "
            "past their time limit; publishes tasks whose message was never sent."
        ),
        every=timedelta(minutes=5),
        expire_seconds=300,
    ),
    PeriodicJob(
        name="ai_interactions.rollup-usage",
        task="ai_interactions.rollup_usage",
        description="Rolls up AI usage (requests, tokens, cost) per hour.",
        every=timedelta(hours=1),
        crontab={"minute": "5"},
        expire_seconds=3600,
    ),
    PeriodicJob(
        name="operations.purge-by-retention",
        task="operations.purge_by_retention",
        description=(
            "Deletes finished tasks and AI interactions older than RETENTION_TASKS_DAYS "
            "and RETENTION_INTERACTIONS_DAYS, in batches."
        ),
        every=timedelta(days=1),
        crontab={"minute": "30", "hour": "3"},
        expire_seconds=6 * 3600,
    ),
    PeriodicJob(
        name="tasks.cleanup-results",
        task="tasks.cleanup_results",
        description="Deletes Celery results older than CELERY_RESULT_EXPIRES, in batches.",
        every=timedelta(days=1),
        crontab={"minute": "45", "hour": "3"},
        expire_seconds=6 * 3600,
    ),
)

# Celery's own default entry, replaced by tasks.cleanup-results.
RETIRED_PERIODIC_TASKS = ("celery.backend_cleanup",)
