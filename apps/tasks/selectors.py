"""Reads of the tasks domain: what a caller may see."""

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from apps.tasks.models import Task
from apps.tasks.registry import TaskType, task_types
from contextos.exceptions import NotFound


def task_type_list(*, user: AbstractBaseUser) -> list[TaskType]:
    """The types ``user`` may submit: never internal ones; staff-only ones for staff."""
    return [t for t in task_types() if not t.internal and (user.is_staff or not t.staff_only)]


def task_list(
    *, user: AbstractBaseUser, status: str | None = None, type_name: str | None = None
) -> QuerySet[Task]:
    """Tasks ``user`` may see (staff: all), newest first, optionally filtered."""
    tasks = Task.objects.all() if user.is_staff else Task.objects.filter(owner=user)
    if status:
        tasks = tasks.filter(status=status)
    if type_name:
        tasks = tasks.filter(type=type_name)
    return tasks.order_by("-created_at")


def task_get(*, user: AbstractBaseUser, task_id: UUID | str) -> Task:
    """The task ``task_id`` if ``user`` may see it; otherwise NotFound (never 403).

    Looked up by primary key alone and its owner checked after, so that the
    planner never trades the primary key for an owner's index.
    """
    try:
        task = Task.objects.get(pk=task_id)
    except (Task.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such task.") from None
    if not user.is_staff and task.owner_id != user.pk:
        raise NotFound("No such task.")
    return task
