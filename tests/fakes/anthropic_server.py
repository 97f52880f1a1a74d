"""A fake Anthropic Messages server (``/v1/messages``, ``/v1/models``) for tests."""

import json
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

__all__ = ["MIDWAY_ERROR", "FakeAnthropic", "Reply", "fake_anthropic", "tool_input"]

MODEL = "fake-claude"
# The message of the error event that ends a stream scripted with ``Reply(fail_after=...)``.
MIDWAY_ERROR = "The fake is overloaded mid-answer."
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def sse(event_type: str, payload: dict[str, Any]) -> str:
    """One server-sent event in Anthropic's format (the event name repeats the data's type)."""
    return f"event: {event_type}\ndata: {json.dumps(payload)}\n\n"


class FakeAnthropic(FakeServer):
    """Answers ``"fake: <last user content>"``; tokens are words (see ``word_count``).

    The SDK's ``base_url`` is ``.base_url`` (the origin: the SDK adds ``/v1/messages``).
    ``max_tokens`` cuts the answer to that many words (stop_reason ``"max_tokens"``).
    With ``tools`` it calls a tool instead (stop_reason ``"tool_use"``): the one
    ``tool_choice`` names, every tool for ``any`` (one if parallel use is disabled), else
    the first, after a short text for ``auto``; each input property is built from the
    prompt (see ``tool_input``). It answers in text again once the last turn carries tool
    results (the answer then echoes them) or with ``tool_choice`` ``none``. Like the real
    API it refuses (400) empty text blocks, ``tool_choice`` without tools, and tool uses
    and tool results that do not pair up across consecutive turns.
    Scripted replies apply to ``POST /v1/messages`` only.
    """

    routes = {
        ("POST", "/v1/messages"): "answer_main",
        ("GET", "/v1/models"): "list_models",
    }
    main_path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.origin

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        error_type = _ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {
            "type": "error",
            "error": {"type": error_type, "message": message or f"The fake answered {status}."},
        }

    def list_models(self, handler: FakeHandler, body: Any) -> None:
        handler.send_json(
            200,
            {
                "data": [
                    {
                        "type": "model",
                        "id": MODEL,
                        "display_name": "Fake",
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                ],
                "has_more": False,
                "first_id": MODEL,
                "last_id": MODEL,
            },
        )

    def answer_main(self, handler: FakeHandler, body: dict[str, Any], reply: Reply) -> None:
        problem = _invalid(body)
        if problem:
            handler.send_json(400, self.error_body(400, problem), reply.headers)
            return
        messages = body.get("messages") or []
        prompt = [content_text(body.get("system"))] + [
            content_text(m.get("content")) for m in messages
        ]
        input_tokens = sum(word_count(text) for text in prompt)
        model = body.get("model") or MODEL
        stop_sequence = None
        tools = _tools_to_call(body)
        if tools:
            blocks = _tool_blocks(tools, body)
            stop_reason = "tool_use"
            output_tokens = sum(word_count(_block_text(block)) for block in blocks)
        else:
            asked = next((_turn_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
            words, cut = answer_words("fake: " + asked, body.get("max_tokens"))
            stop_sequence = _stop_sequence_in(words, body.get("stop_sequences"))
            if stop_sequence is not None:
                words, cut = words[: words.index(stop_sequence)], False
            blocks = [{"type": "text", "text": " ".join(words)}]
            stop_reason = "max_tokens" if cut else "end_turn"
            if stop_sequence is not None:
                stop_reason = "stop_sequence"
            output_tokens = len(words)
        if not body.get("stream"):
            handler.send_json(
                200,
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                },
                reply.headers,
            )
            return
        events = _stream_events(
            model, blocks, (stop_reason, stop_sequence), input_tokens, output_tokens
        )
        if reply.fail_after is not None:
            events = _failing_midway(events, reply.fail_after)
        handler.send_events(
            events,
            headers=reply.headers,
            chunk_delay=reply.chunk_delay,
            pause=self.pause,
        )


def tool_input(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The fake's input for a tool: each property of its schema built from the prompt
    (strings are the prompt, numbers its word count, booleans true)."""
    values = {"integer": word_count(prompt), "number": word_count(prompt), "boolean": True}
    values.update({"array": [], "object": {}, "null": None})
    return {
        name: values.get((spec or {}).get("type"), prompt)
        for name, spec in (schema.get("properties") or {}).items()
    }


def _tools_to_call(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, dict)]
    choice = body.get("tool_choice") or {"type": "auto"}
    messages = body.get("messages") or []
    if not tools or choice.get("type") == "none" or _tool_results(messages[-1:]):
        return []
    if choice.get("type") == "tool":
        return [tool for tool in tools if tool.get("name") == choice.get("name")][:1]
    if choice.get("type") == "any" and not choice.get("disable_parallel_tool_use"):
        return tools
    return tools[:1]


def _tool_blocks(tools: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = last_user_text(body.get("messages") or [])
    blocks = []
    if (body.get("tool_choice") or {"type": "auto"}).get("type") == "auto":
        blocks.append({"type": "text", "text": f"fake: using {tools[0].get('name')}"})
    for number, tool in enumerate(tools):
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_fake_{number}",
                "name": tool.get("name"),
                "input": tool_input(tool.get("input_schema") or {}, prompt),
            }
        )
    return blocks


def _block_text(block: dict[str, Any]) -> str:
    return block["text"] if block["type"] == "text" else json.dumps(block["input"])


def _turn_text(message: dict[str, Any]) -> str:
    """A turn's text: its text blocks and the text of its tool results, joined by spaces."""
    content = message.get("content")
    if not isinstance(content, list):
        return content_text(content)
    texts = (
        content_text(block.get("content") if block.get("type") == "tool_result" else [block])
        for block in content
        if isinstance(block, dict)
    )
    return " ".join(text for text in texts if text)


def _blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict) and block.get("type") == kind]


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for message in messages for block in _blocks_of(message, "tool_result")]


