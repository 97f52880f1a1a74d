"""One digest of a JSON value, the same whatever its key order: for fingerprints and cache keys."""

import hashlib
import json
from typing import Any


def canonical_digest(value: Any) -> str:
    """The SHA-256 hex digest of ``value`` as canonical JSON.

    Keys sorted, no whitespace, text as UTF-8 rather than ``\\u`` escapes: equal
    values have one digest, however their dicts were built.
    """
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
