"""Rows written with one statement bound on the server (``contextos.db.row_insert``,
``row_update`` and ``row_insert_in_turn``) are the rows ``save()`` writes; writes done
aside (``written_aside``)."""

import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task
from contextos.db import (
    _update_statement,
    row_insert,
    row_insert_in_turn,
    row_update,
    written_aside,
)
from tests.sql import statements_sent


def interaction(user, api_key, **fields) -> AIInteraction:
    return AIInteraction(
        owner=user,
        api_key=api_key,
        mode="gateway",
        status="running",
        provider="upstream",
        model="gpt-4o",
        messages=[{"role": "user", "content": "héllo \u2603", "name": None}],
        params={"temperature": 0.5, "tools": [{"type": "function"}]},
        prompt="héllo \u2603",
        prompt_hash="a" * 64,
        metadata={"tags": ["a"]},
        tags=["a"],
        reserved_usd=Decimal("0.00012345"),
        **fields,
    )


def stored(pk) -> dict:
    row = AIInteraction.objects.get(pk=pk)
    return {**model_to_dict(row), "created_at": row.created_at, "updated_at": row.updated_at}


@pytest.mark.django_db
def test_a_row_inserted_and_updated_in_one_statement_is_the_row_save_writes(user):
    api_key, _ = api_key_create(user=user, name="rows")
    fast, saved = interaction(user, api_key), interaction(user, api_key)

    with CaptureQueriesContext(connection) as queries:
        row_insert(fast)
    saved.save()

    assert len(queries) == 1  # one statement, seen by Django's query log
    assert not fast._state.adding
    first = stored(fast.pk)
    assert {k: v for k, v in first.items() if k not in {"id", "created_at", "updated_at"}} == {
        k: v for k, v in stored(saved.pk).items() if k not in {"id", "created_at", "updated_at"}
    }
    assert first["created_at"] == fast.created_at
    assert first["api_key"] == api_key.pk

    fast.status, fast.response, fast.input_tokens = "succeeded", "an answer", 7
    fast.cost_usd, fast.reserved_usd = Decimal("0.0001"), Decimal(0)
    fast.response_message = {"role": "assistant", "content": "an answer"}
    assert row_update(fast) is True

    second = stored(fast.pk)
    assert second["status"] == "succeeded"
    assert second["response"] == "an answer"
    assert second["input_tokens"] == 7
    assert second["cost_usd"] == Decimal("0.0001")
    assert second["reserved_usd"] == 0
    assert second["response_message"] == {"role": "assistant", "content": "an answer"}
    assert second["created_at"] == first["created_at"]  # auto_now_add kept
    assert second["updated_at"] > first["updated_at"]  # auto_now moved on


@pytest.mark.django_db
def test_a_connection_prepares_the_row_writes_it_runs_again_and_again(user):
    """PostgreSQL parses and plans each row write once per connection, not at every call."""
    for _ in range(6):
        row = interaction(user, None)
        row_insert(row)
        row.status = "succeeded"
        row_update(row)

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    table = AIInteraction._meta.db_table
    assert any(s.startswith(f'INSERT INTO "{table}"') for s in prepared), prepared
    assert any(s.startswith(f'UPDATE "{table}"') for s in prepared), prepared
    assert AIInteraction.objects.filter(status="succeeded").count() == 6


@pytest.mark.django_db
def test_an_update_leaves_the_columns_named_unchanged_as_the_row_holds_them(user):
    row = interaction(user, None)
    row_insert(row)
    row.status, row.response = "succeeded", "an answer"
    row.prompt, row.params = "not sent", {"not": "sent"}

    with statements_sent() as statements:
        assert row_update(row, unchanged=frozenset({"prompt", "params"})) is True

    kept = stored(row.pk)
    assert (kept["status"], kept["response"]) == ("succeeded", "an answer")
    assert (kept["prompt"], kept["params"]) == ("héllo \u2603", interaction(user, None).params)
    assert '"prompt"' not in statements[0].split("WHERE")[0]
    with pytest.raises(ValueError, match="no field 'promt'"):
        row_update(row, unchanged=frozenset({"promt"}))


@pytest.mark.django_db
def test_updating_a_row_that_is_gone_writes_nothing(user):
    gone = interaction(user, None)
    row_insert(gone)
    AIInteraction.objects.filter(pk=gone.pk).delete()

    assert row_update(gone) is False
    assert not AIInteraction.objects.exists()


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_an_update_that_need_not_wait_for_the_disk_writes_the_row_and_no_setting_outlives_it(user):
    row = interaction(user, None)
    row_insert(row)
    row.status, row.response, row.output_tokens = "succeeded", "an answer", 3
    row.reserved_usd = Decimal(0)

    assert row_update(row, unchanged=frozenset({"prompt"}), wait_for_disk=False) is True

    kept = stored(row.pk)
    assert (kept["status"], kept["response"], kept["output_tokens"]) == (
        "succeeded",
        "an answer",
        3,
    )
    assert kept["reserved_usd"] == 0
    assert synchronous_commit() == "on"  # the next statements on the connection wait again
    AIInteraction.objects.filter(pk=row.pk).delete()
    assert row_update(row, wait_for_disk=False) is False


