"""Bad input answers 4xx in the error format, never 500: the cases fuzzing found, kept
as regressions, for every operation that takes a JSON body."""

import json

import pytest

from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task
from tests.security.routes import operations

pytestmark = pytest.mark.django_db

WITH_BODY = [op for op in operations() if op.takes_body]

# Bodies no JSON consumer here can hold: refused by the parser, whatever the endpoint.
MALFORMED = {
    "unpaired surrogate in a key": '{"x\\ud800": 1}',
    "unpaired surrogate in a value": '{"prompt": "\\udfff"}',
    "nesting that exhausts the decoder": "[" * 20_000 + "]" * 20_000,
    "nesting past the limit": '{"metadata": ' + '{"a": ' * 150 + "1" + "}" * 150 + "}",
    "number too large for a float": '{"metadata": {"x": 1e999}}',
    "truncated": '{"prompt": ',
}


def error_of(response) -> tuple[str, str]:
    """(message, code) of an error in the shape its path uses."""
    body = response.json()
    if response.wsgi_request.path.startswith("/v1/"):
        return body["error"]["message"], body["error"]["code"]
    assert set(body) == {"error", "code", "details", "request_id"}, body
    return body["error"], body["code"]


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("op", WITH_BODY, ids=[op.label for op in WITH_BODY])
def test_malformed_json_is_a_400(op, body, staff_client):
    response = op.call(staff_client, body=body)
    assert response.status_code == 400, response.content
    message, code = error_of(response)
    assert code == "malformed_request"
    assert message.startswith("JSON parse error")


