"""Anthropic as the provider of OpenAI-shaped calls: the request translated to the Messages
API (tools, tool results, images, system, stop, JSON schema) and the answer back, whole or
streamed, against the fake Anthropic server, and a full tool loop through the gateway."""

import json
from typing import Any

import httpx2
import pytest
from django.core.handlers.wsgi import WSGIHandler
from openai import OpenAI

from apps.ai_interactions.answers import AnswerAssembler
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.providers.anthropic_messages import (
    JSON_OBJECT_INSTRUCTION,
    AnthropicProvider,
)
from apps.ai_interactions.providers.base import Generation, ProviderCallError, StreamChunk
from tests.fakes import word_count
from tests.fakes.anthropic_server import FakeAnthropic

PROMPT = "What's the weather in Paris?"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
# The fake calls a tool with each string property set to the last user text.
WEATHER_CALL = {
    "id": "toolu_fake_0",
    "type": "function",
    "function": {"name": "get_weather", "arguments": json.dumps({"city": PROMPT})},
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "words": {"type": "integer"}},
    "required": ["city", "words"],
    "additionalProperties": False,
}
CITY_FACTS = {"type": "json_schema", "json_schema": {"name": "city_facts", "schema": CITY_SCHEMA}}


@pytest.fixture
def provider(fake_anthropic: FakeAnthropic) -> AnthropicProvider:
    return AnthropicProvider(base_url=fake_anthropic.base_url, api_key="sk-ant-test")


def ask(provider: AnthropicProvider, messages: list[dict] | None = None, **params) -> Generation:
    messages = messages or [{"role": "user", "content": PROMPT}]
    return provider.generate(messages=messages, model="claude-x", params=params, timeout=5)


def ask_streamed(
    provider: AnthropicProvider, messages: list[dict] | None = None, **params
) -> list[StreamChunk]:
    messages = messages or [{"role": "user", "content": PROMPT}]
    return list(provider.stream(messages=messages, model="claude-x", params=params, timeout=5))


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    """The body of the last request the fake received."""
    return fake.requests[-1]["body"]


def answer_message(generation: Generation) -> dict[str, Any]:
    return generation.body["choices"][0]["message"]


# The request


@pytest.mark.parametrize(
    ("params", "tool_choice"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            {"type": "tool", "name": "get_time"},
        ),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
    ids=["absent", "auto", "required", "none", "named", "serial", "required-serial", "none-serial"],
)
def test_tools_and_tool_choice_are_translated(fake_anthropic, provider, params, tool_choice):
    ask(provider, tools=[WEATHER, TIME], **params)

    body = sent(fake_anthropic)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": WEATHER["function"]["parameters"],
        },
        {"name": "get_time", "input_schema": TIME["function"]["parameters"]},
    ]
    assert body.get("tool_choice") == tool_choice
    assert "parallel_tool_calls" not in body


def test_tool_calls_and_their_results_become_tool_use_and_tool_result_blocks(
    fake_anthropic, provider
):
    messages = [
        {"role": "user", "content": PROMPT},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "Should I take a coat?"},
    ]

    generation = ask(provider, messages, tools=[WEATHER, TIME])

    assert sent(fake_anthropic)["messages"] == [
        {"role": "user", "content": PROMPT},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
            ],
        },
        # Tool results and the next user message are one user turn: roles alternate.
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                {"type": "text", "text": "Should I take a coat?"},
            ],
        },
    ]
    # The fake accepts only tool uses and results that pair up, and answers from them.
    assert generation.text == "fake: 18C and sunny noon Should I take a coat?"
    assert generation.finish_reason == "stop"
    assert "tool_calls" not in answer_message(generation)


def test_a_tool_result_without_its_call_is_the_providers_bad_request(fake_anthropic, provider):
    messages = [
        {"role": "user", "content": PROMPT},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "18C"},
    ]

    with pytest.raises(ProviderCallError) as raised:
        ask(provider, messages, tools=[WEATHER])

    assert (raised.value.status, raised.value.error_type) == (400, "bad_request")
    assert "tool_result" in raised.value.message


def test_image_parts_become_url_and_base64_image_blocks(fake_anthropic, provider):
    content = [
        {"type": "text", "text": "Which is bigger?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
        },
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]

    generation = ask(provider, [{"role": "user", "content": content}])

    assert sent(fake_anthropic)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Which is bigger?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        }
    ]
    assert generation.text == "fake: Which is bigger?"


def test_system_and_developer_messages_become_the_system_prompt(fake_anthropic, provider):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": PROMPT},
    ]

    ask(provider, messages)

    body = sent(fake_anthropic)
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["messages"] == [{"role": "user", "content": PROMPT}]


