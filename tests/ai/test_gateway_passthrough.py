"""``POST /v1/chat/completions`` passes OpenAI's whole surface through, as the official
openai client sees it: the tool loop (plain and streamed), every request field to the
provider as sent, every answer field back, the cache, ``n``, unknown models and the
provider's own 4xx.

The provider is the fake OpenAI server; ContextOS runs in process (its WSGI app under
the SDK's own HTTP client) or as a real gunicorn.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from apps.accounts.services import api_key_create
from apps.ai_interactions.models import AIInteraction
from tests.fakes import Reply
from tests.fakes.openai_server import SYSTEM_FINGERPRINT, FakeOpenAI, tool_calls_for
from tests.sse import data_events

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "fake-gpt"
COMPLETIONS = "/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER, CLOCK]
# What the client's functions answer, by name.
RESULTS = {"get_weather": '{"temperature": 18, "sky": "sunny"}', "get_time": "14:05"}
CITY_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city_facts",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "population": {"type": "integer"},
                "coastal": {"type": "boolean"},
            },
            "required": ["city", "population", "coastal"],
            "additionalProperties": False,
        },
    },
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
IMAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
        ],
    }
]
# A provider's answer to an invalid tool schema, as OpenAI words it.
INVALID_SCHEMA = {
    "error": {
        "message": (
            "Invalid schema for function 'get_weather': In context=('properties', 'city'), "
            "'strng' is not valid under any of the given schemas."
        ),
        "type": "invalid_request_error",
        "param": "tools[0].function.parameters",
        "code": "invalid_function_parameters",
    }
}


@dataclass
class Gateway:
    """The official client pointed at ContextOS, and every completion body it sent."""

    client: OpenAI
    sent: list[dict[str, Any]] = field(default_factory=list)


def connect(base_url: str, key: str, transport: httpx2.BaseTransport | None = None) -> Gateway:
    sent: list[dict[str, Any]] = []

    def record(request: httpx2.Request) -> None:
        if request.url.path.endswith(COMPLETIONS):
            sent.append(json.loads(request.content))

    http = httpx2.Client(transport=transport, event_hooks={"request": [record]})
    client = OpenAI(
        base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=30, http_client=http
    )
    return Gateway(client, sent)


@pytest.fixture
def gateway(api_key) -> Iterator[Gateway]:
    """The client talking to ContextOS's WSGI application in this process."""
    from django.core.wsgi import get_wsgi_application

    in_process = connect(
        "http://testserver", api_key, httpx2.WSGITransport(app=get_wsgi_application())
    )
    yield in_process
    in_process.client.close()


def server_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODELS": f"{MODEL}:1.00:2.00",
        "AI_RETRY_BASE_DELAY": "0.01",
    }


def upstream_bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The body of every completion request the fake provider received."""
    return [request["body"] for request in fake.requests if request["path"] == fake.main_path]


def rows(**filters: Any) -> list[AIInteraction]:
    return list(AIInteraction.objects.filter(mode="gateway", **filters).order_by("created_at"))


def ask(client: OpenAI, **request: Any) -> tuple[Any, dict[str, Any]]:
    """A completion as the SDK parses it, and as the JSON ContextOS wrote."""
    raw = client.chat.completions.with_raw_response.create(**request)
    return raw.parse(), raw.http_response.json()


def answer_read(client: OpenAI, **request: Any) -> Any:
    """The whole answer: the completion, or every chunk of the stream."""
    answer = client.chat.completions.create(**request)
    return list(answer) if request.get("stream") else answer


def without_head(completion: dict[str, Any]) -> dict[str, Any]:
    """A completion without what ContextOS sets itself: its id, time and model name."""
    return {
        key: value for key, value in completion.items() if key not in {"id", "created", "model"}
    }


def upstream_stream(fake: FakeOpenAI, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The choices of each chunk the fake streams for ``body``, asked directly."""
    with httpx2.Client(timeout=10) as http:
        text = http.post(f"{fake.base_url}{COMPLETIONS}", json=body).text
    return [
        event["choices"] for event in data_events(text) if event != "[DONE]" and event["choices"]
    ]


def streamed_choices(chunks: list[Any]) -> list[list[dict[str, Any]]]:
    """The choices of each chunk the client got, as ContextOS wrote them."""
    return [chunk.to_dict()["choices"] for chunk in chunks if chunk.choices]


