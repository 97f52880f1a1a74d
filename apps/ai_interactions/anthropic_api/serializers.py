"""The shapes of Anthropic's Messages API, for the schema only.

Requests are parsed by hand in ``views`` (content blocks are loose and their errors
must be Anthropic's); these serializers only describe them. Enumerations are plain
strings with their values in the help text, so their names clash with no other enum.
"""

from rest_framework import serializers


class AnthropicInputMessageSchema(serializers.Serializer):
    role = serializers.CharField(help_text="`user` or `assistant`.")
    content = serializers.JSONField(
        help_text=(
            "A string, or a list of content blocks: `text`, `image` (a `base64` or `url` "
            "source) and `tool_result` from the user, `text` and `tool_use` from the assistant."
        )
    )


class AnthropicToolSchema(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    input_schema = serializers.DictField(help_text="The JSON schema of the tool's input.")


class AnthropicToolChoiceSchema(serializers.Serializer):
    type = serializers.CharField(help_text="`auto`, `any`, `tool` or `none`.")
    name = serializers.CharField(required=False, help_text="The tool to call, with `tool`.")
    disable_parallel_tool_use = serializers.BooleanField(required=False)


class AnthropicMessagesRequestSchema(serializers.Serializer):
    """The fields ContextOS acts on; any other field of Anthropic's is accepted and ignored."""

    model = serializers.CharField(help_text="Any configured model, whatever its provider.")
    max_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000)
    messages = AnthropicInputMessageSchema(many=True)
    system = serializers.JSONField(required=False, help_text="A string or a list of text blocks.")
    tools = AnthropicToolSchema(many=True, required=False)
    tool_choice = AnthropicToolChoiceSchema(required=False)
    stop_sequences = serializers.ListField(child=serializers.CharField(), required=False)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    top_k = serializers.IntegerField(required=False, min_value=0)
    stream = serializers.BooleanField(required=False)
    metadata = serializers.DictField(
        required=False,
        help_text="Recorded with the interaction (e.g. `user_id`), never sent to the provider.",
    )
    cache = serializers.BooleanField(
        required=False, help_text="ContextOS's own: `false` skips the answer cache."
    )


class AnthropicContentBlockSchema(serializers.Serializer):
    type = serializers.CharField(help_text="`text` or `tool_use`.")
    text = serializers.CharField(required=False, help_text="A `text` block's text.")
    id = serializers.CharField(required=False, help_text="A `tool_use` block's call id.")
    name = serializers.CharField(required=False, help_text="The tool a `tool_use` block calls.")
    input = serializers.DictField(required=False, help_text="The tool's input.")


class AnthropicUsageSchema(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class AnthropicMessageSchema(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField(help_text="`message`.")
    role = serializers.CharField(help_text="`assistant`.")
    model = serializers.CharField()
    content = AnthropicContentBlockSchema(many=True)
    stop_reason = serializers.CharField(
        help_text="`end_turn`, `max_tokens`, `stop_sequence`, `tool_use` or `refusal`."
    )
    stop_sequence = serializers.CharField(allow_null=True)
    usage = AnthropicUsageSchema()


class AnthropicServerSentEventSchema(serializers.Serializer):
    """One event of a streamed message."""

    event = serializers.CharField(
        help_text=(
            "`message_start`, `content_block_start`, `content_block_delta`, "
            "`content_block_stop`, `message_delta`, `message_stop`, or `error`."
        )
    )
    data = serializers.CharField(help_text="The event's object as JSON; its `type` is the event's.")


class AnthropicErrorDetailSchema(serializers.Serializer):
    type = serializers.CharField(
        help_text=(
            "`invalid_request_error`, `authentication_error`, `permission_error`, "
            "`not_found_error`, `request_too_large`, `rate_limit_error`, `api_error` "
            "or `overloaded_error`."
        )
    )
    message = serializers.CharField()
    code = serializers.CharField(help_text="ContextOS's stable machine-readable code.")


class AnthropicErrorSchema(serializers.Serializer):
    type = serializers.CharField(help_text="`error`.")
    error = AnthropicErrorDetailSchema()
    request_id = serializers.CharField(allow_null=True)
