"""Provider API keys encrypted at rest (Fernet, from ``cryptography``).

The Fernet key is derived (HKDF-SHA256) from ``PROVIDER_KEYS_SECRET``, or from
``SECRET_KEY`` when that is not set. Rotating the secret makes stored keys
unreadable: set them again (``sync_models`` or the admin).
"""

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_CONTEXT = b"contextos provider api keys"


class UnreadableKey(Exception):
    """A stored key that the current secret cannot decrypt."""


@functools.lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
    return _fernet(settings.PROVIDER_KEYS_SECRET or settings.SECRET_KEY)


def encrypt(value: str) -> str:
    """``value`` encrypted for storage; the empty string stays empty (no key)."""
    return _current().encrypt(value.encode()).decode() if value else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise UnreadableKey(
            "A provider key cannot be decrypted with the current PROVIDER_KEYS_SECRET "
            "(or SECRET_KEY): set it again."
        ) from None


def last_four(value: str) -> str:
    """How a key is shown: its last four characters, or nothing."""
    return f"…{value[-4:]}" if value else ""
