"""The shapes of OpenAI's Chat Completions, Embeddings and Models APIs, for the schema only.

Requests are parsed by hand in ``views`` (OpenAI's fields are loose and their
errors must be OpenAI's); these serializers only describe them.
"""

from rest_framework import serializers

from apps.ai_interactions.serializers import ROLES, MessageContentField


class _FunctionCallSchema(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="The arguments, a JSON object as a string.")


class _ToolCallSchema(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    function = _FunctionCallSchema()


class _ChatMessageSchema(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = MessageContentField(allow_null=True)
    tool_calls = _ToolCallSchema(many=True, required=False)
    tool_call_id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)


class _StreamOptionsSchema(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False)


class ChatCompletionRequestSchema(serializers.Serializer):
    """OpenAI's Chat Completions request. Every field but ``cache`` and ``metadata`` reaches
    an OpenAI-compatible provider as sent, unknown ones included (other providers get
    what they can take)."""

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
    n = serializers.IntegerField(required=False, min_value=1, max_value=128)
    seed = serializers.IntegerField(required=False)
    tools = serializers.ListField(child=serializers.DictField(), required=False)
    tool_choice = serializers.JSONField(required=False)
    response_format = serializers.DictField(required=False)
    cache = serializers.BooleanField(
        required=False,
        help_text="false: skip the answer cache (as does a `Cache-Control: no-store` header).",
    )
    metadata = serializers.DictField(
        required=False, help_text="Kept with the interaction; not sent to the provider."
    )


class _ChoiceSchema(serializers.Serializer):
    index = serializers.IntegerField()
    message = _ChatMessageSchema()
    finish_reason = serializers.CharField()
    logprobs = serializers.JSONField(required=False, allow_null=True)


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


class EmbeddingRequestSchema(serializers.Serializer):
    """OpenAI's embeddings request; other fields are passed on to the provider."""

    model = serializers.CharField(required=False)
    input = serializers.JSONField(
        help_text="A string, a list of strings, a list of token ids, or a list of those."
    )
    dimensions = serializers.IntegerField(required=False, min_value=1, max_value=8192)
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False)
    cache = serializers.BooleanField(required=False, help_text="false: skip the answer cache.")


class _EmbeddingSchema(serializers.Serializer):
    object = serializers.CharField()
    index = serializers.IntegerField()
    embedding = serializers.JSONField(help_text="Floats, or a base64 string of float32 values.")


class _EmbeddingUsageSchema(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class EmbeddingListSchema(serializers.Serializer):
    object = serializers.CharField()
    data = _EmbeddingSchema(many=True)
    model = serializers.CharField()
    usage = _EmbeddingUsageSchema()


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
