"""Abstract base model shared by every domain model."""

import uuid

from django.db import models


class BaseModel(models.Model):
    """UUID primary key plus creation and modification timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True, editable=False)

    class Meta:
        abstract = True


class CacheEntry(models.Model):
    """A row of the shared cache when Redis is not configured (Django's database cache).

    Declared as a model so that ``migrate`` creates the table (as
    ``createcachetable`` would, same columns) with every other one.
    """

    cache_key = models.CharField(max_length=255, primary_key=True)
    value = models.TextField()
    expires = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "contextos_cache"

    def __str__(self) -> str:
        return self.cache_key


class MetricCount(models.Model):
    """A shared counter's total for one label set, when Redis is not configured.

    Every process adds to it with one upsert (:mod:`contextos.metrics`); ``/metrics``
    on any web process reads them all.
    """

    metric = models.CharField(max_length=100)
    labels = models.TextField()  # JSON list of the label values, in the counter's order
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["metric", "labels"], name="metriccount_unique_labels")
        ]

    def __str__(self) -> str:
        return f"{self.metric}{self.labels} = {self.value:g}"
