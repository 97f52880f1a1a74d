"""Writing the audit log: who did what to which row, the values before and after, and the
request it came from.

It imports only the governance models and the request context, so that the services of
every app (accounts, tasks, routing, AI) can record their changes without an import
cycle through :mod:`apps.governance.services`.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model

from apps.governance.models import AuditEntry
from contextos.context import current_request_id


def json_ready(value: Any) -> Any:
    """``value`` as the audit log stores it: decimals, times and ids become strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def audit_record(
    *,
    action: str,
    target: Model,
    actor: AbstractBaseUser | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str = "",
    target_type: str | None = None,
) -> AuditEntry:
    """Record that ``actor`` (None: a command or the system) did ``action`` to ``target``.

    ``before`` and ``after`` hold the values that changed (JSON-ready: decimals and
    times become strings); the request id is the current request's unless given (a
    command has none: it is left empty).
    """
    return AuditEntry.objects.create(
        actor=actor if actor is not None and getattr(actor, "pk", None) is not None else None,
        action=action,
        target_type=target_type or target._meta.model_name,
        target_id=str(target.pk),
        target_repr=str(target)[:200],
        before=None if before is None else {k: json_ready(v) for k, v in before.items()},
        after=None if after is None else {k: json_ready(v) for k, v in after.items()},
        request_id=(request_id or current_request_id() or "")[:64],
    )
