"""Input and output shapes of the AI API."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.ai_interactions.models import AIInteraction, InteractionKind, InteractionStatus
from contextos.exceptions import ValidationFailed
from contextos.serializers import StrictInputSerializer, decimal_string, iso_datetime

ROLES = ["system", "user", "assistant", "developer", "tool"]
MESSAGE_SHAPE = "Each message needs a 'role' and 'content'."
CONTENT_SHAPE = "Message content must be a string or a list of parts, each an object with a 'type'."


def one_of(names: Iterable[str]) -> str:
    """``a, b or c``: the allowed values, as an error message lists them."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


def invalid_role_message(role: object, roles: Iterable[str]) -> str:
    return f"Invalid role '{role}': use {one_of(roles)}."


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "object", "required": ["type"]}},
        ],
        "nullable": True,
    }
)
class MessageContentField(serializers.JSONField):
    """OpenAI's message content: a string, or a list of parts (text, image_url, ...)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in data
        ):
            return data
        raise serializers.ValidationError(CONTENT_SHAPE)


class MessageSerializer(StrictInputSerializer):
    """A message in OpenAI's shape: content as text or parts, tool calls and their results."""

    default_error_messages = {"invalid": MESSAGE_SHAPE}

    role = serializers.ChoiceField(
        choices=ROLES,
        error_messages={
            "invalid_choice": invalid_role_message("{input}", ROLES),
            "required": MESSAGE_SHAPE,
            "null": MESSAGE_SHAPE,
        },
    )
    content = MessageContentField(
        allow_null=True, error_messages={"required": MESSAGE_SHAPE, "null": MESSAGE_SHAPE}
    )
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)
    tool_call_id = serializers.CharField(required=False, max_length=200)
    name = serializers.CharField(required=False, max_length=200)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # Only an assistant's tool calls may come without content.
        if data.get("content") is None and not data.get("tool_calls"):
            raise serializers.ValidationError({"content": [MESSAGE_SHAPE]})
        return data


# The shapes of OpenAI's tool fields that ContextOS itself reads (the echo model, the
# Anthropic translation): checked by hand so that the gateway pays microseconds, not a
# serializer, and shared with the REST API's serializer. Other tool types and fields
# pass as they are.


def tools_problem(tools: Any) -> str | None:
    """What is wrong with ``tools`` (OpenAI's), or None."""
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        return "must be a list of tool objects."
    for tool in tools:
        if tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return "each function tool needs a 'function' object with a 'name'."
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            return "a function's 'parameters' must be a JSON schema object."
    return None


def tool_choice_problem(choice: Any) -> str | None:
    """What is wrong with ``tool_choice``: a string, or an object naming a function."""
    if isinstance(choice, str):
        return None
    if not isinstance(choice, dict):
        return "must be none, auto, required or an object naming a function."
    if "function" in choice and not isinstance(choice["function"], dict):
        return "its 'function' must be an object."
    return None


def response_format_problem(response_format: Any) -> str | None:
    """What is wrong with ``response_format``'s shape (its ``type`` aside)."""
    if not isinstance(response_format, dict):
        return "must be an object with a 'type'."
    json_schema = response_format.get("json_schema")
    if json_schema is None:
        return None
    if not isinstance(json_schema, dict):
        return "'json_schema' must be an object."
    if json_schema.get("schema") is not None and not isinstance(json_schema["schema"], dict):
        return "'json_schema.schema' must be a JSON schema object."
    return None


