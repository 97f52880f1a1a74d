"""Reads on API keys."""

import re
import time

from django.db.models import QuerySet

from apps.accounts import key_cache
from apps.accounts.models import APIKey
from apps.accounts.services import DISPLAY_PREFIX_LENGTH, KEY_PREFIX, api_key_hash
from contextos.throttling import APIKeyRateThrottle

# Every key has this shape; any other value is refused without asking the cache or the database.
_KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9]{32,128}")


def api_key_get_by_raw(*, raw_key: str, on_trust: bool = False) -> APIKey | None:
    """The key whose raw value is ``raw_key`` (usable or not), or None.

    Read through the cache of authenticated keys (:mod:`apps.accounts.key_cache`); with
    ``on_trust``, a key this process has read from it before is taken as it was, its
    ``confirmation`` to be sent (:func:`apps.governance.admission.admit`).
    """
    if not _KEY_SHAPE.fullmatch(raw_key):
        return None
    digest = api_key_hash(raw_key)
    window = APIKeyRateThrottle.window_of_key(digest, time.time())
    if on_trust and (known := key_cache.known_key(digest, window)) is not None:
        return known
    api_key, counted = key_cache.cached_key(digest, count=window)
    if api_key is None:
        api_key = APIKey.objects.select_related("user").filter(key_hash=digest).first()
        if api_key is not None:
            key_cache.remember(api_key)
    if api_key is not None and window is not None and counted is not None:
        # The request is counted for the rate limit already (one round trip for both).
        api_key.throttle_count = (window.counter, counted)
    return api_key


def api_key_list(*, username: str | None = None, prefix: str | None = None) -> QuerySet[APIKey]:
    """Keys newest first, optionally one user's, or those starting with ``prefix``."""
    keys = APIKey.objects.select_related("user").order_by("-created_at")
    if username is not None:
        keys = keys.filter(user__username=username)
    if prefix is not None:
        keys = keys.filter(prefix__startswith=prefix[:DISPLAY_PREFIX_LENGTH])
    return keys
