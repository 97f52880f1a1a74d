"""A fake OpenAI Chat Completions server (``/v1/chat/completions``, ``/v1/models``) for tests."""

import json
import time
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

__all__ = ["MIDWAY_ERROR", "FakeOpenAI", "Reply", "fake_openai"]

MODEL = "fake-model"
# The message of the error event that ends a stream scripted with ``Reply(fail_after=...)``.
MIDWAY_ERROR = "The fake failed mid-answer."
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class FakeOpenAI(FakeServer):
    """Answers ``"fake: <last user content>"``; tokens are words (see ``word_count``).

    ``max_tokens`` cuts the answer to that many words (finish_reason ``"length"``).
    Scripted replies apply to ``POST /v1/chat/completions`` only.
    """

    routes = {
        ("POST", "/v1/chat/completions"): "answer_main",
        ("GET", "/v1/models"): "list_models",
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

    def list_models(self, handler: FakeHandler, body: Any) -> None:
        handler.send_json(
            200,
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
            },
        )

    def answer_main(self, handler: FakeHandler, body: dict[str, Any], reply: Reply) -> None:
        messages = body.get("messages") or []
        words, cut = answer_words(
            "fake: " + last_user_text(messages),
            body.get("max_completion_tokens", body.get("max_tokens")),
        )
        finish_reason = "length" if cut else "stop"
        usage = {
            "prompt_tokens": sum(word_count(content_text(m.get("content"))) for m in messages),
            "completion_tokens": len(words),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = body.get("model") or MODEL
        if not body.get("stream"):
            handler.send_json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                },
                reply.headers,
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(model, words, finish_reason, usage if include_usage else None)
        if reply.fail_after is not None:
            events = _failing_midway(events, reply.fail_after, self.error_body(500, MIDWAY_ERROR))
        handler.send_events(
            events,
            headers=reply.headers,
            chunk_delay=reply.chunk_delay,
            pause=self.pause,
        )


def _failing_midway(events: Iterator[str], words: int, error: dict[str, Any]) -> Iterator[str]:
    """The role event and the first ``words`` word events, then ``error`` as an event."""
    yield from islice(events, 1 + words)
    yield f"data: {json.dumps(error)}\n\n"


def _stream_events(
    model: str, words: list[str], finish_reason: str, usage: dict[str, int] | None
) -> Iterator[str]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    for number, word in enumerate(words):
        text = word if number == 0 else " " + word
        yield chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
    yield chunk([{"index": 0, "delta": {}, "finish_reason": finish_reason}])
    if usage is not None:
        yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running ``FakeOpenAI``; point an OpenAI client at ``fake_openai.base_url``."""
    with FakeOpenAI() as fake:
        yield fake
