"""Celery results land in django-celery-results' table, one row per Celery task id."""

import uuid

import pytest
from celery import current_app, states
from django_celery_results.models import TaskResult

pytestmark = pytest.mark.django_db


def test_each_state_overwrites_one_row_and_reads_back_through_celery():
    backend = current_app.backend
    task_id = str(uuid.uuid4())

    backend.store_result(task_id, None, states.STARTED)
    started = TaskResult.objects.get(task_id=task_id)
    assert started.status == states.STARTED
    assert started.date_started is not None

    backend.mark_as_done(task_id, {"status": "succeeded"})

    row = TaskResult.objects.get(task_id=task_id)
    assert row.pk == started.pk
    assert row.status == states.SUCCESS
    assert row.date_created == started.date_created
    assert row.date_started == started.date_started
    assert row.date_done >= started.date_done
    meta = backend.get_task_meta(task_id)
    assert meta["status"] == states.SUCCESS
    assert meta["result"] == {"status": "succeeded"}


def test_a_failure_keeps_its_traceback_and_exception():
    backend = current_app.backend
    task_id = str(uuid.uuid4())

    backend.mark_as_failure(task_id, ValueError("bad input"), traceback="Traceback: ...")

    row = TaskResult.objects.get(task_id=task_id)
    assert row.status == states.FAILURE
    assert row.traceback == "Traceback: ..."
    result = backend.get_task_meta(task_id)["result"]
    assert isinstance(result, ValueError)
    assert str(result) == "bad input"
