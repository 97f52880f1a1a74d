"""The tasks API: submit, list, inspect, cancel and retry background tasks."""

import re
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import request_api_key
from apps.tasks.models import Task
from apps.tasks.registry import task_types
from apps.tasks.selectors import task_get, task_list, task_type_list
from apps.tasks.serializers import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    TaskFilterSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
    TaskTypeSerializer,
)
from apps.tasks.services import task_cancel, task_retry, task_submit
from contextos.exceptions import ValidationFailed
from contextos.schema import ITEM_ID, error_responses
from contextos.serializers import ErrorSerializer
from contextos.views import ITEM_ID_PATTERN

_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")

ERRORS = error_responses(400, 401, 403, 404, 409, 429)
# Submitting or retrying queues a task: the caller's limits apply.
QUEUE_LIMITS = OpenApiResponse(
    ErrorSerializer,
    description=(
        "Over the key's request rate (`throttled`), or a non-staff caller's queued + running "
        "tasks at `TASKS_MAX_ACTIVE_PER_USER` (`too_many_active_tasks`) or `ai.batch` "
        "prompts past `TASKS_MAX_BATCH_PROMPTS_PER_USER` (`too_many_batch_prompts`); "
        "`details` gives the limit and the count, `Retry-After` when to try again."
    ),
)


def _submit_request_schema() -> dict[str, Any]:
    """One alternative per registered type, each with that type's params schema."""
    return {
        "oneOf": [
            {
                "type": "object",
                "title": task_type.name,
                "properties": {
                    "type": {"type": "string", "enum": [task_type.name]},
                    "params": task_type.params_schema,
                },
                "required": ["type"],
                "additionalProperties": False,
            }
            for task_type in task_types()
            if not task_type.internal
        ]
    }


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed(
            "Malformed Idempotency-Key header.",
            details={
                "Idempotency-Key": [
                    f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, no spaces."
                ]
            },
        )
    return key


class TaskTypeListView(APIView):
    @extend_schema(
        summary="Task types you may submit",
        responses={200: TaskTypeSerializer(many=True), **ERRORS},
        tags=["tasks"],
    )
    def get(self, request: Request) -> Response:
        types = task_type_list(user=request.user)
        return Response(TaskTypeSerializer(types, many=True).data)


class TaskViewSet(viewsets.GenericViewSet):
    serializer_class = TaskSerializer
    lookup_value_regex = ITEM_ID_PATTERN
    queryset = Task.objects.none()  # for the schema; reads go through the selectors

    def get_object(self) -> Task:
        return task_get(user=self.request.user, task_id=self.kwargs["pk"])

    def _render(self, task: Task, code: int) -> Response:
        return Response(TaskSerializer(task, context={"request": self.request}).data, status=code)

    @extend_schema(
        summary="List tasks",
        parameters=[TaskFilterSerializer],
        responses={200: TaskSerializer(many=True), **ERRORS},
        tags=["tasks"],
    )
    def list(self, request: Request) -> Response:
        filters = TaskFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        tasks = task_list(
            user=request.user,
            status=filters.validated_data.get("status"),
            type_name=filters.validated_data.get("type"),
        )
        page = self.paginate_queryset(tasks)
        data = TaskSerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(
        summary="Submit a task",
        request={"application/json": _submit_request_schema()},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description=(
                    "Submitting again with the same key and body returns the first task "
                    "(200); with another body, 409."
                ),
            )
        ],
        responses={
            202: OpenApiResponse(TaskSerializer, description="Accepted and queued."),
            200: OpenApiResponse(TaskSerializer, description="Replay of an Idempotency-Key."),
            **ERRORS,
            429: QUEUE_LIMITS,
        },
        tags=["tasks"],
    )
    def create(self, request: Request) -> Response:
        key = _idempotency_key(request)
        data = TaskSubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task, created = task_submit(
            owner=request.user,
            type_name=data.validated_data["type"],
            params=data.validated_data["params"],
            idempotency_key=key,
            api_key=request_api_key(request),
        )
        return self._render(task, status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)

    @extend_schema(
        summary="Get a task",
        parameters=[ITEM_ID],
        responses={200: TaskSerializer, **ERRORS},
        tags=["tasks"],
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._render(self.get_object(), status.HTTP_200_OK)

    @extend_schema(
        summary="Cancel a task",
        parameters=[ITEM_ID],
        request=None,
        responses={202: TaskSerializer, **ERRORS},
        tags=["tasks"],
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._render(
            task_cancel(task=self.get_object(), actor=request.user), status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        summary="Retry a failed or cancelled task",
        parameters=[ITEM_ID],
        request=None,
        responses={202: TaskSerializer, **ERRORS, 429: QUEUE_LIMITS},
        tags=["tasks"],
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        return self._render(
            task_retry(task=self.get_object(), actor=request.user), status.HTTP_202_ACCEPTED
        )