def calls_of(tool_calls: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": call.type,
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        for call in tool_calls or ()
    ]


@dataclass
class Turn:
    """One answer as the client assembled it."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    chunks: list[Any] = field(default_factory=list)


def assembled(chunks: list[Any]) -> dict[int, Turn]:
    """Each choice of a stream, assembled from its deltas as OpenAI documents it."""
    turns: dict[int, Turn] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            turn = turns.setdefault(choice.index, Turn(None, [], None))
            if choice.delta.content:
                turn.content = (turn.content or "") + choice.delta.content
            for call in choice.delta.tool_calls or ():
                while len(turn.tool_calls) <= call.index:
                    turn.tool_calls.append(
                        {"id": "", "type": "", "function": {"name": "", "arguments": ""}}
                    )
                whole = turn.tool_calls[call.index]
                whole["id"] = call.id or whole["id"]
                whole["type"] = call.type or whole["type"]
                if call.function is not None:
                    whole["function"]["name"] += call.function.name or ""
                    whole["function"]["arguments"] += call.function.arguments or ""
            turn.finish_reason = choice.finish_reason or turn.finish_reason
    return turns


def turn(client: OpenAI, how: str, **request: Any) -> Turn:
    """Ask ``request`` as an agent would: ``create``, the SDK's ``stream`` helper, or
    ``stream=True`` with the chunks assembled by hand."""
    if how == "create":
        choice = client.chat.completions.create(**request).choices[0]
    elif how == "stream-helper":
        with client.chat.completions.stream(**request) as stream:
            choice = stream.get_final_completion().choices[0]
    else:
        chunks = list(client.chat.completions.create(**request, stream=True))
        return replace(assembled(chunks)[0], chunks=chunks)
    return Turn(choice.message.content, calls_of(choice.message.tool_calls), choice.finish_reason)


def run_tool_loop(gateway: Gateway, fake: FakeOpenAI, user: Any, how: str, city: str) -> None:
    """Ask with two tools, answer the calls with their results, get the final text; the
    calls are the provider's byte for byte and both calls are recorded."""
    question = f"What is the weather and the time in {city}?"
    messages = [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": question},
    ]
    asking = {"model": MODEL, "messages": messages, "tools": TOOLS, "tool_choice": "auto"}

    first = turn(gateway.client, how, **asking, parallel_tool_calls=True)

    upstream = upstream_bodies(fake)[-1]
    expected = tool_calls_for(upstream)
    assert [call["function"]["name"] for call in expected] == ["get_weather", "get_time"]
    assert json.loads(expected[0]["function"]["arguments"]) == {"city": question, "unit": "celsius"}
    assert (first.finish_reason, first.content) == ("tool_calls", None)
    assert first.tool_calls == expected
    if how == "stream-chunks":
        # OpenAI's deltas as the provider sent them: a head per call, then fragments.
        assert streamed_choices(first.chunks) == upstream_stream(fake, upstream)
        heads = [
            call
            for chunk in first.chunks
            for choice in chunk.choices
            for call in choice.delta.tool_calls or ()
            if call.id
        ]
        assert [(h.index, h.function.name, h.function.arguments) for h in heads] == [
            (0, "get_weather", ""),
            (1, "get_time", ""),
        ]

    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": RESULTS[call["function"]["name"]]}
        for call in first.tool_calls
    ]
    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": first.tool_calls},
        *results,
    ]
    final = turn(gateway.client, how, **{**asking, "messages": follow_up})

    assert final.finish_reason == "stop"
    assert final.content == f"fake: {RESULTS['get_weather']} {RESULTS['get_time']}"
    assert final.tool_calls == []
    assert upstream_bodies(fake)[-1]["messages"] == follow_up
    calling, answering = rows(owner=user)[-2:]
    assert (calling.status, calling.finish_reason, calling.response) == (
        "succeeded",
        "tool_calls",
        "",
    )
    assert calling.messages == messages
    assert calling.response_message["tool_calls"] == expected
    assert (answering.status, answering.finish_reason) == ("succeeded", "stop")
    assert answering.messages == follow_up
    assert answering.response == final.content
    assert answering.response_message["content"] == final.content


# The tool loop


