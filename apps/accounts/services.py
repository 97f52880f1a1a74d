"""Writes on API keys: create (the only time the raw key exists), update, revoke, record use."""

import hashlib
import secrets
import string
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from apps.accounts import key_cache
from apps.accounts.models import APIKey, Team

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
) -> tuple[APIKey, str]:
    """Create a key for ``user`` and return it with its raw value, which is not stored."""
    if expires_in_days is not None:
        if expires_in_days < 1:
            raise ValueError("expires_in_days must be at least 1")
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    raw_key = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_RANDOM_LENGTH))
    api_key = APIKey.objects.create(
        user=user,
        name=name,
        prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
        key_hash=api_key_hash(raw_key),
        expires_at=expires_at,
        team=team,
    )
    return api_key, raw_key


def api_key_update(*, api_key: APIKey, name: str, expires_at: datetime | None) -> APIKey:
    """Rename ``api_key`` or change when it expires (the key itself never changes)."""
    api_key.name = name
    api_key.expires_at = expires_at
    api_key.save(update_fields=["name", "expires_at", "updated_at"])
    return api_key


def api_key_revoke(*, api_key: APIKey) -> APIKey:
    """Revoke ``api_key``; revoking twice keeps the first revocation time."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
    return api_key


def api_key_record_use(*, api_key: APIKey) -> None:
    """Note that ``api_key`` was used, at most once per ``LAST_USED_RESOLUTION``."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
    key_cache.refresh(api_key.key_hash)
