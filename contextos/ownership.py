"""Who sees which rows: an owner sees their own, staff see everyone's."""

from typing import Any, TypeVar
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from contextos.exceptions import NotFound

M = TypeVar("M", bound=Model)


def visible_to(model: type[M], user: AbstractBaseUser) -> QuerySet[M]:
    """The rows of ``model`` (which has an ``owner``) that ``user`` may see."""
    return (
        model._default_manager.all() if user.is_staff else model._default_manager.filter(owner=user)
    )


def visible_get(model: type[M], user: AbstractBaseUser, pk: UUID | str, *, missing: str) -> M:
    """The row ``pk`` if ``user`` may see it; otherwise NotFound(``missing``), never 403.

    Looked up by primary key alone and its owner checked after: with the owner
    in the query too, statistics that lag behind a busy new owner let the
    planner scan all of that owner's rows instead (measured: 5 ms at 30,000).
    """
    try:
        row: Any = model._default_manager.get(pk=pk)
    except (model.DoesNotExist, ValueError, ValidationError):
        raise NotFound(missing) from None
    if not user.is_staff and row.owner_id != user.pk:
        raise NotFound(missing)
    return row
