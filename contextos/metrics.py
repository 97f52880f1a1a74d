"""Prometheus metrics: HTTP requests per view, and counters that every process adds to.

HTTP counts and latencies are kept by each web process; with
``PROMETHEUS_MULTIPROC_DIR`` set (``scripts/start-web`` sets it for gunicorn)
every worker process writes them to its own file there and a scrape sums
the files. Counters of work that may finish in a Celery worker (AI calls,
tasks) are :class:`SharedCounter` s kept in Redis hashes (in a table of the
database when Redis is not configured), so ``/metrics`` shows what every
worker did, whatever machine or container it runs on.
Apps declare their shared counters and register collectors of their own
(gauges read at scrape time) with :func:`register`.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache as memoize
from typing import Any

from django.core.cache import cache
from django.db import connection, connections, transaction
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from contextos.cache import cache_key, redis_client

logger = logging.getLogger(__name__)

# --- HTTP requests, per process ----------------------------------------------------

# ``*_created`` series exist in single-process mode only; leave them out in both.
disable_created_metrics()

_http_registry = CollectorRegistry()
_HTTP_LABELS = ("view", "method", "status")
HTTP_REQUESTS = Counter(
    "contextos_http_requests_total",
    "HTTP requests answered, by view (URL route), method and status.",
    _HTTP_LABELS,
    registry=_http_registry,
)
HTTP_LATENCY = Histogram(
    "contextos_http_request_duration_seconds",
    "Time to produce the response (to the first byte of a stream), by view, method and status.",
    _HTTP_LABELS,
    registry=_http_registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_VIEW = "unmatched"


# The per-label children, looked up once: this runs on every request.
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
    """Count and time a response by its URL route (a bounded set), method and status."""
    match = request.resolver_match
    method = request.method if request.method in _METHODS else "other"
    labels = (match.route if match else UNMATCHED_VIEW, method, response.status_code)
    children = _http_children.get(labels)
    if children is None:
        children = _http_children.setdefault(
            labels,
            (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels)),
        )
    children[0].inc()
    children[1].observe(seconds)


# --- Counters shared by every process, in Redis or the database ------------------------


@dataclass(frozen=True)
class Increment:
    counter: "SharedCounter"
    labels: str
    amount: int | float


class SharedCounter:
    """A counter family kept in one Redis hash: a field per label set, summed by every process.

    Without Redis, a row of ``MetricCount`` per label set holds each total.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = labelnames
        _shared_counters.append(self)

    @property
    def key(self) -> str:
        return cache.make_key(cache_key("metrics", self.name))

    def by(self, *labelvalues: object, amount: int | float = 1) -> Increment:
        """The increment of ``amount`` for these label values (counted with :func:`count`)."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {labelvalues}")
        return Increment(self, json.dumps([str(value) for value in labelvalues]), amount)


_shared_counters: list[SharedCounter] = []

# Sums of increments, one per counter and label set.
Amounts = dict[tuple[SharedCounter, str], int | float]


def _send(amounts: Amounts) -> None:
    """Add ``amounts`` to the shared totals, in one round trip; errors are raised."""
    redis = redis_client()
    if redis is None:
        _add_to_table(amounts)
        return
    pipe = redis.pipeline(transaction=False)
    for (counter, labels), amount in amounts.items():
        if isinstance(amount, int):
            pipe.hincrby(counter.key, labels, amount)
        else:
            pipe.hincrbyfloat(counter.key, labels, amount)
    pipe.execute()


def _add_to_table(amounts: Amounts) -> None:
    """One upsert adding every amount to its row: atomic on SQLite and PostgreSQL alike,
    so increments from any number of processes are never lost."""
    # Imported here: gunicorn loads this module (config.gunicorn) before Django's apps.
    from contextos.models import MetricCount

    quote = connection.ops.quote_name
    table, value = quote(MetricCount._meta.db_table), quote("value")
    rows = ", ".join(["(%s, %s, %s)"] * len(amounts))
    # A savepoint inside a caller's transaction: a failure here must not break it.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quote('metric')}, {quote('labels')}, {value}) "  # noqa: S608
            f"VALUES {rows} ON CONFLICT ({quote('metric')}, {quote('labels')}) "
            f"DO UPDATE SET {value} = {table}.{value} + excluded.{value}",
            [
                parameter
                for (counter, labels), amount in amounts.items()
                for parameter in (counter.name, labels, amount)
            ],
        )


def _table_values() -> list[dict[str, float]]:
    from contextos.models import MetricCount

    fields: dict[str, dict[str, float]] = {}
    for metric, labels, value in MetricCount.objects.values_list("metric", "labels", "value"):
        fields.setdefault(metric, {})[labels] = value
    return [fields.get(counter.name, {}) for counter in _shared_counters]


def _summed(increments: Iterable[Increment]) -> Amounts:
    amounts: Amounts = {}
    for increment in increments:
        field = (increment.counter, increment.labels)
        amounts[field] = amounts.get(field, 0) + increment.amount
    return amounts


class _Batch:
    """A process's increments, summed in memory and sent to Redis (or the database) together.

    A task's or a request's counters then cost it no round trip of its own: a thread of the
    process sends what is pending every ``interval`` seconds, and the process
    sends the rest when it stops. The sums are one per label set, so while
    Redis (or the database) is away they are kept, bounded, for the next try.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: Amounts = {}
        self._flusher_pid: int | None = None
        os.register_at_fork(after_in_child=self._forget_parent)

    def _forget_parent(self) -> None:
        # A child does not inherit the thread, and must not inherit a lock held by it.
        self._lock = threading.Lock()
        self._pending = {}
        self._flusher_pid = None

    def add(self, increments: Iterable[Increment]) -> None:
        with self._lock:
            for field, amount in _summed(increments).items():
                self._pending[field] = self._pending.get(field, 0) + amount
            if self._flusher_pid != os.getpid():
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._run, name="metrics-flush", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
            # A database connection this thread opened goes back to the pool (or closes).
            connections.close_all()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            _send(pending)
        except Exception as exc:
            logger.warning("Metrics not sent yet (%s: %s)", exc.__class__.__name__, exc)
            with self._lock:
                for field, amount in pending.items():
                    self._pending[field] = self._pending.get(field, 0) + amount


