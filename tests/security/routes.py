"""The API's operations, read from the OpenAPI schema and the URLconf, for tests that
must cover every endpoint (new ones included) without listing them by hand."""

import re
import uuid
from dataclasses import dataclass
from functools import cache

from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from rest_framework.permissions import IsAdminUser

# Path parameters in the schema look like ``{id}``.
_PARAMETER = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as in the schema, e.g. /api/v1/tasks/{id}/
    public: bool  # the schema declares no security requirement
    staff_only: bool  # the view requires a staff user
    takes_body: bool = False  # the schema declares a request body

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def has_id(self) -> bool:
        return "{id}" in self.path

    def url(self, object_id: uuid.UUID | str | None = None) -> str:
        return _PARAMETER.sub(str(object_id or uuid.uuid4()), self.path)


def _staff_only(path: str) -> bool:
    view = resolve(path).func
    view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
    permissions = getattr(view_class, "permission_classes", [])
    return any(issubclass(permission, IsAdminUser) for permission in permissions)


@cache
def operations() -> tuple[Operation, ...]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, methods in schema["paths"].items():
        for method, spec in methods.items():
            concrete = _PARAMETER.sub(str(uuid.uuid4()), path)
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    public=spec.get("security") in ([], [{}]) or "security" not in spec,
                    staff_only=_staff_only(concrete),
                    takes_body="requestBody" in spec,
                )
            )
    return tuple(found)
