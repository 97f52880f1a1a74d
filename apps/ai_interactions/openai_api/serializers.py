"""The shapes of OpenAI's Chat Completions and Models APIs, for the schema only.

Requests are parsed by hand in ``views`` (OpenAI's fields are loose and their
errors must be OpenAI's); these serializers only describe them.
"""

from rest_framework import serializers

ROLES = ("assistant", "developer", "system", "tool", "user")


class _ChatMessageSchema(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.CharField()


class _StreamOptionsSchema(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False)


class ChatCompletionRequestSchema(serializers.Serializer):
    """The fields ContextOS acts on; any other OpenAI field is accepted and ignored."""

    model = serializers.CharField(required=False)
    messages = _ChatMessageSchema(many=True)
    stream = serializers.BooleanField(required=False)
    stream_options = _StreamOptionsSchema(required=False)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    max_completion_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=1_000_000
    )
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    stop = serializers.JSONField(required=False, help_text="A string or up to 4 strings.")


class _ChoiceSchema(serializers.Serializer):
    index = serializers.IntegerField()
    message = _ChatMessageSchema()
    finish_reason = serializers.CharField()


class _UsageSchema(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatCompletionSchema(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = _ChoiceSchema(many=True)
    usage = _UsageSchema()


class ServerSentEventSchema(serializers.Serializer):
    """One event of a streamed completion."""

    data = serializers.CharField(
        help_text="A `chat.completion.chunk` object as JSON; `[DONE]` for the last event."
    )


class _ModelSchema(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListSchema(serializers.Serializer):
    object = serializers.CharField()
    data = _ModelSchema(many=True)


class _OpenAIErrorDetailSchema(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()


class OpenAIErrorSchema(serializers.Serializer):
    error = _OpenAIErrorDetailSchema()