# Celery and gunicorn worker processes batch their counts (contextos.worker,
# config.gunicorn); others (tests, commands) send at once.
BATCH_SECONDS = 1.0
_batch: _Batch | None = None


def batch_counts() -> None:
    """From now on this process (and the processes it forks) sends counts in batches."""
    global _batch
    if _batch is None:
        _batch = _Batch(BATCH_SECONDS)


def flush_counts() -> None:
    """Send the counts this process has batched (when it stops)."""
    if _batch is not None:
        _batch.flush()


def count(*increments: Increment) -> None:
    """Add ``increments`` to their shared counters: at once, in one round trip to Redis
    (or the database), or within a second in a process that batches them.

    A Redis outage loses these counts outside workers (logged); it never fails the caller.
    """
    if _batch is not None:
        _batch.add(increments)
        return
    try:
        _send(_summed(increments))
    except Exception as exc:
        logger.warning("Metrics not counted (%s: %s)", exc.__class__.__name__, exc)


def _shared_values() -> list[dict[Any, Any]]:
    redis = redis_client()
    if redis is None:
        return _table_values()
    pipe = redis.pipeline(transaction=False)
    for counter in _shared_counters:
        pipe.hgetall(counter.key)
    return pipe.execute()


class _SharedCountersCollector:
    def collect(self) -> Iterator[Metric]:
        try:
            values = _shared_values()
        except Exception as exc:
            logger.warning("Shared metrics unavailable (%s: %s)", exc.__class__.__name__, exc)
            values = [{} for _ in _shared_counters]
        for counter, fields in zip(_shared_counters, values, strict=True):
            family = CounterMetricFamily(
                counter.name, counter.documentation, labels=counter.labelnames
            )
            for labels, value in sorted(fields.items()):
                family.add_metric(json.loads(labels), float(value))
            yield family


# --- Exposition ---------------------------------------------------------------------------

_collectors: list[Collector] = [_SharedCountersCollector()]


def register(collector: Collector) -> None:
    """Add a collector (gauges read at scrape time) to ``/metrics``."""
    _collectors.append(collector)


class _RegisteredCollectors:
    def collect(self) -> Iterator[Metric]:
        for collector in _collectors:
            yield from collector.collect()


@memoize
def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_http_registry)
    registry.register(_RegisteredCollectors())
    return registry


def exposition() -> bytes:
    """Every metric, in Prometheus' text format."""
    return generate_latest(_registry())