def _invalid(body: dict[str, Any]) -> str:
    """Why the real API would refuse this request, as far as the fake checks; "" if not."""
    if body.get("tool_choice") and not body.get("tools"):
        return "tool_choice may only be specified while providing tools."
    messages = body.get("messages") or []
    for number, message in enumerate(messages):
        if any(not block.get("text") for block in _blocks_of(message, "text")):
            return f"messages.{number}: text content blocks must be non-empty"
        before = messages[number - 1] if number else {}
        used = {block.get("id") for block in _blocks_of(before, "tool_use")}
        if not {block.get("tool_use_id") for block in _tool_results([message])} <= used:
            return f"messages.{number}: tool_result blocks must answer the turn before's tool_use"
        uses = {block.get("id") for block in _blocks_of(message, "tool_use")}
        after = messages[number + 1] if number + 1 < len(messages) else {}
        if not uses <= {block.get("tool_use_id") for block in _tool_results([after])}:
            return f"messages.{number}: tool_use ids were found without tool_result blocks after"
    return ""


def _stop_sequence_in(words: list[str], stop_sequences: Any) -> str | None:
    """The first of ``stop_sequences`` that is one of the answer's words (the fake's
    stop sequences match whole words), or None."""
    for word in words:
        if isinstance(stop_sequences, list) and word in stop_sequences:
            return word
    return None


def _failing_midway(events: Iterator[str], words: int) -> Iterator[str]:
    """The opening events and the first ``words`` word events, then an overloaded error."""
    yield from islice(events, 3 + words)
    yield sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": MIDWAY_ERROR}}
    )


def _stream_events(
    model: str,
    blocks: list[dict[str, Any]],
    stop: tuple[str, str | None],
    input_tokens: int,
    output_tokens: int,
) -> Iterator[str]:
    yield sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        },
    )
    for index, block in enumerate(blocks):
        start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        yield sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        if index == 0:
            yield sse("ping", {"type": "ping"})
        for delta in _deltas(block):
            yield sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop[0], "stop_sequence": stop[1]},
            "usage": {"output_tokens": output_tokens},
        },
    )
    yield sse("message_stop", {"type": "message_stop"})


def _deltas(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A text block word by word; a tool use's input as JSON in pieces of 8 characters."""
    if block["type"] == "text":
        for number, word in enumerate(block["text"].split()):
            yield {"type": "text_delta", "text": word if number == 0 else " " + word}
        return
    arguments = json.dumps(block["input"])
    for start in range(0, len(arguments), 8):
        yield {"type": "input_json_delta", "partial_json": arguments[start : start + 8]}


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running ``FakeAnthropic``; point an Anthropic client at ``fake_anthropic.base_url``."""
    with FakeAnthropic() as fake:
        yield fake
