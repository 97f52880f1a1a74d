"""Periodic tasks across domains."""

from apps.operations.services import retention_purge
from contextos.jobs import periodic_job


@periodic_job("operations.purge_by_retention", lock_seconds=23 * 3600)
def purge_by_retention() -> dict[str, dict[str, int]]:
    """Daily: delete finished tasks and interactions past their retention, in batches."""
    return {outcome.kind: outcome.removed for outcome in retention_purge()}
