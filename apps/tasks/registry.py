"""The task types clients may submit. Nothing else can be started through the API.

Each app declares its types in a ``task_types`` module (found at start-up);
``TASK_TYPE_MODULES`` names further modules, for types of a deployment's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.functional import cached_property
from django.utils.module_loading import autodiscover_modules
from jsonschema import Draft202012Validator

if TYPE_CHECKING:
    from apps.tasks.execution import TaskContext

Handler = Callable[["TaskContext"], Any]


@dataclass
class TaskType:
    name: str
    description: str
    params_schema: dict[str, Any]
    handler: Handler
    staff_only: bool = False
    # Started by ContextOS itself (e.g. ai.generate), never through the tasks API.
    internal: bool = False
    # Safe to run again from the start after its worker died mid-run.
    idempotent: bool = False
    # Errors worth retrying automatically, with exponential backoff.
    transient_errors: tuple[type[BaseException], ...] = ()
    max_auto_retries: int = 3
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    queue: str = field(default_factory=lambda: settings.CELERY_TASK_DEFAULT_QUEUE)
    # Checks at submission (with the submitter and its key), raising an AppError to refuse.
    admit: Callable[..., None] | None = None

    @cached_property
    def params_validator(self) -> Draft202012Validator:
        """The compiled params schema (compiling it per request is measurably slow)."""
        return Draft202012Validator(self.params_schema)


_registry: dict[str, TaskType] = {}


def register(
    name: str,
    *,
    description: str,
    params_schema: dict[str, Any],
    **options: Any,
) -> Callable[[Handler], Handler]:
    """Decorator: make ``handler`` submittable as task type ``name``."""

    def decorator(handler: Handler) -> Handler:
        if name in _registry and _registry[name].handler is not handler:
            raise ValueError(f"Task type {name!r} is registered twice")
        Draft202012Validator.check_schema(params_schema)  # a broken schema fails at start-up
        _registry[name] = TaskType(
            name=name,
            description=description,
            params_schema=params_schema,
            handler=handler,
            **options,
        )
        return handler

    return decorator


def get_task_type(name: str) -> TaskType | None:
    return _registry.get(name)


def task_types() -> list[TaskType]:
    return sorted(_registry.values(), key=lambda task_type: task_type.name)


def autodiscover() -> None:
    autodiscover_modules("task_types")
    for module in settings.TASK_TYPE_MODULES:
        importlib.import_module(module)