@pytest.mark.django_db
def test_an_update_that_need_not_wait_turns_the_flush_off_for_its_own_transaction_only(user):
    """The statement sets ``synchronous_commit`` off for the transaction it commits; in a
    caller's transaction (this test's) ``row_update`` leaves the caller's commit alone."""
    row = interaction(user, None)
    row_insert(row)
    row.status = "succeeded"
    assert row_update(row, wait_for_disk=False) is True
    assert synchronous_commit() == "on"

    sql, fields = _update_statement(AIInteraction, frozenset(), False)
    values = [f.get_db_prep_save(f.pre_save(row, False), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, row.pk])
        assert cursor.rowcount == 1
    assert synchronous_commit() == "off"  # until this transaction ends


@pytest.mark.django_db(transaction=True)
def test_a_write_aside_runs_on_a_writer_thread_or_at_once_when_every_writer_is_busy():
    release = threading.Event()

    def held() -> str:
        release.wait(10)
        return threading.current_thread().name

    busy = [written_aside(held), written_aside(held)]  # both writer threads taken
    inline = written_aside(lambda: threading.current_thread().name)
    release.set()
    held_by = [f.result(5) for f in busy]  # done: their writers are free again
    aside = written_aside(lambda: threading.current_thread().name)

    assert inline.done()
    assert inline.result() == threading.current_thread().name  # no queue behind the others
    assert all(name.startswith("writer") for name in held_by)
    assert aside.result(5).startswith("writer")


@pytest.mark.django_db(transaction=True)
def test_a_write_aside_held_back_starts_later_while_the_caller_goes_on():
    started: list[float] = []
    submitted = time.monotonic()

    written = written_aside(
        lambda: started.append(time.monotonic()) or threading.current_thread().name, after=0.2
    )

    assert not written.done()  # the caller was not held for it
    assert written.result(5).startswith("writer")
    assert started[0] - submitted >= 0.2


@pytest.mark.django_db
def test_a_write_aside_inside_a_transaction_stays_in_it(user):
    row = interaction(user, None)

    written = written_aside(lambda: row_insert(row) or threading.current_thread().name)

    assert written.result() == threading.current_thread().name
    assert AIInteraction.objects.filter(pk=row.pk).exists()  # seen by this transaction


def task(user, **fields) -> Task:
    return Task(
        owner=user,
        type="diagnostics.sleep",
        params={"seconds": 0, "note": "héllo \u2603"},
        request_fingerprint="f" * 64,
        celery_task_id=str(uuid.uuid4()),
        **fields,
    )


FEWER_THAN = "(SELECT count(*) FROM tasks_task WHERE owner_id = %s) < %s"


@pytest.mark.django_db(transaction=True)
def test_a_row_inserted_in_turn_is_the_row_save_writes_when_its_condition_holds(user):
    fast, saved = task(user), task(user)
    saved.save()

    assert row_insert_in_turn(fast, turn=42, condition=FEWER_THAN, params=[user.pk, 2])

    assert not fast._state.adding
    written = Task.objects.get(pk=fast.pk)
    assert written.created_at == fast.created_at
    assert {**model_to_dict(written), "id": None, "celery_task_id": None} == {
        **model_to_dict(saved),
        "id": None,
        "celery_task_id": None,
    }
    # Nothing is left open: the connection is idle, outside any transaction.
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_condition_fails_is_not_written(user):
    task(user).save()
    refused = task(user)

    assert not row_insert_in_turn(refused, turn=42, condition=FEWER_THAN, params=[user.pk, 1])

    assert refused._state.adding
    assert Task.objects.filter(owner=user).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_row_inserted_in_turn_that_breaks_a_constraint_is_rolled_back(user):
    task(user, idempotency_key="once").save()

    with pytest.raises(IntegrityError):
        row_insert_in_turn(task(user, idempotency_key="once"), turn=42, condition="true", params=[])

    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert row_insert_in_turn(task(user), turn=42, condition="true", params=[])
    assert Task.objects.filter(owner=user).count() == 2


@pytest.mark.django_db
def test_a_row_is_not_inserted_in_turn_inside_a_transaction(user):
    with pytest.raises(RuntimeError):
        row_insert_in_turn(task(user), turn=42, condition="true", params=[])