def test_a_valid_surrogate_pair_is_text(api_client):
    response = api_client.generic(
        "POST",
        "/api/v1/ai/interactions/",
        '{"prompt": "\\ud83d\\ude00", "metadata": {"\\ud83d\\ude00": 1}}',
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["response"] == "Echo: \U0001f600"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/ai/interactions/", {"prompt": "a", "metadata": {"k": "\x00"}}, "metadata"),
        ("/api/v1/ai/interactions/", {"prompt": "a", "metadata": {"\x00": 1}}, "metadata"),
        ("/api/v1/ai/interactions/", {"prompt": "a", "params": {"stop": "\x00"}}, "params"),
        ("/api/v1/ai/interactions/", {"prompt": "a\x00"}, "prompt"),
        ("/api/v1/tasks/", {"type": "ai.batch", "params": {"prompts": ["\x00"]}}, "params"),
    ],
    ids=["metadata value", "metadata key", "stop", "prompt", "task params"],
)
def test_null_characters_are_refused_naming_the_field(api_client, path, body, field):
    response = api_client.post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["details"][field] == ["Null characters are not allowed."]
    assert not AIInteraction.objects.exists()
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": {}, "content": "a"}]}, "Each message needs a 'role'"),
        ({"messages": [{"role": "user", "content": "a\x00"}]}, "Null characters"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\x00"}]}]},
            "Null characters",
        ),
        ({"messages": [{"role": "user", "content": "a"}], "stop": ["\x00"]}, "Null characters"),
        # Passed on and recorded as sent: a null anywhere, even in a key, is refused.
        ({"messages": [{"role": "user", "content": "a", "x\x00": 1}]}, "Null characters"),
        ({"messages": [{"role": "user", "content": "a"}], "user": {"\x00": 1}}, "Null characters"),
        ({"messages": [{"role": "user", "content": "a"}], "stop": [5]}, "Invalid 'stop'"),
        ({"messages": [{"role": "user", "content": "a"}], "max_tokens": "x"}, "'max_tokens'"),
        ({"messages": [{"role": "user", "content": "a"}], "temperature": 9}, "'temperature'"),
        # The fuzzer's find: a list here reached the provider, which failed with a 500.
        (
            {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": [1]},
            "'max_completion_tokens'",
        ),
        ({"messages": [{"role": "user", "content": "a"}], "tools": 5}, "'tools'"),
        ({"messages": [{"role": "user", "content": "a"}], "tools": ["f"]}, "'tools'"),
        (
            {"messages": [{"role": "user", "content": "a"}], "response_format": "j"},
            "'response_format'",
        ),
    ],
    ids=[
        "role not a string",
        "null in content",
        "null in a part",
        "null in stop",
        "null in a message key",
        "null in a passed-on field",
        "stop",
        "max_tokens",
        "temp",
        "max_completion_tokens",
        "tools not a list",
        "a tool not an object",
        "response_format",
    ],
)
def test_gateway_refuses_what_it_cannot_act_on_in_openai_shape(api_client, body, message):
    response = api_client.post("/v1/chat/completions", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert not AIInteraction.objects.exists()


FUNCTION = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"function": "x"}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": ["f"]}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "s"}}]}, "tools"),
        (
            {"tools": [FUNCTION], "tool_choice": {"type": "function", "function": "f"}},
            "tool_choice",
        ),
        ({"tools": [FUNCTION], "tool_choice": 5}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": "s"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": []}}},
            "response_format",
        ),
    ],
    ids=[
        "tool function",
        "function name",
        "parameters",
        "choice function",
        "choice",
        "json_schema",
        "schema",
    ],
)
def test_tool_and_format_shapes_a_provider_reads_are_a_400_on_both_apis(api_client, extra, field):
    """Found beside the fuzzer's 500: each of these reached the echo model, which failed."""
    gateway = api_client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "a"}], **extra},
        format="json",
    )
    rest = api_client.post(
        "/api/v1/ai/interactions/", {"prompt": "a", "params": extra}, format="json"
    )

    assert gateway.status_code == 400, gateway.content
    assert gateway.json()["error"]["message"].startswith(f"Invalid '{field}': ")
    assert rest.status_code == 400, rest.content
    assert field in rest.json()["details"]["params"]
    assert not AIInteraction.objects.exists()


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": "p", "required": ["a"]},
        {"properties": {"a": "x"}, "required": ["a", ["b"]]},
        {"properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]},
    ],
    ids=["properties not an object", "odd entries", "a list of types"],
)
def test_a_json_schema_the_echo_model_cannot_read_still_gets_an_answer(api_client, schema):
    """Schemas are the provider's to judge (pass-through); echo answers what it can."""
    body = {
        "messages": [{"role": "user", "content": "a"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "tool_choice": "none",
    }
    response = api_client.post("/v1/chat/completions", body, format="json")

    assert response.status_code == 200, response.content
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"a": "a"}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {"role": "wizard", "content": "hi"},
            "Invalid role 'wizard': use system, user, assistant, developer or tool.",
        ),
        (
            {"content": "hi"},
            "Each message needs a 'role': use system, user, assistant, developer or tool.",
        ),
        ("hi", "Each message must be an object with a 'role'."),
    ],
    ids=["unknown role", "no role", "not an object"],
)
def test_gateway_names_the_bad_message(api_client, message, error):
    response = api_client.post("/v1/chat/completions", {"messages": [message]}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == {
        "message": error,
        "type": "invalid_request_error",
        "param": None,
        "code": "validation_error",
    }
    assert not AIInteraction.objects.exists()


def test_gateway_records_every_field_as_sent_to_pass_it_on(api_client):
    fields = {"seed": "anything", "logit_bias": {"1": -100}, "max_completion_tokens": 3}
    response = api_client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], **fields},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert AIInteraction.objects.get().params == fields


def test_gateway_refuses_content_parts_that_are_not_objects(api_client):
    response = api_client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, "x"]}]},
        format="json",
    )
    assert response.status_code == 400
    assert "list of parts" in response.json()["error"]["message"]
    assert not AIInteraction.objects.exists()


@pytest.mark.parametrize("to", ["0001-01-01", "0001-01-15T00:00:00+14:00"])
def test_usage_up_to_the_first_days_of_the_calendar(api_client, to):
    response = api_client.get("/api/v1/ai/usage/", {"to": to})
    assert response.status_code == 200, response.content
    assert response.json()["from"] == "0001-01-01T00:00:00Z"
