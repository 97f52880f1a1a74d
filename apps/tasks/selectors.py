"""Reads of the tasks domain: what a caller may see."""

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.tasks.models import Task
from apps.tasks.registry import TaskType, task_types
from contextos.ownership import visible_get, visible_to


def task_type_list(*, user: AbstractBaseUser) -> list[TaskType]:
    """The types ``user`` may submit: never internal ones; staff-only ones for staff."""
    return [t for t in task_types() if not t.internal and (user.is_staff or not t.staff_only)]


def task_list(
    *, user: AbstractBaseUser, status: str | None = None, type_name: str | None = None
) -> QuerySet[Task]:
    """Tasks ``user`` may see (staff: all), newest first, optionally filtered."""
    tasks = visible_to(Task, user)
    if status:
        tasks = tasks.filter(status=status)
    if type_name:
        tasks = tasks.filter(type=type_name)
    return tasks.order_by("-created_at")


def task_get(*, user: AbstractBaseUser, task_id: UUID | str) -> Task:
    """The task ``task_id`` if ``user`` may see it; otherwise NotFound (never 403)."""
    return visible_get(Task, user, task_id, missing="No such task.")
