"""Reads of the AI domain: interactions a caller may see, and usage totals."""

from datetime import datetime
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import (
    BooleanField,
    Q,
    QuerySet,
)
from django.db.models.expressions import RawSQL

from apps.ai_interactions.models import (
    AIInteraction,
)
from contextos.ownership import visible_get, visible_to

# The expression of the full-text index (migration 0002): searches use it verbatim.
SEARCH_DOCUMENT = "to_tsvector('simple', coalesce(prompt, '') || ' ' || coalesce(response, ''))"


def interaction_list(
    *,
    user: AbstractBaseUser,
    status: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    cached: bool | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    search: str | None = None,
) -> QuerySet[AIInteraction]:
    """Interactions ``user`` may see (staff: all), newest first, filtered."""
    rows = visible_to(AIInteraction, user)
    filters = {
        "status": status,
        "kind": kind,
        "model": model,
        "provider": provider,
        "cached": cached,
        "created_at__gte": created_after,
        "created_at__lt": created_before,
    }
    rows = rows.filter(**{name: value for name, value in filters.items() if value is not None})
    if search:
        rows = rows.filter(_matches(search))
    return rows.order_by("-created_at")


def _matches(search: str) -> Q | RawSQL:
    if connection.vendor == "postgresql":
        # The search text is a bound parameter; only the constant expression is inlined.
        return RawSQL(  # noqa: S611
            f"{SEARCH_DOCUMENT} @@ plainto_tsquery('simple', %s)",
            [search],
            output_field=BooleanField(),
        )
    return Q(prompt__icontains=search) | Q(response__icontains=search)


def interaction_get(*, user: AbstractBaseUser, interaction_id: UUID | str) -> AIInteraction:
    """The interaction if ``user`` may see it (staff: any); otherwise NotFound (never 403)."""
    return visible_get(AIInteraction, user, interaction_id, missing="No such interaction.")
