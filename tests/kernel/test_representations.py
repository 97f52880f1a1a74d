"""Task and interaction responses are written out by hand; they say what DRF's fields would."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from apps.ai_interactions.serializers import InteractionSerializer
from apps.tasks.serializers import TaskSerializer
from tests.factories import InteractionFactory, StaffUserFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


def generic(serializer_class, instance, **kwargs):
    """What DRF's own field-by-field ``to_representation`` makes of ``instance``."""
    serializer = serializer_class(instance, **kwargs)
    return serializers.Serializer.to_representation(serializer, instance)


def request_by(user):
    request = APIRequestFactory().get("/")
    request.user = user
    return request


def task_states():
    now = timezone.now()
    return [
        TaskFactory(),
        TaskFactory(
            status="running",
            started_at=now,
            progress={"current": 3, "total": 7, "percent": 42.86, "message": "step 3"},
            attempt=2,
        ),
        TaskFactory(
            status="succeeded",
            started_at=now - timedelta(seconds=3),
            finished_at=now,
            progress={"current": 1, "total": 1, "percent": 100.0, "message": ""},
            result={"slept": 0, "nested": [1, {"a": None}]},
        ),
        TaskFactory(
            status="failed",
            finished_at=now,
            error={"message": "boom", "type": "RuntimeError"},
            error_traceback="Traceback (most recent call last): ...",
        ),
    ]


def test_tasks_are_represented_as_drf_would():
    for task in task_states():
        for user in (UserFactory(), StaffUserFactory()):  # tracebacks are for staff only
            context = {"request": request_by(user)}
            assert TaskSerializer(task, context=context).data == generic(
                TaskSerializer, task, context=context
            )


def test_tasks_in_another_time_zone_are_represented_as_drf_would():
    task = TaskFactory(started_at=timezone.now(), finished_at=timezone.now())
    with timezone.override("Europe/Paris"):
        assert TaskSerializer(task).data == generic(TaskSerializer, task)
        assert TaskSerializer(task).data["created_at"].endswith(("+01:00", "+02:00"))


def test_interactions_are_represented_as_drf_would():
    now = timezone.now()
    task = TaskFactory()
    interactions = [
        InteractionFactory(
            started_at=now,
            completed_at=now,
            input_tokens=3,
            output_tokens=5,
            cost_usd=Decimal("0.000013"),
            latency_ms=12.5,
            params={"temperature": 0.2},
            metadata={"trace": "abc"},
        ),
        InteractionFactory(cached=True, cost_usd=Decimal(0), latency_ms=0.4),
        InteractionFactory(
            status="failed",
            error={"message": "upstream 500", "type": "server_error", "provider_status": 500},
            cost_usd=Decimal("12345.123456789"),
        ),
        InteractionFactory(status="queued", mode="async", task=task, response=""),
    ]
    for interaction in interactions:
        interaction.refresh_from_db()  # the values as a read gives them
        assert InteractionSerializer(interaction).data == generic(
            InteractionSerializer, interaction
        )
