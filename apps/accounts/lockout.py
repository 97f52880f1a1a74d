"""Admin login lockout (django-axes): the page a locked-out login gets, and its audit entries.

django-axes counts wrong passwords per user name and client address and refuses the pair
for a cool-off (settings: "Admin login lockout"); staff see and lift lockouts by deleting
them under "Axes" in the admin. Each lockout, and each lift by staff, goes to the audit log.
"""

import math
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.contrib import admin
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Model, Q
from django.db.models.signals import post_delete
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from apps.governance.audit import audit_record
from apps.governance.models import AuditEntry

LOCKOUT_ACTION = "admin.lockout"
LOCKOUT_CLEARED_ACTION = "admin.lockout_cleared"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The admin-styled 429 page that replaces the login form's answer while locked out.

    An attempt during the lockout starts the cool-off again, so the wait is the whole
    cool-off from now.
    """
    cool_off = get_cool_off(request)
    seconds = math.ceil(cool_off.total_seconds())
    context = {
        **admin.site.each_context(request),
        "title": "Login locked",
        "username": get_client_username(request, credentials) or "",
        "minutes": math.ceil(seconds / 60),
    }
    response = render(request, "admin/lockout.html", context, status=429)
    response["Retry-After"] = str(seconds)
    add_never_cache_headers(response)
    return response


def _lockout_target(username: str | None, attempt: AccessAttempt) -> Model:
    """The audit entry's subject: the user of that name if there is one, else the lockout row."""
    if not username:
        return attempt
    user_model = get_user_model()
    user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    return user or attempt


def _lockout_values(attempt: AccessAttempt, failures: int) -> dict[str, Any]:
    return {
        "username": attempt.username,
        "ip_address": attempt.ip_address,
        "failures": failures,
        "access_attempt": attempt.pk,
    }


def lockout_record(*, request: HttpRequest, username: str | None, ip_address: str | None) -> None:
    """Record in the audit log that ``username`` is locked out from ``ip_address``, once.

    django-axes signals a lockout at every refused attempt: one lockout is the set of its
    rows (one per user agent) still counted, and it is recorded when none of them is in
    the audit log yet. The rows are locked meanwhile, so concurrent attempts record it once.
    """
    with transaction.atomic():
        attempts = list(
            AccessAttempt.objects.select_for_update()
            .filter(
                username=username,
                ip_address=ip_address,
                attempt_time__gte=get_cool_off_threshold(request),
            )
            .order_by("pk")
        )
        if not attempts:
            return
        newest = max(attempts, key=lambda attempt: attempt.attempt_time)
        target = _lockout_target(username, newest)
        pks = [attempt.pk for attempt in attempts]
        recorded = AuditEntry.objects.filter(action=LOCKOUT_ACTION).filter(
            Q(target_type="accessattempt", target_id__in=[str(pk) for pk in pks])
            | Q(
                target_type=target._meta.model_name,
                target_id=str(target.pk),
                after__access_attempt__in=pks,
            )
        )
        if recorded.exists():
            return
        failures = sum(attempt.failures_since_start for attempt in attempts)
        audit_record(action=LOCKOUT_ACTION, target=target, after=_lockout_values(newest, failures))


def lockout_cleared_record(*, attempt: AccessAttempt) -> None:
    """Record a lockout row that staff deleted in the admin (which lifts it), with who did it.

    Rows that django-axes deletes itself (expired, or after a successful login) are not
    recorded: the admin logs a deletion (a LogEntry) before making it, axes does not.
    """
    deletion = (
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(AccessAttempt),
            object_id=str(attempt.pk),
            action_flag=DELETION,
        )
        .select_related("user")
        .order_by("-action_time")
        .first()
    )
    if deletion is None:
        return
    audit_record(
        action=LOCKOUT_CLEARED_ACTION,
        target=_lockout_target(attempt.username, attempt),
        actor=deletion.user,
        before=_lockout_values(attempt, attempt.failures_since_start),
    )


def _on_user_locked_out(
    sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs: Any
) -> None:
    lockout_record(request=request, username=username, ip_address=ip_address)


def _on_access_attempt_deleted(sender: Any, instance: AccessAttempt, **kwargs: Any) -> None:
    lockout_cleared_record(attempt=instance)


def connect_signals() -> None:
    user_locked_out.connect(_on_user_locked_out, dispatch_uid="accounts.lockout_record")
    post_delete.connect(
        _on_access_attempt_deleted,
        sender=AccessAttempt,
        dispatch_uid="accounts.lockout_cleared_record",
    )