class GenerationParamsSerializer(StrictInputSerializer):
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False)
    stop = serializers.JSONField(required=False, help_text="A string or up to 4 strings.")
    n = serializers.IntegerField(
        min_value=1, max_value=128, required=False, help_text="How many choices to answer."
    )
    seed = serializers.IntegerField(required=False)
    tools = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text='OpenAI\'s tool definitions (`{"type": "function", "function": {...}}`).',
    )
    tool_choice = serializers.JSONField(
        required=False, help_text="`none`, `auto`, `required` or a named function, as OpenAI's."
    )
    response_format = serializers.DictField(
        required=False, help_text='`{"type": "text" | "json_object" | "json_schema", ...}`'
    )

    def validate_response_format(self, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") not in ("text", "json_object", "json_schema"):
            raise serializers.ValidationError("'type' must be text, json_object or json_schema.")
        return _shaped(value, response_format_problem)

    def validate_tools(self, value: list[Any]) -> list[Any]:
        return _shaped(value, tools_problem)

    def validate_tool_choice(self, value: Any) -> Any:
        return _shaped(value, tool_choice_problem)

    def validate_stop(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value):
            return value
        raise serializers.ValidationError("A string or a list of at most 4 strings.")


def _shaped(value: Any, problem_of: Callable[[Any], str | None]) -> Any:
    if problem := problem_of(value):
        raise serializers.ValidationError(problem[0].upper() + problem[1:])
    return value


class GatewayParamsSerializer(GenerationParamsSerializer):
    """The gateway's checked fields: those of every call, and OpenAI's newer name for
    ``max_tokens``, bounded as it is."""

    max_completion_tokens = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False
    )


class InteractionCreateSerializer(StrictInputSerializer):
    prompt = serializers.CharField(required=False, trim_whitespace=False)
    messages = MessageSerializer(many=True, required=False, allow_empty=False)
    model = serializers.CharField(required=False, max_length=200)
    params = GenerationParamsSerializer(required=False)
    mode = serializers.ChoiceField(choices=["sync", "async"], default="sync")
    cache = serializers.BooleanField(default=True)
    metadata = serializers.DictField(required=False, default=dict)

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        valid = super().is_valid()
        if not valid and raise_exception:
            problem = _message_problem(self.errors)
            raise ValidationFailed(problem, details=self.errors)
        return valid

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("prompt" in data) == ("messages" in data):
            raise serializers.ValidationError(
                {"prompt": ["Give either 'prompt' or 'messages' (not both)."]}
            )
        if "prompt" in data:
            data["messages"] = [{"role": "user", "content": data.pop("prompt")}]
        else:
            data["messages"] = [dict(message) for message in data["messages"]]
        data["params"] = dict(data.get("params") or {})
        return data


def _message_problem(errors: Mapping[str, Any]) -> str | None:
    """The role, content or shape problem of the first bad message, when the messages
    are all that is wrong: the error names it rather than "Invalid input."."""
    problems = errors.get("messages")
    if set(errors) != {"messages"} or not isinstance(problems, Mapping):
        return None
    indexes = [index for index in problems if isinstance(index, int)]
    if not indexes:
        return None
    first = problems[min(indexes)]
    for field in ("role", "content", "non_field_errors"):
        if isinstance(first, Mapping) and first.get(field):
            return str(first[field][0])
    return None


class InteractionFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=InteractionStatus.choices, required=False)
    kind = serializers.ChoiceField(choices=InteractionKind.choices, required=False)
    model = serializers.CharField(required=False, max_length=200)
    provider = serializers.CharField(required=False, max_length=50)
    cached = serializers.BooleanField(required=False, allow_null=True, default=None)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    search = serializers.CharField(required=False, max_length=500)


class InteractionErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    provider_status = serializers.IntegerField(allow_null=True)


