"""Worker processes skip the per-task connection health check while tasks come back to back."""

import pytest
from django.db import connection, connections

from contextos import worker

pytestmark = pytest.mark.django_db(transaction=True)


def run_task(*, fails: bool = False) -> None:
    """What a worker process does around one task: signals before, a query, signals after."""
    worker._before_task()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    if fails:
        connection.errors_occurred = True  # as Django marks it after a database error
    worker._after_task()


@pytest.fixture(autouse=True)
def worker_process(monkeypatch):
    """A fresh worker process's connection: no pool, kept between tasks (scripts/start-worker)."""
    monkeypatch.setattr(worker, "_sound_at", None)
    connection.close()
    options = {k: v for k, v in connection.settings_dict["OPTIONS"].items() if k != "pool"}
    kept = {**connection.settings_dict, "OPTIONS": options, "CONN_MAX_AGE": 60}
    monkeypatch.setattr(connections["default"], "settings_dict", kept)
    yield
    connection.close()


def test_a_task_right_after_a_sound_one_is_not_health_checked_again():
    run_task()
    worker._before_task()
    assert connection.health_check_done
    assert connection.connection is not None


def test_the_first_task_and_a_task_after_a_pause_are_health_checked(monkeypatch):
    connection.ensure_connection()  # opened as the process started
    worker._before_task()
    assert not connection.health_check_done

    run_task()
    monkeypatch.setattr(worker, "HEALTH_CHECK_GRACE_SECONDS", 0.0)
    worker._before_task()
    assert not connection.health_check_done


def test_a_task_after_a_database_error_is_health_checked():
    run_task(fails=True)
    worker._before_task()
    assert not connection.health_check_done
