"""The built-in ``echo`` provider: local, deterministic and free, for development and tests."""

import math
import re
import time
from collections.abc import Iterator
from typing import Any

from apps.ai_interactions.providers.base import Generation, Message, ProviderCallError, StreamChunk

CHARS_PER_TOKEN = 4


def token_count(text: str) -> int:
    """Echo's stand-in for a tokenizer: one token per started group of four characters."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class EchoProvider:
    """Answers ``"Echo: " + <the last user message>`` (the last message when no user spoke).

    Input tokens are ``token_count`` of all message contents joined by newlines; output
    tokens are ``token_count`` of the answer. ``params["max_tokens"]`` cuts the answer to
    that many tokens' worth of characters (finish_reason ``"length"``); ``params["stop"]``
    cuts it before the first stop sequence. ``delay_seconds`` makes every call take that
    long, and a call whose delay exceeds its ``timeout`` fails as a timeout would.
    """

    name = "echo"

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = max(0.0, delay_seconds)

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        self._wait(self.delay_seconds, timeout)
        return self._answer(messages, params)

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        answer = self._answer(messages, params)
        pieces = re.findall(r"\s*\S+\s*", answer.text) or [answer.text]
        pause = self.delay_seconds / len(pieces)
        waited = 0.0
        for piece in pieces:
            self._wait(pause, timeout - waited)
            waited += pause
            yield StreamChunk(delta=piece)
        yield StreamChunk(
            finish_reason=answer.finish_reason,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
        )

    def _answer(self, messages: list[Message], params: dict[str, Any]) -> Generation:
        text = "Echo: " + _last_user_content(messages)
        finish_reason = "stop"
        for stop in _stop_sequences(params.get("stop")):
            if stop in text:
                text = text[: text.index(stop)]
        max_tokens = params.get("max_tokens")
        if max_tokens is not None and token_count(text) > int(max_tokens):
            text = text[: max(0, int(max_tokens)) * CHARS_PER_TOKEN]
            finish_reason = "length"
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        return Generation(
            text=text,
            finish_reason=finish_reason,
            input_tokens=token_count(prompt),
            output_tokens=token_count(text),
        )

    @staticmethod
    def _wait(seconds: float, timeout: float) -> None:
        if seconds > timeout:
            time.sleep(max(0.0, timeout))
            raise ProviderCallError(
                f"echo did not answer within {timeout:g}s", error_type="timeout", retryable=True
            )
        time.sleep(seconds)


def _last_user_content(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return str(messages[-1].get("content", "")) if messages else ""


def _stop_sequences(stop: Any) -> list[str]:
    if not stop:
        return []
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str) and s]
