"""Writes on API keys: create (the only time the raw key exists), update, revoke, record use.

Creating, changing and revoking a key is recorded in the audit log, whichever way it came
(the admin, a command, the self-service keys API through :mod:`apps.governance.services`).
"""

import hashlib
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.accounts import key_cache
from apps.accounts.models import APIKey, Team
from apps.governance.audit import audit_record

KEY_PREFIX = "ctx_"
KEY_RANDOM_LENGTH = 40
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
_ALPHABET = string.ascii_letters + string.digits

# ``last_used_at`` is a hint for humans; writing it on every request would
# turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_hash(raw_key: str) -> str:
    """The stored digest. Keys carry 238 bits of randomness, so a fast hash is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *,
    user: AbstractBaseUser,
    name: str = "",
    expires_at: datetime | None = None,
    expires_in_days: int | None = None,
    team: Team | None = None,
    actor: AbstractBaseUser | None = None,
) -> tuple[APIKey, str]:
    """Create a key for ``user`` and return it with its raw value, which is not stored.

    ``actor`` (None: a command) is recorded in the audit log as the one who created it.
    """
    if expires_in_days is not None:
        if expires_in_days < 1:
            raise ValueError("expires_in_days must be at least 1")
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    raw_key = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_RANDOM_LENGTH))
    with transaction.atomic():
        api_key = APIKey.objects.create(
            user=user,
            name=name,
            prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
            key_hash=api_key_hash(raw_key),
            expires_at=expires_at,
            team=team,
        )
        audit_record(
            action="key.create",
            target=api_key,
            actor=actor,
            after={
                "user": user.get_username(),
                "name": name,
                "prefix": api_key.prefix,
                "team": team.name if team else None,
                "expires_at": expires_at,
            },
        )
    return api_key, raw_key


def api_key_update(
    *,
    api_key: APIKey,
    name: str,
    expires_at: datetime | None,
    actor: AbstractBaseUser | None = None,
) -> APIKey:
    """Rename ``api_key`` or change when it expires (the key itself never changes).

    The values that changed are recorded in the audit log; a save that changes nothing
    records nothing.
    """
    wanted: dict[str, Any] = {"name": name, "expires_at": expires_at}
    with transaction.atomic():
        # The stored row, not ``api_key``: an admin form has already set the new values on it.
        stored = APIKey.objects.select_for_update().get(pk=api_key.pk)
        before = {
            f: getattr(stored, f) for f, value in wanted.items() if getattr(stored, f) != value
        }
        api_key.name = name
        api_key.expires_at = expires_at
        if not before:
            return api_key
        api_key.save(update_fields=["name", "expires_at", "updated_at"])
        audit_record(
            action="key.update",
            target=api_key,
            actor=actor,
            before=before,
            after={field: wanted[field] for field in before},
        )
    return api_key


def api_key_revoke(*, api_key: APIKey, actor: AbstractBaseUser | None = None) -> APIKey:
    """Revoke ``api_key`` and record it in the audit log.

    A key already revoked keeps its first revocation time and nothing is recorded: the
    caller is told with :class:`Conflict` (code ``already_revoked``, the time in its
    details).
    """
    # Not at the top: DRF imports this module (through the authentication class) while
    # contextos.exceptions, which imports DRF, is still being loaded.
    from contextos.exceptions import Conflict

    with transaction.atomic():
        stored = APIKey.objects.select_for_update().get(pk=api_key.pk)
        if stored.revoked_at is not None:
            api_key.revoked_at = stored.revoked_at
            raise Conflict(
                f"The API key {stored.prefix} is already revoked.",
                code="already_revoked",
                details={"revoked_at": stored.revoked_at.isoformat()},
            )
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
        audit_record(
            action="key.revoke",
            target=api_key,
            actor=actor,
            before={"revoked_at": None},
            after={"revoked_at": api_key.revoked_at},
        )
    return api_key


def api_key_record_use(*, api_key: APIKey) -> None:
    """Note that ``api_key`` was used, at most once per ``LAST_USED_RESOLUTION``."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
    key_cache.refresh(api_key.key_hash)
