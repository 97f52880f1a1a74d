"""``POST /v1/messages``: Anthropic's Messages API in front of every configured model.

The official ``anthropic`` client against a real server (gunicorn), and in process the
translation both ways (Anthropic's request to the services' OpenAI-shaped messages and
params, their answer to Anthropic's message and events), errors and recording.
"""

import base64
import json
from typing import Any

import anthropic
import pytest
from rest_framework.test import APIClient

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from tests.fakes import Reply
from tests.fakes.openai_server import FakeOpenAI

MESSAGES = "/v1/messages"
ECHO = "echo-1"
FAKE_GPT = "fake-gpt"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER["input_schema"],
    },
}
QUESTION = "Paris"
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a picture").decode()


def message(*, model: str = ECHO, prompt: str = "hello", **fields: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": prompt}],
        **fields,
    }


def events_of(response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event of a streamed response, read to the end."""
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    try:
        body = b"".join(response.streaming_content).decode()
    finally:
        response.close()
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(
        data["delta"]["text"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta"
    )


def gateway_rows() -> list[AIInteraction]:
    return list(AIInteraction.objects.filter(mode="gateway").order_by("created_at"))


def upstream_chats(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The bodies of the chat completions the fake OpenAI server was asked for."""
    return [request["body"] for request in fake.requests if request["path"] == fake.main_path]


@pytest.fixture
def anthropic_client(api_key) -> APIClient:
    """An API client that authenticates as Anthropic's clients do (``x-api-key``)."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key, HTTP_ANTHROPIC_VERSION="2023-06-01")
    return client


# --- The official client against gunicorn --------------------------------------------


def server_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODELS": f"{FAKE_GPT}:1.00:2.00",
        "AI_RETRY_BASE_DELAY": "0.01",
    }


@pytest.mark.server
def test_the_official_anthropic_client_works_through_the_gateway(start_web, user, fake_openai):
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="anthropic client")
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)

    answer = client.messages.create(
        model=ECHO,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello claude"}],
    )
    with client.messages.stream(
        model=ECHO, max_tokens=100, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    called, streamed = gateway_rows()
    assert answer.id == f"msg_{called.pk.hex}"
    assert (answer.type, answer.role, answer.model) == ("message", "assistant", ECHO)
    assert [(block.type, block.text) for block in answer.content] == [
        ("text", "Echo: hello claude")
    ]
    assert (answer.stop_reason, answer.stop_sequence) == ("end_turn", None)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (
        called.input_tokens,
        called.output_tokens,
    )
    assert called.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello claude"},
    ]
    assert called.response_message == {"role": "assistant", "content": "Echo: hello claude"}

    assert text == "Echo: stream me please"
    assert final.id == f"msg_{streamed.pk.hex}"
    assert [(block.type, block.text) for block in final.content] == [("text", text)]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        streamed.input_tokens,
        streamed.output_tokens,
    )
    assert {(row.status, row.api_key.user_id) for row in (called, streamed)} == {
        ("succeeded", user.pk)
    }

    # Errors come in Anthropic's shape, so the client raises its own exceptions.
    hello = {"role": "user", "content": "hello"}
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[hello])
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=ECHO, max_tokens=10, messages=[])
    nobody = anthropic.Anthropic(
        base_url=base,
        api_key="unused",
        default_headers={"X-Api-Key": anthropic.Omit(), "Authorization": anthropic.Omit()},
        max_retries=0,
    )
    with pytest.raises(anthropic.AuthenticationError) as anonymous:
        nobody.messages.create(model=ECHO, max_tokens=10, messages=[hello])
    stranger = anthropic.Anthropic(base_url=base, api_key="ctx_" + "A" * 40, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as unknown_key:
        stranger.messages.create(model=ECHO, max_tokens=10, messages=[hello])

    assert (unknown.value.type, unknown.value.body["error"]["code"]) == (
        "not_found_error",
        "model_not_found",
    )
    assert bad.value.type == "invalid_request_error"
    assert bad.value.api_message == "messages: must be a non-empty list."
    assert anonymous.value.type == unknown_key.value.type == "authentication_error"
    assert unknown_key.value.api_message == "Invalid API key."
    assert len(gateway_rows()) == 2


@pytest.mark.server
@pytest.mark.parametrize("model", [ECHO, FAKE_GPT])
def test_a_tool_loop_through_the_anthropic_client(start_web, user, fake_openai, model):
    """tools -> tool_use (whole, then streamed) -> tool_result -> text, on echo and on an
    OpenAI-compatible provider."""
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="anthropic client")
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    question = {"role": "user", "content": QUESTION}

    called = client.messages.create(
        model=model, max_tokens=100, tools=[WEATHER], messages=[question]
    )
    with client.messages.stream(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[question],
        extra_body={"cache": False},  # asked again, not replayed from the cache
    ) as stream:
        streamed = stream.get_final_message()
    [call] = called.content
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 22 C"}
    answered = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": called.content},
            {"role": "user", "content": [result]},
        ],
    )

    for answer in (called, streamed):
        assert answer.stop_reason == "tool_use"
        [block] = answer.content
        assert (block.type, block.id, block.name, block.input) == (
            "tool_use",
            call.id,
            "get_weather",
            {"city": QUESTION},
        )
    assert answered.stop_reason == "end_turn"
    [text] = answered.content
    assert text.type == "text"
    assert text.text.startswith("Echo: " if model == ECHO else "fake: ")

    rows = gateway_rows()
    assert [row.finish_reason for row in rows] == ["tool_calls", "tool_calls", "stop"]
    assert [row.cached for row in rows] == [False, False, False]
    assert rows[0].params == {"max_tokens": 100, "tools": [WEATHER_FUNCTION]}
    assert rows[0].response_message["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": QUESTION})},
        }
    ]
    assert rows[2].messages == [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps({"city": QUESTION}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 22 C"},
    ]
    if model == FAKE_GPT:
        chats = upstream_chats(fake_openai)
        assert len(chats) == 3
        assert chats[0]["tools"] == [WEATHER_FUNCTION]
        assert chats[2]["messages"] == rows[2].messages


# --- In process: the request translated -----------------------------------------------


@pytest.mark.django_db
def test_a_message_in_anthropics_shape_recorded_as_a_gateway_call(anthropic_client, user):
    response = anthropic_client.post(
        MESSAGES,
        message(system="Be brief.", metadata={"user_id": "customer-7"}),
        format="json",
    )

    assert response.status_code == 200, response.json()
    [row] = gateway_rows()
    assert response.json() == {
        "id": f"msg_{row.pk.hex}",
        "type": "message",
        "role": "assistant",
        "model": ECHO,
        "content": [{"type": "text", "text": "Echo: hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": row.input_tokens, "output_tokens": row.output_tokens},
    }
    assert (row.status, row.owner, row.api_key.user) == ("succeeded", user, user)
    assert row.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert row.params == {"max_tokens": 100}
    assert row.metadata == {"user_id": "customer-7"}
    assert (row.response, row.response_message) == (
        "Echo: hello",
        {"role": "assistant", "content": "Echo: hello"},
    )


@pytest.mark.django_db
def test_content_blocks_become_openai_messages_and_params(anthropic_client):
    """Every block and field Anthropic's request may hold, in the services' shapes."""
    call_id = "toolu_01"
    body = {
        "model": ECHO,
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "x"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"c": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Here it is."},
                    {
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "content": [{"type": "text", "text": "Sunny"}],
                    },
                ],
            },
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END", "STOP"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
    }

    response = anthropic_client.post(MESSAGES, body, format="json")

    assert response.status_code == 200, response.json()
    [row] = gateway_rows()
    assert row.messages == [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"c": 1}'},
                }
            ],
        },
        # A call's results come right after the call, before the user's other blocks.
        {"role": "tool", "tool_call_id": call_id, "content": [{"type": "text", "text": "Sunny"}]},
        {"role": "user", "content": [{"type": "text", "text": "Here it is."}]},
    ]
    assert row.params == {
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END", "STOP"],
        "tools": [WEATHER_FUNCTION],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
    ids=["auto", "any", "none", "tool"],
)
def test_tool_choice_becomes_openais(anthropic_client, tool_choice, expected):
    response = anthropic_client.post(
        MESSAGES, message(tools=[WEATHER], tool_choice=tool_choice), format="json"
    )

    assert response.status_code == 200, response.json()
    [row] = gateway_rows()
    assert row.params["tool_choice"] == expected
    called = [block["type"] for block in response.json()["content"]] == ["tool_use"]
    assert called is (expected != "none")


@pytest.mark.django_db
def test_images_reach_an_openai_compatible_provider_as_image_parts(api_client, openai_model):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]
    body = message(model=FAKE_GPT, messages=[{"role": "user", "content": content}])

    response = api_client.post(MESSAGES, body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["content"] == [{"type": "text", "text": "fake: What are these?"}]
    [sent] = upstream_chats(openai_model)
    assert sent["model"] == FAKE_GPT
    assert sent["max_tokens"] == 100
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                {"type": "text", "text": "What are these?"},
            ],
        }
    ]


@pytest.mark.django_db
def test_an_anthropic_provider_answers_too(api_client, anthropic_model):
    response = api_client.post(
        MESSAGES, message(model="fake-claude", prompt="hi there", system="Be brief."), format="json"
    )

    assert response.status_code == 200, response.json()
    answer = response.json()
    assert (answer["model"], answer["content"]) == (
        "fake-claude",
        [{"type": "text", "text": "fake: hi there"}],
    )
    assert answer["stop_reason"] == "end_turn"
    [sent] = [r["body"] for r in anthropic_model.requests if r["path"] == "/v1/messages"]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": "hi there"}]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True])
def test_the_stop_sequence_that_ended_the_answer_is_named(api_client, anthropic_model, stream):
    body = message(
        model="fake-claude", prompt="one two HALT three", stop_sequences=["HALT"], stream=stream
    )

    response = api_client.post(MESSAGES, body, format="json")

    if stream:
        events = events_of(response)
        text, stop = streamed_text(events), events[-2][1]["delta"]
    else:
        answer = response.json()
        [block] = answer["content"]
        text, stop = block["text"], {k: answer[k] for k in ("stop_reason", "stop_sequence")}
    assert text == "fake: one two"
    assert stop == {"stop_reason": "stop_sequence", "stop_sequence": "HALT"}
    [sent] = [r["body"] for r in anthropic_model.requests if r["path"] == "/v1/messages"]
    assert sent["stop_sequences"] == ["HALT"]


@pytest.mark.django_db
def test_a_tool_loop_with_an_openai_compatible_provider(api_client, openai_model):
    question = {"role": "user", "content": QUESTION}
    first = api_client.post(
        MESSAGES, message(model=FAKE_GPT, messages=[question], tools=[WEATHER]), format="json"
    ).json()
    assert first["stop_reason"] == "tool_use"
    [call] = first["content"]
    assert (call["type"], call["name"], call["input"]) == (
        "tool_use",
        "get_weather",
        {"city": "Paris"},
    )

    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny"}
    conversation = [question, {"role": "assistant", "content": [call]}]
    second = api_client.post(
        MESSAGES,
        message(
            model=FAKE_GPT,
            messages=[*conversation, {"role": "user", "content": [result]}],
            tools=[WEATHER],
        ),
        format="json",
    ).json()

    assert second["stop_reason"] == "end_turn"
    [text] = second["content"]
    assert text["type"] == "text"
    assert "Sunny" in text["text"]
    sent = upstream_chats(openai_model)[-1]["messages"]
    assert sent[1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
    ]


@pytest.mark.django_db
def test_max_tokens_ends_the_answer_with_stop_reason_max_tokens(anthropic_client):
    body = message(prompt="a long question for a short answer", max_tokens=2)

    answer = anthropic_client.post(MESSAGES, body, format="json").json()

    assert answer["stop_reason"] == "max_tokens"
    assert answer["usage"]["output_tokens"] == 2


@pytest.mark.django_db
def test_a_repeated_message_is_answered_from_the_cache_unless_told_not_to(anthropic_client):
    body = message(prompt="cache me")

    answers = [
        anthropic_client.post(MESSAGES, body, format="json").json(),
        anthropic_client.post(MESSAGES, body, format="json").json(),
        anthropic_client.post(MESSAGES, {**body, "cache": False}, format="json").json(),
        anthropic_client.post(MESSAGES, body, format="json", HTTP_CACHE_CONTROL="no-store").json(),
    ]

    assert {json.dumps(answer["content"]) for answer in answers} == {
        json.dumps([{"type": "text", "text": "Echo: cache me"}])
    }
    assert len({answer["id"] for answer in answers}) == 4
    assert [row.cached for row in gateway_rows()] == [False, True, False, False]


# --- In process: streaming -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_streamed_text_answer_is_anthropics_event_sequence(anthropic_client):
    response = anthropic_client.post(
        MESSAGES, message(prompt="one two three", stream=True), format="json"
    )

    events = events_of(response)

    [row] = gateway_rows()
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == (f"msg_{row.pk.hex}", ECHO, [])
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert streamed_text(events) == "Echo: one two three" == row.response
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": row.input_tokens, "output_tokens": row.output_tokens},
    }
    assert (row.status, row.mode) == ("succeeded", "gateway")


@pytest.mark.django_db(transaction=True)
def test_streamed_tool_calls_are_tool_use_blocks_with_input_json_deltas(api_client, openai_model):
    body = message(model=FAKE_GPT, prompt=QUESTION, tools=[WEATHER], stream=True)

    events = events_of(api_client.post(MESSAGES, body, format="json"))

    [row] = gateway_rows()
    [call] = row.response_message["tool_calls"]
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert events[1][1]["content_block"] == {
        "type": "tool_use",
        "id": call["id"],
        "name": "get_weather",
        "input": {},
    }
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert len(deltas) > 1  # the provider's argument fragments, passed on as they came
    assert {delta["type"] for delta in deltas} == {"input_json_delta"}
    assert json.loads("".join(delta["partial_json"] for delta in deltas)) == {"city": QUESTION}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert row.finish_reason == "tool_calls"


@pytest.mark.django_db(transaction=True)
def test_a_provider_failing_mid_stream_ends_it_with_an_error_event(api_client, openai_model):
    openai_model.script(Reply(fail_after=2))
    body = message(model=FAKE_GPT, prompt="one two three four", stream=True)

    events = events_of(api_client.post(MESSAGES, body, format="json"))

    assert streamed_text(events) == "fake: one"
    name, error = events[-1]
    assert name == "error"
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert error["error"]["message"]
    assert "message_stop" not in [name for name, _ in events]
    [row] = gateway_rows()
    assert (row.status, row.error["type"]) == ("failed", "server_error")


@pytest.mark.django_db(transaction=True)
def test_a_client_leaving_mid_stream_is_recorded(anthropic_client):
    response = anthropic_client.post(
        MESSAGES, message(prompt="a b c d e f g h", stream=True), format="json"
    )
    events = iter(response.streaming_content)
    for _ in range(3):  # message_start, content_block_start, the first delta
        next(events)

    response.close()

    [row] = gateway_rows()
    assert (row.status, row.error["type"]) == ("failed", "client_disconnected")


# --- In process: errors in Anthropic's shape -------------------------------------------


def anthropic_error(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}, body
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message", "code"}, body
    return body["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message_start"),
    [
        ([], "The request body must be a JSON object."),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model:"),
        ({"model": ECHO, "messages": [{"role": "user", "content": "x"}]}, "max_tokens:"),
        (message(max_tokens=0), "max_tokens:"),
        (message(messages=[]), "messages:"),
        (message(messages=[{"role": "system", "content": "x"}]), "messages.0.role:"),
        (message(messages=[{"role": "user", "content": 7}]), "messages.0.content:"),
        (message(messages=[{"role": "user", "content": []}]), "messages.0.content:"),
        (
            message(messages=[{"role": "user", "content": [{"type": "document"}]}]),
            "messages.0.content.0.type:",
        ),
        (
            message(messages=[{"role": "assistant", "content": [{"type": "tool_result"}]}]),
            "messages.0.content.0.type:",
        ),
        (
            message(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
            "messages.0.content.0.source.type:",
        ),
        (
            message(
                messages=[
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}],
                    },
                ]
            ),
            "messages.1.content.0.input:",
        ),
        (
            message(
                messages=[{"role": "user", "content": [{"type": "tool_result", "content": "r"}]}]
            ),
            "messages.0.content.0.tool_use_id:",
        ),
        (
            message(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "x"}]}
                        ],
                    }
                ]
            ),
            "messages.0.content.0.content.0.type:",
        ),
        (message(system=5), "system:"),
        (message(tools=[{"name": "f"}]), "tools.0.input_schema:"),
        (message(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type:"),
        (message(tools=[WEATHER], tool_choice={"type": "sometimes"}), "tool_choice.type:"),
        (message(tools=[WEATHER], tool_choice={"type": "tool"}), "tool_choice.name:"),
        (message(stop_sequences="END"), "stop_sequences:"),
        (message(temperature=3), "temperature:"),
        (message(top_k=-1), "top_k:"),
        (message(stream="yes"), "stream:"),
        (message(metadata=[1]), "metadata:"),
        (message(prompt="nul \x00 here"), "Null characters"),
    ],
)
def test_bad_requests_are_400_in_anthropics_shape(anthropic_client, body, message_start):
    response = anthropic_client.post(MESSAGES, body, format="json")

    assert response.status_code == 400, response.content
    error = anthropic_error(response)
    assert (error["type"], error["code"]) == ("invalid_request_error", "validation_error")
    assert error["message"].startswith(message_start), error["message"]
    assert not gateway_rows()


@pytest.mark.django_db
def test_errors_around_the_view_are_in_anthropics_shape(anon_client, anthropic_client):
    no_key = anon_client.post(MESSAGES, message(), format="json")
    unknown_model = anthropic_client.post(MESSAGES, message(model="no-such-model"), format="json")
    malformed = anthropic_client.post(MESSAGES, "{oops", content_type="application/json")
    wrong_method = anthropic_client.get(MESSAGES)
    no_such_endpoint = anthropic_client.post(f"{MESSAGES}/count_tokens", message(), format="json")

    assert no_key.status_code == 401
    assert no_key["WWW-Authenticate"].startswith("Bearer")
    assert anthropic_error(no_key)["type"] == "authentication_error"
    assert unknown_model.status_code == 404
    assert anthropic_error(unknown_model)["type"] == "not_found_error"
    assert anthropic_error(unknown_model)["code"] == "model_not_found"
    assert malformed.status_code == 400
    assert anthropic_error(malformed)["code"] == "malformed_request"
    assert wrong_method.status_code == 405
    assert anthropic_error(wrong_method)["type"] == "invalid_request_error"
    assert no_such_endpoint.status_code == 404
    assert anthropic_error(no_such_endpoint)["type"] == "not_found_error"
    # The OpenAI-compatible paths keep OpenAI's shape.
    openai = anon_client.post("/v1/chat/completions", {}, format="json").json()
    assert openai["error"]["type"] == "authentication_error"
    assert "request_id" not in openai


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("replies", "status", "error_type", "code"),
    [
        ([Reply(status=400)], 400, "invalid_request_error", "provider_rejected_request"),
        ([Reply(status=500)] * 3, 502, "api_error", "provider_error"),
    ],
    ids=["rejected", "failing"],
)
def test_provider_failures_are_in_anthropics_shape(
    api_client, openai_model, replies, status, error_type, code
):
    openai_model.script(*replies)

    response = api_client.post(MESSAGES, message(model=FAKE_GPT), format="json")

    assert response.status_code == status, response.content
    error = anthropic_error(response)
    assert (error["type"], error["code"]) == (error_type, code)
    [row] = gateway_rows()
    assert row.status == "failed"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        ({"HTTP_AUTHORIZATION": "Bearer {key}"}, 200),
        ({"HTTP_X_API_KEY": "{key}"}, 200),
        ({"HTTP_X_API_KEY": "ctx_" + "A" * 40}, 401),
        ({"HTTP_X_API_KEY": "not a key"}, 401),
        # The Authorization header, when there is one, is the credential.
        ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "HTTP_X_API_KEY": "{key}"}, 401),
    ],
    ids=["bearer", "x-api-key", "unknown-key", "malformed-key", "authorization-first"],
)
def test_either_header_carries_the_api_key(api_key, credentials, status):
    client = APIClient()
    client.credentials(**{name: value.format(key=api_key) for name, value in credentials.items()})

    response = client.post(MESSAGES, message(), format="json")

    assert response.status_code == status, response.content
