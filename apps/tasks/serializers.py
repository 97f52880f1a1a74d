"""Input and output shapes of the tasks API."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.tasks.models import Task, TaskStatus
from contextos.serializers import StrictInputSerializer, iso_datetime

IDEMPOTENCY_KEY_MAX_LENGTH = 255


class TaskSubmitSerializer(StrictInputSerializer):
    type = serializers.CharField(max_length=100)
    params = serializers.DictField(required=False, default=dict)


class TaskFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    type = serializers.CharField(max_length=100, required=False)


class TaskProgressSerializer(serializers.Serializer):
    current = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.FloatField()
    message = serializers.CharField(allow_blank=True)


class TaskErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    traceback = serializers.CharField(required=False, help_text="Staff only.")


# Fields declared, not read from the model: a ModelSerializer introspects the
# model on every response, a tenth of a submission's time (profiled).
class TaskSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    type = serializers.CharField(read_only=True)
    params = serializers.JSONField(read_only=True)
    status = serializers.ChoiceField(choices=TaskStatus.choices, read_only=True)
    progress = TaskProgressSerializer(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)
    error = serializers.SerializerMethodField()
    attempt = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(allow_null=True, read_only=True)
    finished_at = serializers.DateTimeField(allow_null=True, read_only=True)

    @extend_schema_field(TaskErrorSerializer(allow_null=True))
    def get_error(self, task: Task) -> dict[str, Any] | None:
        if task.error is None:
            return None
        error: dict[str, Any] = dict(task.error)
        request = self.context.get("request")
        if task.error_traceback and request is not None and request.user.is_staff:
            error["traceback"] = task.error_traceback
        return error

    def to_representation(self, task: Task) -> dict[str, Any]:
        # Written out: DRF's generic path copies every field (the nested progress
        # included) for each response, a tenth of a submission (measured). The
        # fields above still describe the schema; a test holds the two outputs equal.
        progress = task.progress
        return {
            "id": str(task.id),
            "type": task.type,
            "params": task.params,
            "status": task.status,
            "progress": None
            if progress is None
            else {
                "current": int(progress["current"]),
                "total": int(progress["total"]),
                "percent": float(progress["percent"]),
                "message": str(progress["message"]),
            },
            "result": task.result,
            "error": self.get_error(task),
            "attempt": task.attempt,
            "created_at": iso_datetime(task.created_at),
            "started_at": iso_datetime(task.started_at),
            "finished_at": iso_datetime(task.finished_at),
        }


class TaskTypeSerializer(serializers.Serializer):
    type = serializers.CharField(source="name")
    description = serializers.CharField()
    params_schema = serializers.JSONField(help_text="A JSON Schema for `params`.")