@pytest.mark.parametrize("how", ["create", "stream-helper", "stream-chunks"])
def test_a_tool_loop_in_process(gateway, openai_model, user, how):
    run_tool_loop(gateway, openai_model, user, how, "Paris")
    assert len(upstream_bodies(openai_model)) == 2 + (how == "stream-chunks")


@pytest.mark.server
def test_a_tool_loop_through_gunicorn_every_way(start_web, user, fake_openai):
    base = start_web(**server_env(fake_openai))
    _, key = api_key_create(user=user, name="agent")
    through_gunicorn = connect(base, key)
    for how, city in [("create", "Paris"), ("stream-helper", "Oslo"), ("stream-chunks", "Lima")]:
        run_tool_loop(through_gunicorn, fake_openai, user, how, city)
    assert len(rows(owner=user)) == 6


# Every field there, every field back


EVERY_FIELD = {
    "tools": TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": {"type": "text"},
    "seed": 42,
    "temperature": 0.3,
    "top_p": 0.9,
    "max_completion_tokens": 300,
    "stop": ["\n\n"],
    "frequency_penalty": 0.5,
    "presence_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "user": "end-user-7",
    "reasoning_effort": "low",
    "service_tier": "auto",
    "store": False,
}
# Fields the openai client does not know, sent with ``extra_body``.
UNKNOWN_FIELDS = {"top_k": 40, "repetition_penalty": 1.1, "vendor": {"beam": [1, 2], "x": None}}


def test_a_clients_own_stream_options_go_with_the_usage_contextos_asks_for(gateway, openai_model):
    options = {"include_usage": False, "include_obfuscation": False}

    chunks = list(
        gateway.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options=options,
        )
    )

    [upstream] = upstream_bodies(openai_model)
    assert upstream["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
    [row] = rows()
    assert row.input_tokens > 0  # ContextOS counted the tokens all the same


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_field_reaches_the_provider_as_sent(gateway, openai_model, stream):
    messages = [{"role": "user", "content": "Plan my day in Oslo"}]
    streaming = {"stream": True} if stream else {}
    answer = gateway.client.chat.completions.create(
        model=MODEL, messages=messages, **EVERY_FIELD, extra_body=UNKNOWN_FIELDS, **streaming
    )
    if stream:
        list(answer)

    [sent] = gateway.sent
    assert sent == {
        "model": MODEL,
        "messages": messages,
        **EVERY_FIELD,
        **UNKNOWN_FIELDS,
        **streaming,
    }
    [upstream] = upstream_bodies(openai_model)
    # Only the stream's usage is asked for by ContextOS itself (to count the tokens).
    assert upstream == sent | ({"stream_options": {"include_usage": True}} if stream else {})
    [row] = rows()
    assert row.params == {**EVERY_FIELD, **UNKNOWN_FIELDS}
    assert row.messages == messages


def test_a_scripted_completion_comes_back_field_for_field(gateway, openai_model):
    scripted = {
        "id": "chatcmpl-upstream-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-gpt-2025-06-01",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "annotations": [],
                    "tool_calls": [
                        {
                            "id": "call_Vx7kq2",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city":"Paris",  "unit":"celsius"}',
                            },
                        },
                        {
                            "id": "call_8Hbz01",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"city":"Paris"}'},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "refusal": "I can't help."},
                "logprobs": {
                    "content": None,
                    "refusal": [{"token": "I", "logprob": -0.5, "bytes": [73], "top_logprobs": []}],
                },
                "finish_reason": "stop",
            },
        ],
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 42,
            "total_tokens": 73,
            "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 8,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_2025_06",
        "x_vendor_trace": {"region": "eu", "ms": 12},
    }
    openai_model.script(Reply(body=scripted))

    completion, answered = ask(
        gateway.client,
        model=MODEL,
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=TOOLS,
        n=2,
    )

    assert without_head(answered) == without_head(scripted)
    assert (
        calls_of(completion.choices[0].message.tool_calls)
        == (scripted["choices"][0]["message"]["tool_calls"])
    )
    [row] = rows()
    assert row.response_message == scripted["choices"][0]["message"]
    assert (row.response, row.finish_reason) == ("", "tool_calls")
    assert (row.input_tokens, row.output_tokens) == (31, 42)


