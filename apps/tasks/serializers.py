"""Input and output shapes of the tasks API."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.tasks.models import Task, TaskStatus
from contextos.serializers import StrictInputSerializer

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


class TaskSerializer(serializers.ModelSerializer):
    progress = TaskProgressSerializer(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)
    error = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "type",
            "params",
            "status",
            "progress",
            "result",
            "error",
            "attempt",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TaskErrorSerializer(allow_null=True))
    def get_error(self, task: Task) -> dict[str, Any] | None:
        if task.error is None:
            return None
        error: dict[str, Any] = dict(task.error)
        request = self.context.get("request")
        if task.error_traceback and request is not None and request.user.is_staff:
            error["traceback"] = task.error_traceback
        return error


class TaskTypeSerializer(serializers.Serializer):
    type = serializers.CharField(source="name")
    description = serializers.CharField()
    params_schema = serializers.JSONField(help_text="A JSON Schema for `params`.")