class InteractionSerializer(serializers.ModelSerializer):
    task_id = serializers.UUIDField(allow_null=True, read_only=True)
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8, read_only=True)
    error = serializers.SerializerMethodField()
    route = serializers.CharField(
        source="model", read_only=True, help_text="The route (model name) asked for."
    )

    class Meta:
        model = AIInteraction
        fields = [
            "id",
            "status",
            "provider",
            "model",
            "route",
            "deployment",
            "fallback",
            "messages",
            "params",
            "kind",
            "response",
            "response_message",
            "finish_reason",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_ms",
            "cached",
            "task_id",
            "error",
            "metadata",
            "created_at",
            "started_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(InteractionErrorSerializer(allow_null=True))
    def get_error(self, interaction: AIInteraction) -> dict[str, Any] | None:
        return interaction.error

    def to_representation(self, interaction: AIInteraction) -> dict[str, Any]:
        # Written out: DRF's generic path builds and copies these fields from the
        # model for every response, a sixth of a cached call (measured). The fields
        # above still describe the schema; a test holds the two outputs equal.
        return {
            "id": str(interaction.id),
            "status": interaction.status,
            "provider": interaction.provider,
            "model": interaction.model,
            "route": interaction.model,
            "deployment": interaction.deployment,
            "fallback": interaction.fallback,
            "messages": interaction.messages,
            "params": interaction.params,
            "kind": interaction.kind,
            "response": interaction.response,
            "response_message": interaction.response_message,
            "finish_reason": interaction.finish_reason,
            "input_tokens": interaction.input_tokens,
            "output_tokens": interaction.output_tokens,
            "cost_usd": decimal_string(interaction.cost_usd, max_digits=14, decimal_places=8),
            "latency_ms": _float(interaction.latency_ms),
            "cached": interaction.cached,
            "task_id": str(interaction.task_id) if interaction.task_id else None,
            "error": self.get_error(interaction),
            "metadata": interaction.metadata,
            "created_at": iso_datetime(interaction.created_at),
            "started_at": iso_datetime(interaction.started_at),
            "completed_at": iso_datetime(interaction.completed_at),
        }


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


class ModelSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    default = serializers.BooleanField()
    input_price_per_mtok = serializers.CharField(help_text="USD per million tokens, a decimal.")
    output_price_per_mtok = serializers.CharField(help_text="USD per million tokens, a decimal.")


class DateOrDateTimeField(serializers.DateTimeField):
    """A date (the start of that day, UTC) or a date-time."""

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) == 10:
            value = f"{value}T00:00:00Z"
        return super().to_internal_value(value)


USAGE_GROUPS = ["day", "model", "deployment", "key", "user", "team", "tag"]


class UsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=USAGE_GROUPS, default="day")
    key = serializers.UUIDField(required=False, help_text="Only this API key's calls (its id).")
    team = serializers.UUIDField(required=False, help_text="Only this team's calls (its id).")
    tag = serializers.CharField(required=False, help_text="Only calls with this tag.")
    model = serializers.CharField(
        required=False, max_length=200, help_text="Only calls to this route (model name)."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # "from" and "to" are Python keywords, so they cannot be declared as attributes.
        return {
            **super().get_fields(),
            "from": DateOrDateTimeField(required=False),
            "to": DateOrDateTimeField(required=False),
        }


class UsageRowSerializer(serializers.Serializer):
    """One group's totals, named by the fields of its grouping only."""

    day = serializers.DateField(required=False)
    provider = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    deployment = serializers.CharField(
        required=False, help_text="provider/model of the deployment that answered ('' if none)."
    )
    key_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="The API key (null: calls without one)."
    )
    key_name = serializers.CharField(
        required=False, allow_null=True, help_text="Null when there is no key or it was deleted."
    )
    user = serializers.CharField(
        required=False, allow_null=True, help_text="The owner's username (null if deleted)."
    )
    team_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="The key's team (null: calls without one)."
    )
    team_name = serializers.CharField(
        required=False, allow_null=True, help_text="Null when there is no team or it was deleted."
    )
    tag = serializers.CharField(
        required=False, help_text="A call with several tags counts once under each."
    )
    requests = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cached = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=18, decimal_places=8)
    latency_ms_mean = serializers.FloatField(allow_null=True, help_text="Exact.")
    latency_ms_p95 = serializers.FloatField(
        allow_null=True,
        help_text=(
            "An estimate: interpolated within a fixed latency histogram (bucket bounds "
            "1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 ms), "
            "clamped to the fastest and slowest call."
        ),
    )

    def to_representation(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        # A field the row lacks belongs to another grouping: left out, not null.
        row = super().to_representation(instance)
        return {name: value for name, value in row.items() if name in instance}


class UsageSerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=USAGE_GROUPS)
    results = UsageRowSerializer(many=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            **super().get_fields(),
            "from": serializers.DateTimeField(),
            "to": serializers.DateTimeField(),
        }