def test_the_completion_is_named_by_contextos(gateway, openai_model):
    """id, created and model are ContextOS's (the interaction's), whatever the provider
    called its answer; a cache hit is a new interaction, so a new id."""
    upstream = openai_model.completion_for({"messages": [{"role": "user", "content": "hi"}]})
    openai_model.script(
        Reply(body={**upstream, "id": "chatcmpl-upstream", "created": 1, "model": "gpt-x-2025"})
    )
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    first = gateway.client.chat.completions.create(**request)
    again = gateway.client.chat.completions.create(**request)

    original, repeat = rows()
    assert repeat.cached
    for completion, row in [(first, original), (again, repeat)]:
        assert (completion.id, completion.object, completion.model) == (
            f"chatcmpl-{row.pk.hex}",
            "chat.completion",
            MODEL,
        )
        assert completion.created == int(row.started_at.timestamp())


CASES = {
    "json_schema": (
        {"response_format": CITY_FORMAT},
        lambda c: (
            json.loads(c.choices[0].message.content)
            == {"city": "Tell me about Oslo", "population": 4, "coastal": True}
        ),
    ),
    "images": (
        {"messages": IMAGES},
        lambda c: c.choices[0].message.content == "fake: What is in these pictures?",
    ),
    "seed": ({"seed": 1234}, lambda c: c.system_fingerprint == SYSTEM_FINGERPRINT),
    "logprobs": (
        {"logprobs": True, "top_logprobs": 3},
        lambda c: [len(token.top_logprobs) for token in c.choices[0].logprobs.content] == [3] * 5,
    ),
    "n": ({"n": 3}, lambda c: [choice.index for choice in c.choices] == [0, 1, 2]),
}


@pytest.mark.parametrize(("fields", "answered_so"), CASES.values(), ids=CASES)
def test_a_field_reaches_the_provider_and_its_answer_comes_back_unchanged(
    gateway, openai_model, fields, answered_so
):
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Oslo"}]}
    request.update(fields)

    completion, answered = ask(gateway.client, **request)

    [upstream] = upstream_bodies(openai_model)
    assert upstream == request
    assert answered_so(completion)
    assert without_head(answered) == without_head(openai_model.completion_for(upstream))
    [row] = rows()
    assert row.messages == request["messages"]
    assert row.params == {name: fields[name] for name in fields if name != "messages"}


@pytest.mark.parametrize("fields", [fields for fields, _ in CASES.values()], ids=CASES)
def test_a_field_reaches_the_provider_and_its_stream_comes_back_unchanged(
    gateway, openai_model, fields
):
    """The same fields streamed: every chunk's choices as the provider sent them."""
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Oslo"}]}
    request.update(fields)

    chunks = list(gateway.client.chat.completions.create(**request, stream=True))

    [upstream] = upstream_bodies(openai_model)
    assert upstream == {**request, "stream": True, "stream_options": {"include_usage": True}}
    assert streamed_choices(chunks) == upstream_stream(openai_model, upstream)
    whole = openai_model.completion_for(upstream)["choices"]
    turns = assembled(chunks)
    assert [turns[index].content for index in sorted(turns)] == [
        choice["message"]["content"] for choice in whole
    ]
    [row] = rows()
    assert row.messages == request["messages"]
    assert row.response == whole[0]["message"]["content"]


class CityFacts(BaseModel):
    city: str
    population: int
    coastal: bool


def test_structured_outputs_parse_with_the_sdk(gateway, openai_model):
    completion = gateway.client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about Oslo"}],
        response_format=CityFacts,
    )

    assert completion.choices[0].message.parsed == CityFacts(
        city="Tell me about Oslo", population=4, coastal=True
    )
    [upstream] = upstream_bodies(openai_model)
    assert upstream["response_format"]["type"] == "json_schema"
    assert upstream["response_format"]["json_schema"]["strict"] is True


