"""Gauges of the health domain on ``/metrics``: queue depths and Celery workers online."""

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from apps.health.selectors import celery_overview

logger = logging.getLogger(__name__)


class CeleryCollector:
    """Read at each scrape; a failed probe leaves its gauge without a sample (and logs why)."""

    def collect(self) -> Iterator[Metric]:
        overview = celery_overview()
        for name, check in overview.items():
            if check["status"] != "ok":
                logger.warning("Metrics: %s unavailable (%s)", name, check["error"])
        depth = GaugeMetricFamily(
            "contextos_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, messages in overview["queues"].get("depths", {}).items():
            depth.add_metric([queue], messages)
        workers = GaugeMetricFamily(
            "contextos_workers_online", "Celery workers that answered a ping (at most 15 s old)."
        )
        if overview["workers"]["status"] == "ok":
            workers.add_metric([], overview["workers"]["online"])
        yield depth
        yield workers