def test_stop_limits_and_sampling_are_translated_and_other_fields_dropped(fake_anthropic, provider):
    generation = ask(
        provider,
        stop=["END", "STOP"],
        max_completion_tokens=3,
        temperature=0.2,
        top_p=0.9,
        n=2,
        seed=7,
        logprobs=True,
        top_logprobs=2,
        user="someone",
        presence_penalty=0.5,
        logit_bias={"50256": -100},
        response_format={"type": "text"},
        reasoning_effort="low",
    )

    body = sent(fake_anthropic)
    assert body == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 3,
        "stop_sequences": ["END", "STOP"],
        "temperature": 0.2,
        "top_p": 0.9,
    }
    assert (generation.text, generation.finish_reason) == ("fake: What's the", "length")


def test_json_object_is_asked_for_in_the_system_prompt(fake_anthropic, provider):
    ask(
        provider,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        response_format={"type": "json_object"},
    )

    assert sent(fake_anthropic)["system"] == f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"


def test_a_json_schema_is_a_forced_tool_whose_input_is_the_answer(fake_anthropic, provider):
    generation = ask(provider, response_format=CITY_FACTS)

    body = sent(fake_anthropic)
    [tool] = body["tools"]
    assert (tool["name"], tool["input_schema"]) == ("city_facts", CITY_SCHEMA)
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "city_facts",
        "disable_parallel_tool_use": True,
    }
    assert json.loads(generation.text) == {"city": PROMPT, "words": 5}
    assert generation.finish_reason == "stop"
    message = answer_message(generation)
    assert message["content"] == generation.text
    assert "tool_calls" not in message
    assert generation.body["choices"][0]["finish_reason"] == "stop"


def test_a_json_schema_beside_tools_lets_the_model_call_either(fake_anthropic, provider):
    ask(
        provider,
        tools=[WEATHER],
        response_format={"type": "json_schema", "json_schema": {"schema": CITY_SCHEMA}},
    )

    body = sent(fake_anthropic)
    assert [tool["name"] for tool in body["tools"]] == ["get_weather", "json_answer"]
    assert body["tool_choice"] == {"type": "any"}


# The answer


def test_a_tool_call_comes_back_as_openai_tool_calls(fake_anthropic, provider):
    generation = ask(
        provider, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )

    assert generation.text == ""
    assert generation.finish_reason == "tool_calls"
    arguments = json.dumps({"city": PROMPT})
    assert generation.body == {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [WEATHER_CALL],
                    "refusal": None,
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": word_count(arguments),
            "total_tokens": 5 + word_count(arguments),
        },
    }
    assert (generation.input_tokens, generation.output_tokens) == (5, word_count(arguments))


def test_text_before_a_tool_call_is_the_content(provider):
    generation = ask(provider, tools=[WEATHER, TIME])

    message = answer_message(generation)
    assert message["content"] == generation.text == "fake: using get_weather"
    assert message["tool_calls"] == [WEATHER_CALL]
    assert generation.finish_reason == "tool_calls"


def test_parallel_tool_calls_come_back_in_order(provider):
    generation = ask(provider, tools=[WEATHER, TIME], tool_choice="required")

    calls = answer_message(generation)["tool_calls"]
    assert [(call["id"], call["function"]["name"]) for call in calls] == [
        ("toolu_fake_0", "get_weather"),
        ("toolu_fake_1", "get_time"),
    ]
    assert json.loads(calls[1]["function"]["arguments"]) == {"zone": PROMPT}


# The stream


