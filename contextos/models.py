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
