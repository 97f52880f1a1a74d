"""The built-in ``echo`` provider: local, deterministic and free, for development and tests."""

import base64
import hashlib
import json
import math
import re
import sys
import time
from array import array
from collections.abc import Iterator
from typing import Any

from apps.ai_interactions.answers import answer_of, replayed_chunks
from apps.ai_interactions.providers.base import (
    Generation,
    Message,
    ProviderCallError,
    StreamChunk,
    content_text,
)

CHARS_PER_TOKEN = 4
# Dimensions of an echo embedding unless the request's ``dimensions`` says otherwise.
EMBEDDING_DIMENSIONS = 256


def token_count(text: str) -> int:
    """Echo's stand-in for a tokenizer: one token per started group of four characters."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class EchoProvider:
    """Answers ``"Echo: " + <the last user message>`` (the last message when no user spoke).

    Input tokens are ``token_count`` of all message contents joined by newlines; output
    tokens are ``token_count`` of the answer. ``params["max_tokens"]`` cuts the answer to
    that many tokens' worth of characters (finish_reason ``"length"``); ``params["stop"]``
    cuts it before the first stop sequence. With ``tools`` it calls the first one (or the
    one ``tool_choice`` names) with arguments built from the prompt, until the messages end
    with the tool's results; ``response_format`` JSON answers a JSON object (with a schema's
    required properties); ``n`` answers n distinct choices. ``delay_seconds`` makes every
    call take that long, and a call whose delay exceeds its ``timeout`` fails as a timeout
    would.
    """

    name = "echo"

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = max(0.0, delay_seconds)

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        self._wait(self.delay_seconds, timeout)
        return self._answer(messages, params)

    def embed(self, *, model: str, params: dict[str, Any], timeout: float) -> Generation:
        """Unit vectors drawn from a hash of each input: the same input, the same vector."""
        self._wait(self.delay_seconds, timeout)
        inputs = params["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dimensions = int(params.get("dimensions") or EMBEDDING_DIMENSIONS)
        as_base64 = params.get("encoding_format") == "base64"
        data, tokens = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += token_count(text) if isinstance(item, str) else len(item)
            vector = _unit_vector(text, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _base64(vector) if as_base64 else vector,
                }
            )
        body = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Generation(
            text="", finish_reason="stop", input_tokens=tokens, output_tokens=0, body=body
        )

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        answer = self._answer(messages, params)
        if answer.body is not None:
            # Tool calls, JSON or several choices: streamed as OpenAI streams them.
            self._wait(self.delay_seconds, timeout)
            yield from replayed_chunks(answer_of(answer))
            return
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
        asked = _last_user_content(messages)
        input_tokens = token_count("\n".join(content_text(m.get("content")) for m in messages))
        tool = _tool_to_call(messages, params)
        if tool is not None:
            return _tool_call(tool, asked, input_tokens)
        choices = int(params.get("n") or 1)
        texts = [_reply(asked, params, number) for number in range(choices)]
        if choices == 1 and not _wants_json(params):
            text, finish_reason = texts[0]
            return Generation(
                text=text,
                finish_reason=finish_reason,
                input_tokens=input_tokens,
                output_tokens=token_count(text),
            )
        output_tokens = sum(token_count(text) for text, _ in texts)
        body = {
            "object": "chat.completion",
            "choices": [
                {
                    "index": number,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
                for number, (text, finish_reason) in enumerate(texts)
            ],
            "usage": _usage(input_tokens, output_tokens),
        }
        return Generation(
            text=texts[0][0],
            finish_reason=texts[0][1],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            body=body,
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
            return content_text(message.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""


def _stop_sequences(stop: Any) -> list[str]:
    if not stop:
        return []
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str) and s]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def _reply(asked: str, params: dict[str, Any], number: int) -> tuple[str, str]:
    """Choice ``number``'s text and finish reason: the prompt echoed (as JSON when asked)."""
    if _wants_json(params):
        return json.dumps(_json_answer(asked, params.get("response_format") or {})), "stop"
    text = ("Echo: " if number == 0 else f"Echo {number + 1}: ") + asked
    finish_reason = "stop"
    for stop in _stop_sequences(params.get("stop")):
        if stop in text:
            text = text[: text.index(stop)]
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    if max_tokens is not None and token_count(text) > int(max_tokens):
        text = text[: max(0, int(max_tokens)) * CHARS_PER_TOKEN]
        finish_reason = "length"
    return text, finish_reason


def _wants_json(params: dict[str, Any]) -> bool:
    response_format = params.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def _json_answer(asked: str, response_format: dict[str, Any]) -> dict[str, Any]:
    """``{"echo": prompt}``, or for a JSON schema an object with its required properties."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
        return {"echo": asked}
    return _arguments(schema, asked)


def _arguments(schema: dict[str, Any], asked: str) -> dict[str, Any]:
    """An object satisfying ``schema``'s required properties, each built from the prompt."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = (
        [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
    )
    values = {
        "string": asked,
        "integer": len(asked),
        "number": len(asked),
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }

    def kind(name: str) -> Any:
        declared = properties.get(name)
        kind = declared.get("type") if isinstance(declared, dict) else None
        return kind if isinstance(kind, str) else None  # ["string", "null"]: the prompt

    return {name: values.get(kind(name), asked) for name in names}


def _tool_to_call(messages: list[Message], params: dict[str, Any]) -> dict[str, Any] | None:
    """The function echo calls: the first tool (or the one ``tool_choice`` names), unless
    the conversation already ends with tool results or ``tool_choice`` is ``none``."""
    tools = [tool for tool in params.get("tools") or () if isinstance(tool, dict)]
    choice = params.get("tool_choice")
    if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
        return None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        for tool in tools:
            if (tool.get("function") or {}).get("name") == named:
                return tool
    return tools[0]


def _tool_call(tool: dict[str, Any], asked: str, input_tokens: int) -> Generation:
    function = tool.get("function") or {}
    name = str(function.get("name") or "tool")
    arguments = json.dumps(_arguments(function.get("parameters") or {}, asked))
    call_id = "call_" + hashlib.sha256(f"{name}\n{asked}".encode()).hexdigest()[:24]
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    output_tokens = token_count(arguments)
    body = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call],
                    "refusal": None,
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": _usage(input_tokens, output_tokens),
    }
    return Generation(
        text="",
        finish_reason="tool_calls",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        body=body,
    )


def _unit_vector(text: str, dimensions: int) -> list[float]:
    raw = array("I", hashlib.shake_256(text.encode()).digest(4 * dimensions))
    vector = [value / 2**31 - 1.0 for value in raw]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the float32 values, little-endian."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()
