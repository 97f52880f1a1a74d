"""A fake OpenAI Chat Completions server (``/v1/chat/completions``, ``/v1/models``) for tests."""

import base64
import hashlib
import json
import re
import time
from array import array
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest

from tests.fakes import (
    FakeHandler,
    FakeServer,
    Reply,
    answer_words,
    content_text,
    last_user_text,
    word_count,
)

__all__ = [
    "MIDWAY_ERROR",
    "SYSTEM_FINGERPRINT",
    "FakeOpenAI",
    "Reply",
    "fake_openai",
    "tool_calls_for",
]

MODEL = "fake-model"
# Every answer's ``system_fingerprint``, as OpenAI names the backend that answered.
SYSTEM_FINGERPRINT = "fp_fake"
# The message of the error event that ends a stream scripted with ``Reply(fail_after=...)``.
MIDWAY_ERROR = "The fake failed mid-answer."
# How many characters of a tool call's arguments each streamed delta carries.
ARGUMENTS_FRAGMENT = 6
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class FakeOpenAI(FakeServer):
    """Answers ``"fake: <last user content>"``; tokens are words (see ``word_count``).

    As OpenAI would, deterministically: with ``tools`` it calls every tool (the first
    only with ``parallel_tool_calls: false``, the named one with a named ``tool_choice``,
    none with ``"none"``), arguments built from each schema's properties and the prompt
    (see ``tool_calls_for``), finish_reason ``"tool_calls"``; once the messages end with
    ``tool`` results it answers ``"fake: <the results' contents>"``. ``n`` answers n
    choices (``"fake <k>: ..."`` after the first), ``logprobs`` adds a logprobs object
    per choice (``top_logprobs`` alternatives per token), a JSON ``response_format``
    answers a JSON object (a schema's properties filled in). ``max_tokens`` cuts a text
    answer to that many words (finish_reason ``"length"``). Every answer carries
    ``system_fingerprint``. Streams are sent as OpenAI sends them, tool calls included
    (a first delta with the call's index, id, type, name and empty arguments, then
    argument fragments). Scripted replies apply to ``POST /v1/chat/completions`` only.
    """

    routes = {
        ("POST", "/v1/chat/completions"): "answer_main",
        ("GET", "/v1/models"): "list_models",
        ("POST", "/v1/embeddings"): "embed",
    }
    main_path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        error_type, code = _ERROR_TYPES.get(status, ("server_error", None))
        return {
            "error": {
                "message": message or f"The fake answered {status}.",
                "type": error_type,
                "param": None,
                "code": code,
            }
        }

    def embed(self, handler: FakeHandler, body: Any) -> None:
        """OpenAI's embeddings: a vector per input drawn from its hash (``dimensions``, 8 by
        default), as floats or base64; tokens are words. Held back by ``default_delay``."""
        if not self.pause(self.default_delay):
            return
        inputs = body.get("input")
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dimensions = int(body.get("dimensions") or 8)
        data, tokens = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += word_count(text) if isinstance(item, str) else len(item)
            digest = hashlib.shake_256(text.encode()).digest(dimensions)
            vector = [byte / 255 for byte in digest]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        model = body.get("model") or MODEL
        handler.send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def list_models(self, handler: FakeHandler, body: Any) -> None:
        handler.send_json(
            200,
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
            },
        )

    def completion_for(self, body: dict[str, Any], *, created: int = 0) -> dict[str, Any]:
        """The whole (not streamed) completion this fake answers to the request ``body``."""
        choices = _choices(body)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": created,
            "model": body.get("model") or MODEL,
            "choices": [
                {
                    "index": choice.index,
                    "message": choice.message(),
                    "logprobs": choice.logprobs(body),
                    "finish_reason": choice.finish_reason,
                }
                for choice in choices
            ],
            "usage": _usage(body, choices),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def answer_main(self, handler: FakeHandler, body: dict[str, Any], reply: Reply) -> None:
        if not body.get("stream"):
            handler.send_json(
                200, self.completion_for(body, created=int(time.time())), reply.headers
            )
            return
        choices = _choices(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(body, choices, _usage(body, choices) if include_usage else None)
        if reply.fail_after is not None:
            events = _failing_midway(events, reply.fail_after, self.error_body(500, MIDWAY_ERROR))
        handler.send_events(
            events,
            headers=reply.headers,
            chunk_delay=reply.chunk_delay,
            pause=self.pause,
        )


def tool_calls_for(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls the fake answers to ``body`` (none once it ends with tool results).

    Each call's id is derived from its position, name and the prompt; its arguments are
    the JSON (``json.dumps``, spaces after separators) of the schema's required
    properties (every property when none is required), each built from the prompt.
    """
    messages = body.get("messages") or []
    tools = [
        tool
        for tool in body.get("tools") or ()
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
        return []
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        tools = [tool for tool in tools if tool["function"].get("name") == named]
    elif body.get("parallel_tool_calls") is False:
        tools = tools[:1]
    asked = last_user_text(messages)
    calls = []
    for number, tool in enumerate(tools):
        name = str(tool["function"].get("name") or "tool")
        digest = hashlib.sha256(f"{number}\n{name}\n{asked}".encode()).hexdigest()
        arguments = _json_for(tool["function"].get("parameters") or {}, asked)
        calls.append(
            {
                "id": f"call_{digest[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        )
    return calls


def _json_for(schema: dict[str, Any], asked: str) -> dict[str, Any]:
    """An object with ``schema``'s required properties (all when none is), from the prompt."""
    properties = schema.get("properties") or {}
    names = schema.get("required") or list(properties)
    values = {
        "string": asked,
        "integer": word_count(asked),
        "number": word_count(asked) / 2,
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }
    filled = {}
    for name in names:
        spec = properties.get(name) or {}
        enum = spec.get("enum")
        filled[name] = enum[0] if enum else values.get(spec.get("type"), asked)
    return filled


class _Choice:
    """One choice of an answer: text (``pieces``, joined) or tool calls."""

    def __init__(
        self,
        index: int,
        *,
        text: str | None = None,
        calls: list[dict[str, Any]] | None = None,
        finish_reason: str = "stop",
    ) -> None:
        self.index = index
        self.pieces = re.findall(r"\s*\S+", text) if text else []
        self.text = text
        self.calls = calls or []
        self.finish_reason = finish_reason

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = self.calls
        message["refusal"] = None
        return message

    def logprobs(self, body: dict[str, Any], positions: range | None = None) -> Any:
        """OpenAI's logprobs object of the pieces at ``positions`` (all by default), if asked."""
        if not body.get("logprobs") or self.calls:
            return None
        alternatives = int(body.get("top_logprobs") or 0)
        content = []
        for position in range(len(self.pieces)) if positions is None else positions:
            piece = self.pieces[position]
            logprob = -round(0.01 * (position + 1) + 0.1 * self.index, 4)
            content.append(
                {
                    **_token(piece, logprob),
                    "top_logprobs": [
                        _token(piece if rank == 0 else f"{piece}~{rank}", logprob - rank)
                        for rank in range(alternatives)
                    ],
                }
            )
        return {"content": content, "refusal": None}

    def output_tokens(self) -> int:
        return sum(word_count(call["function"]["arguments"]) for call in self.calls) or len(
            self.pieces
        )


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _choices(body: dict[str, Any]) -> list[_Choice]:
    calls = tool_calls_for(body)
    if calls:
        return [_Choice(0, calls=calls, finish_reason="tool_calls")]
    messages = body.get("messages") or []
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, content_text(message.get("content")))
    asked = " ".join(results) if results else last_user_text(messages)
    response_format = body.get("response_format") or {}
    choices = []
    for index in range(int(body.get("n") or 1)):
        if response_format.get("type") in ("json_object", "json_schema"):
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            answer = _json_for(schema, asked) if schema else {"answer": asked}
            choices.append(_Choice(index, text=json.dumps(answer)))
            continue
        prefix = "fake:" if index == 0 else f"fake {index + 1}:"
        words, cut = answer_words(
            f"{prefix} {asked}", body.get("max_completion_tokens", body.get("max_tokens"))
        )
        choices.append(
            _Choice(index, text=" ".join(words), finish_reason="length" if cut else "stop")
        )
    return choices


def _usage(body: dict[str, Any], choices: list[_Choice]) -> dict[str, int]:
    messages = body.get("messages") or []
    usage = {
        "prompt_tokens": sum(word_count(content_text(m.get("content"))) for m in messages),
        "completion_tokens": sum(choice.output_tokens() for choice in choices),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def _failing_midway(events: Iterator[str], words: int, error: dict[str, Any]) -> Iterator[str]:
    """The role event and the first ``words`` word events, then ``error`` as an event."""
    yield from islice(events, 1 + words)
    yield f"data: {json.dumps(error)}\n\n"


def _stream_events(
    body: dict[str, Any], choices: list[_Choice], usage: dict[str, int] | None
) -> Iterator[str]:
    """The answer as OpenAI streams it: each choice's role, its text word by word (or
    its tool calls: a head, then argument fragments), its finish; usage if asked; [DONE]."""
    created = int(time.time())

    def chunk(chunk_choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.get("model") or MODEL,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": chunk_choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    def delta(choice: _Choice, content: dict[str, Any], **extra: Any) -> str:
        return chunk([{"index": choice.index, "delta": content, **extra, "finish_reason": None}])

    for choice in choices:
        if choice.calls:
            yield from _tool_call_deltas(choice, delta)
        else:
            yield delta(choice, {"role": "assistant", "content": "", "refusal": None})
    longest = max((len(choice.pieces) for choice in choices), default=0)
    for position in range(longest):
        for choice in choices:
            if position < len(choice.pieces):
                piece = choice.pieces[position]
                logprobs = choice.logprobs(body, range(position, position + 1))
                extra = {"logprobs": logprobs} if logprobs is not None else {}
                yield delta(choice, {"content": piece}, **extra)
    for choice in choices:
        yield chunk([{"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}])
    if usage is not None:
        yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"


def _tool_call_deltas(choice: _Choice, delta: Any) -> Iterator[str]:
    for position, call in enumerate(choice.calls):
        head = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        if position == 0:
            yield delta(
                choice,
                {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None},
            )
        else:
            yield delta(choice, {"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), ARGUMENTS_FRAGMENT):
            fragment = arguments[start : start + ARGUMENTS_FRAGMENT]
            yield delta(
                choice, {"tool_calls": [{"index": position, "function": {"arguments": fragment}}]}
            )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running ``FakeOpenAI``; point an OpenAI client at ``fake_openai.base_url``."""
    with FakeOpenAI() as fake:
        yield fake