def test_a_streamed_tool_call_arrives_as_openai_tool_call_deltas(provider):
    chunks = ask_streamed(provider, tools=[WEATHER], tool_choice="required")

    *deltas, finish, last = chunks
    assert deltas[0].choices == [
        {
            "index": 0,
            "delta": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_fake_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    fragments = [chunk.choices[0]["delta"]["tool_calls"] for chunk in deltas[1:]]
    assert len(fragments) > 1, "the arguments arrive in pieces"
    assert all([{"index", "function"}] == [set(call) for call in f] for f in fragments)
    assert "".join(f[0]["function"]["arguments"] for f in fragments) == json.dumps({"city": PROMPT})
    assert all(chunk.delta == "" and chunk.finish_reason is None for chunk in deltas)
    assert finish.choices == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    ]
    assert (last.choices, last.finish_reason, last.input_tokens) == (None, "tool_calls", 5)


@pytest.mark.parametrize(
    "params",
    [
        {"tools": [WEATHER, TIME]},
        {"tools": [WEATHER, TIME], "tool_choice": "required"},
        {"response_format": CITY_FACTS},
        {},
    ],
    ids=["text-then-call", "parallel-calls", "json-schema", "text"],
)
def test_a_streamed_answer_assembles_to_the_whole_answer(provider, params):
    """The service's assembler makes of the chunks what the provider answers whole."""
    whole = ask(provider, **params)
    assembled = AnswerAssembler()

    for chunk in ask_streamed(provider, **params):
        assembled.add(chunk)

    answer = assembled.answer()
    assert {**answer["message"], "refusal": None} == answer_message(whole)
    assert answer["text"] == whole.text
    assert answer["finish_reason"] == whole.finish_reason
    assert (answer["input_tokens"], answer["output_tokens"]) == (
        whole.input_tokens,
        whole.output_tokens,
    )


def test_a_streamed_json_schema_answer_is_content(provider):
    chunks = ask_streamed(provider, response_format=CITY_FACTS)

    assert "".join(chunk.delta for chunk in chunks) == json.dumps({"city": PROMPT, "words": 5})
    assert not any("tool_calls" in (chunk.choices or [{}])[0].get("delta", {}) for chunk in chunks)
    assert chunks[-1].finish_reason == "stop"


# Through the gateway: the official openai client, a whole tool loop


@pytest.fixture
def gateway(api_key, anthropic_model):
    """The openai client, speaking HTTP to the in-process gateway with ``fake-claude``."""
    transport = httpx2.WSGITransport(app=WSGIHandler())
    with httpx2.Client(transport=transport) as http:
        yield OpenAI(
            base_url="http://testserver/v1", api_key=api_key, http_client=http, max_retries=0
        )


def assistant_turn(message: Any) -> dict[str, Any]:
    """The answer's message as the client sends it back."""
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        for call in message.tool_calls
    ]
    return {"role": "assistant", "content": message.content, "tool_calls": calls}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("tool_choice", "content", "calls", "results"),
    [
        ("auto", "fake: using get_weather", [WEATHER_CALL], ["18C and sunny"]),
        (
            "required",
            None,
            [
                WEATHER_CALL,
                {
                    "id": "toolu_fake_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": json.dumps({"zone": PROMPT})},
                },
            ],
            ["18C and sunny", "noon"],
        ),
    ],
    ids=["auto", "required"],
)
def test_a_tool_loop_through_the_gateway(
    gateway, anthropic_model, streamed, tool_choice, content, calls, results
):
    def complete(messages: list[dict]) -> Any:
        request = {
            "model": "fake-claude",
            "messages": messages,
            "tools": [WEATHER, TIME],
            "tool_choice": tool_choice,
        }
        if not streamed:
            return gateway.chat.completions.create(**request)
        with gateway.chat.completions.stream(
            **request, stream_options={"include_usage": True}
        ) as stream:
            return stream.get_final_completion()

    asked = [{"role": "user", "content": PROMPT}]
    first = complete(asked)

    [choice] = first.choices
    assert choice.finish_reason == "tool_calls"
    assert assistant_turn(choice.message) == {
        "role": "assistant",
        "content": content,
        "tool_calls": calls,
    }
    assert first.usage.prompt_tokens == 5

    answered = [
        *asked,
        assistant_turn(choice.message),
        *(
            {"role": "tool", "tool_call_id": call["id"], "content": result}
            for call, result in zip(calls, results, strict=True)
        ),
    ]
    second = complete(answered)

    [choice] = second.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == "fake: " + " ".join(results)
    assert not choice.message.tool_calls
    assert [request["body"].get("stream", False) for request in anthropic_model.requests] == [
        streamed,
        streamed,
    ]
    # The second request carried the calls and their results as Anthropic blocks.
    turns = anthropic_model.requests[-1]["body"]["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert [block["id"] for block in turns[1]["content"] if block["type"] == "tool_use"] == [
        call["id"] for call in calls
    ]
    assert [block["content"] for block in turns[2]["content"]] == results
    # Two rows: the messages as sent, the whole answer message.
    rows = list(AIInteraction.objects.filter(mode="gateway").order_by("created_at"))
    assert [row.status for row in rows] == ["succeeded", "succeeded"]
    assert [row.messages for row in rows] == [asked, answered]
    assert [row.finish_reason for row in rows] == ["tool_calls", "stop"]
    assert rows[0].response == (content or "")
    assert rows[0].response_message["content"] == content
    assert rows[0].response_message["tool_calls"] == calls
    assert rows[1].response == "fake: " + " ".join(results)
    assert rows[1].response_message["content"] == rows[1].response
