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

__all__ = ["MIDWAY_ERROR", "FakeAnthropic", "Reply", "fake_anthropic"]

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
        messages = body.get("messages") or []
        words, cut = answer_words("fake: " + last_user_text(messages), body.get("max_tokens"))
        stop_reason = "max_tokens" if cut else "end_turn"
        prompt = [content_text(body.get("system"))] + [
            content_text(m.get("content")) for m in messages
        ]
        input_tokens = sum(word_count(text) for text in prompt)
        model = body.get("model") or MODEL
        if not body.get("stream"):
            handler.send_json(
                200,
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": " ".join(words)}],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": len(words)},
                },
                reply.headers,
            )
            return
        events = _stream_events(model, words, stop_reason, input_tokens)
        if reply.fail_after is not None:
            events = _failing_midway(events, reply.fail_after)
        handler.send_events(
            events,
            headers=reply.headers,
            chunk_delay=reply.chunk_delay,
            pause=self.pause,
        )


def _failing_midway(events: Iterator[str], words: int) -> Iterator[str]:
    """The opening events and the first ``words`` word events, then an overloaded error."""
    yield from islice(events, 3 + words)
    yield sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": MIDWAY_ERROR}}
    )


def _stream_events(
    model: str, words: list[str], stop_reason: str, input_tokens: int
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
    yield sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield sse("ping", {"type": "ping"})
    for number, word in enumerate(words):
        text = word if number == 0 else " " + word
        yield sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        )
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(words)},
        },
    )
    yield sse("message_stop", {"type": "message_stop"})


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running ``FakeAnthropic``; point an Anthropic client at ``fake_anthropic.base_url``."""
    with FakeAnthropic() as fake:
        yield fake