def test_a_scripted_stream_comes_back_chunk_for_chunk(gateway, openai_model):
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-upstream-2",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "fake-gpt-2025-06-01",
            "service_tier": "default",
            "system_fingerprint": "fp_2025_06",
            "choices": choices,
            **extra,
        }

    def delta(content: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return chunk(
            [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}]
        )

    def fragment(index: int, arguments: str) -> dict[str, Any]:
        return delta({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def head(index: int, call_id: str, name: str) -> dict[str, Any]:
        function = {"name": name, "arguments": ""}
        return {"index": index, "id": call_id, "type": "function", "function": function}

    events = [
        delta(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [head(0, "call_Vx7kq2", "get_weather")],
                "refusal": None,
            }
        ),
        fragment(0, '{"ci'),
        fragment(0, 'ty":"Pa'),
        fragment(0, 'ris", "unit":"celsius"}'),
        delta({"tool_calls": [head(1, "call_8Hbz01", "get_time")]}),
        fragment(1, '{"city":'),
        fragment(1, '"Paris"}'),
        delta({}, "tool_calls"),
        chunk([], usage={"prompt_tokens": 31, "completion_tokens": 42, "total_tokens": 73}),
        "data: [DONE]\n\n",
    ]
    openai_model.script(Reply(events=events))

    chunks = list(
        gateway.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather and time in Paris?"}],
            tools=TOOLS,
            stream=True,
        )
    )

    assert streamed_choices(chunks) == [event["choices"] for event in events[:-2]]
    calls = [
        {
            "id": "call_Vx7kq2",
            "name": "get_weather",
            "arguments": '{"city":"Paris", "unit":"celsius"}',
        },
        {"id": "call_8Hbz01", "name": "get_time", "arguments": '{"city":"Paris"}'},
    ]
    expected = [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]},
        }
        for c in calls
    ]
    assert assembled(chunks)[0].tool_calls == expected
    [row] = rows()
    assert (row.finish_reason, row.response) == ("tool_calls", "")
    assert row.response_message["tool_calls"] == expected
    assert (row.input_tokens, row.output_tokens) == (31, 42)


def test_streamed_chunks_keep_the_providers_fingerprint_and_usage_details(gateway, openai_model):
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0},
    }

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-upstream-3",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "system_fingerprint": "fp_2025_06",
            "choices": choices,
            **extra,
        }

    openai_model.script(
        Reply(
            events=[
                chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]),
                chunk([{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]),
                chunk([], usage=usage),
                "data: [DONE]\n\n",
            ]
        )
    )

    chunks = list(
        gateway.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    fingerprints = [chunk.system_fingerprint for chunk in chunks]
    assert (fingerprints, chunks[-1].usage.to_dict()) == (["fp_2025_06"] * 3, usage)


# The cache


def test_an_identical_request_is_answered_whole_from_the_cache(gateway, openai_model):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather and time in Rome?"}],
        "tools": TOOLS,
        "seed": 3,
    }

    _, first_answered = ask(gateway.client, **request)
    again, again_answered = ask(gateway.client, **request)

    assert len(upstream_bodies(openai_model)) == 1
    assert without_head(again_answered) == without_head(first_answered)
    assert len(again.choices[0].message.tool_calls) == 2
    assert calls_of(again.choices[0].message.tool_calls) == tool_calls_for(
        upstream_bodies(openai_model)[0]
    )
    original, repeat = rows()
    assert (original.cached, repeat.cached) == (False, True)
    assert repeat.response_message == original.response_message
    assert repeat.finish_reason == "tool_calls"


def test_an_identical_stream_replays_the_same_tool_calls_from_the_cache(gateway, openai_model):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather and time in Rome?"}],
        "tools": TOOLS,
    }

    finals = []
    for _ in range(2):
        with gateway.client.chat.completions.stream(**request) as stream:
            finals.append(stream.get_final_completion())

    assert len(upstream_bodies(openai_model)) == 1
    first, again = (final.choices[0] for final in finals)
    assert calls_of(again.message.tool_calls) == calls_of(first.message.tool_calls)
    assert len(first.message.tool_calls) == 2
    assert (again.finish_reason, again.message.content) == (
        first.finish_reason,
        first.message.content,
    )
    assert [row.cached for row in rows()] == [False, True]


