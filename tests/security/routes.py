"""The API's operations, read from the OpenAPI schema and the URLconf, for tests that
must cover every endpoint (new ones included) without listing them by hand."""

import re
import uuid
from dataclasses import dataclass
from functools import cache

from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from rest_framework.permissions import IsAdminUser

from apps.accounts.models import APIKey
from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task

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

    @property
    def model(self) -> type | None:
        """The model whose objects the operation's view serves, if any."""
        view = resolve(self.url()).func
        queryset = getattr(getattr(view, "cls", None), "queryset", None)
        return None if queryset is None else queryset.model

    def call(self, client, object_id=None, body: str = "{}"):
        """Call the operation with a test client (on a random id unless given one)."""
        return client.generic(
            self.method, self.url(object_id), body, content_type="application/json"
        )


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


def exercise(client) -> list:
    """Use ``client``'s credentials on every operation, with successful writes, failing
    ones and actions on its own objects among them; return the responses."""
    responses = [op.call(client) for op in operations()]
    interaction = client.post("/api/v1/ai/interactions/", {"prompt": "hello"}, format="json")
    task = client.post(
        "/api/v1/tasks/", {"type": "diagnostics.sleep", "params": {"seconds": 0}}, format="json"
    )
    key = client.post("/api/v1/keys/", {"name": "exercised"}, format="json")
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    responses += [
        interaction,
        task,
        key,
        client.post("/v1/chat/completions", chat, format="json"),
        client.post("/api/v1/tasks/", "{oops", content_type="application/json"),
        client.post("/api/v1/ai/interactions/", {"prompt": "a" * 300_000}, format="json"),
    ]
    own = {
        AIInteraction: interaction.json()["id"],
        Task: task.json()["id"],
        APIKey: key.json()["id"],
    }
    responses += [op.call(client, own[op.model]) for op in operations() if op.has_id]
    return responses
