"""Rows kept in each process's memory, dropped everywhere when they change.

A :class:`VersionedCache` holds what a loader read from PostgreSQL. Every process
checks the cache's version in Redis (``<name>:version``) at most every ``check``
seconds and drops what it holds when another process bumped it; the process that
made a change drops its copy at once. Without Redis, what is held is read again
after ``check`` seconds. Callers bump the version on every save and deletion of
the rows (Django signals), again when the transaction commits.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.db import transaction

from contextos.cache import redis_client

logger = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class VersionedCache(Generic[K, V]):
    def __init__(self, name: str, *, check: Callable[[], float]) -> None:
        self.name = name
        self.version_key = f"{name}:version"
        self._check = check
        self._lock = threading.Lock()
        self._values: dict[K, V] = {}
        self._version: str | None = None
        self._checked_at = 0.0

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value held for ``key``, or ``load()``'s (then held until a change)."""
        self._revalidate()
        try:
            return self._values[key]
        except KeyError:
            value = load()
            with self._lock:
                self._values[key] = value
            return value

    def clear(self) -> None:
        """Drop what this process holds (the next ``get`` loads again)."""
        with self._lock:
            self._values = {}
            self._checked_at = 0.0

    def changed(self, **kwargs: Any) -> None:
        """The rows changed: drop them here now, and everywhere (now and at commit)."""
        self.clear()
        self._bump()
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(self._bump)

    def _revalidate(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._check():
            return
        version = self._read_version()
        with self._lock:
            if version is None or version != self._version:
                self._values = {}
            self._version = version
            self._checked_at = now

    def _read_version(self) -> str | None:
        try:
            client = redis_client()
            value = client.get(self.version_key) if client is not None else None
        except Exception as exc:
            logger.warning("%s version unavailable (%s)", self.name, exc.__class__.__name__)
            return None
        return value.decode() if isinstance(value, bytes) else value

    def _bump(self) -> None:
        try:
            client = redis_client()
            if client is not None:
                client.incr(self.version_key)
        except Exception as exc:
            logger.warning(
                "%s change not announced (%s); other processes see it within %ss",
                self.name,
                exc.__class__.__name__,
                self._check(),
            )