@pytest.mark.parametrize(
    "skip",
    [{"extra_body": {"cache": False}}, {"extra_headers": {"Cache-Control": "no-store"}}],
    ids=["cache-false", "no-store"],
)
def test_the_cache_can_be_skipped(gateway, openai_model, skip):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather and time in Rome?"}],
        "tools": TOOLS,
    }

    gateway.client.chat.completions.create(**request)
    skipped = gateway.client.chat.completions.create(**request, **skip)

    assert len(upstream_bodies(openai_model)) == 2
    assert len(skipped.choices[0].message.tool_calls) == 2
    assert [row.cached for row in rows()] == [False, False]
    assert gateway.sent[-1].get("cache") is skip.get("extra_body", {}).get("cache")
    assert all("cache" not in body for body in upstream_bodies(openai_model))


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 4},
        {"tools": [CLOCK]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"n": 2},
        {"logprobs": True},
        {"extra_body": {"top_k": 5}},
        {"messages": IMAGES},
    ],
    ids=["seed", "tools", "tool_choice", "response_format", "n", "logprobs", "unknown", "images"],
)
def test_every_field_that_changes_the_answer_is_in_the_cache_key(gateway, openai_model, change):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is in these pictures?"}],
        "tools": TOOLS,
        "seed": 3,
    }

    gateway.client.chat.completions.create(**request)
    gateway.client.chat.completions.create(**{**request, **change})

    assert len(upstream_bodies(openai_model)) == 2
    assert [row.cached for row in rows()] == [False, False]


# The echo provider


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_echo_answers_n_distinct_choices(gateway, stream):
    request = {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "name a colour"}],
        "n": 3,
    }

    if stream:
        turns = assembled(list(gateway.client.chat.completions.create(**request, stream=True)))
        answers = [(index, turns[index].content) for index in sorted(turns)]
    else:
        completion = gateway.client.chat.completions.create(**request)
        answers = [(choice.index, choice.message.content) for choice in completion.choices]

    assert [index for index, _ in answers] == [0, 1, 2]
    assert len({text for _, text in answers}) == 3
    assert answers[0][1] == "Echo: name a colour"
    [row] = rows()
    assert row.response == "Echo: name a colour"


def test_echo_answers_a_tool_request_with_a_call_then_the_results_with_text(gateway):
    messages = [{"role": "user", "content": "Oslo"}]

    completion = gateway.client.chat.completions.create(
        model="echo-1", messages=messages, tools=TOOLS
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Oslo"
    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": calls_of([call])},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"},
    ]
    final = gateway.client.chat.completions.create(model="echo-1", messages=follow_up, tools=TOOLS)
    assert (final.choices[0].finish_reason, final.choices[0].message.content) == (
        "stop",
        "Echo: Oslo",
    )
    calling, answering = rows()
    assert calling.response_message["tool_calls"] == calls_of([call])
    assert answering.messages == follow_up


# Errors


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_unknown_model_is_404_model_not_found(gateway, openai_model, stream):
    with pytest.raises(openai.NotFoundError) as raised:
        gateway.client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], stream=stream
        )

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "no-such-model" in raised.value.message
    assert upstream_bodies(openai_model) == []
    assert not AIInteraction.objects.exists()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_provider_400_on_an_invalid_tool_schema_is_the_clients_400(gateway, openai_model, stream):
    openai_model.script(Reply(status=400, body=INVALID_SCHEMA))
    schema = {"type": "object", "properties": {"city": {"type": "strng"}}}
    bad = {"type": "function", "function": {**WEATHER["function"], "parameters": schema}}

    with pytest.raises(openai.BadRequestError) as raised:
        answer_read(
            gateway.client,
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[bad],
            stream=stream,
        )

    error = raised.value
    assert error.status_code == 400
    assert error.code == "provider_rejected_request"
    assert INVALID_SCHEMA["error"]["message"] in error.message
    assert error.param == "tools[0].function.parameters"  # the field at fault, passed on
    assert len(upstream_bodies(openai_model)) == 1  # a refusal is not retried
    [row] = rows()
    assert (row.status, row.provider_status, row.provider_error_type) == (
        "failed",
        400,
        "bad_request",
    )
    assert INVALID_SCHEMA["error"]["message"] in row.error["message"]


def test_a_long_provider_message_comes_back_whole(gateway, openai_model):
    message = (
        "Invalid schema for function 'get_weather': In context=(), 'required' is required to "
        "be supplied and to be an array including every key in properties. Missing 'unit'. "
        "See https://platform.openai.com/docs/guides/function-calling for the rules of strict "
        "function schemas."
    )
    openai_model.script(
        Reply(status=400, body={"error": {**INVALID_SCHEMA["error"], "message": message}})
    )

    with pytest.raises(openai.BadRequestError) as raised:
        gateway.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=TOOLS
        )

    assert message in raised.value.message
