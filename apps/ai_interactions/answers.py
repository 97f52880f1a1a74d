"""A chat answer in OpenAI's shape: assembled from a stream's chunks, replayed from the cache.

Every chat call records and caches one answer, whichever provider gave it and
whether it streamed: a dict of ``text``, ``finish_reason``, ``input_tokens``,
``output_tokens``, ``message`` (the first choice's whole message: content,
``tool_calls``, ``refusal``) and ``body`` (the whole completion, every choice and
the provider's usage details, when the provider gave more than text).
"""

from collections.abc import Iterator
from typing import Any

from apps.ai_interactions.providers.base import Generation, StreamChunk

Answer = dict[str, Any]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def answer_of(generation: Generation) -> Answer:
    """The answer of a provider's whole (not streamed) completion."""
    body = generation.body
    message = (
        body["choices"][0]["message"]
        if body and body.get("choices")
        else {"role": "assistant", "content": generation.text}
    )
    return {
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        "input_tokens": generation.input_tokens,
        "output_tokens": generation.output_tokens,
        "message": message,
        "body": body,
    }


class AnswerAssembler:
    """Collects a stream's chunks into its answer: the text, and every choice's content,
    tool calls (their ``arguments`` fragments joined) and refusal."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.last = StreamChunk()
        self.extra: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, chunk: StreamChunk) -> None:
        self.pieces.append(chunk.delta)
        if chunk.finish_reason is not None:
            self.last = chunk
        self.extra.update(chunk.extra or {})
        for choice in chunk.choices or ():
            self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        kept = self._choices.setdefault(
            index,
            {"index": index, "message": {"role": "assistant", "content": None, "refusal": None}},
        )
        message = kept["message"]
        delta = choice.get("delta") or {}
        for name in ("content", "refusal"):
            if isinstance(delta.get(name), str):
                message[name] = (message.get(name) or "") + delta[name]
        for call in delta.get("tool_calls") or ():
            calls = message.setdefault("tool_calls", [])
            position = call.get("index", len(calls))
            while len(calls) <= position:
                calls.append(
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
            whole = calls[position]
            whole["id"] = call.get("id") or whole["id"]
            whole["type"] = call.get("type") or whole["type"]
            function = call.get("function") or {}
            whole["function"]["name"] += function.get("name") or ""
            whole["function"]["arguments"] += function.get("arguments") or ""
        for name, entries in (choice.get("logprobs") or {}).items():
            if isinstance(entries, list):
                kept.setdefault("logprobs", {}).setdefault(name, []).extend(entries)
        if choice.get("finish_reason"):
            kept["finish_reason"] = choice["finish_reason"]

    def answer(self) -> Answer:
        finish_reason = self.last.finish_reason or "stop"
        input_tokens = self.last.input_tokens or 0
        output_tokens = self.last.output_tokens or 0
        body = None
        if self._choices:
            choices = [
                {"finish_reason": finish_reason, "logprobs": None, **self._choices[index]}
                for index in sorted(self._choices)
            ]
            usage = self.last.usage or _usage(input_tokens, output_tokens)
            body = {**self.extra, "choices": choices, "usage": usage}
            message = choices[0]["message"]
        else:
            message = {"role": "assistant", "content": self.text}
        return {
            "text": self.text,
            "finish_reason": finish_reason,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "message": message,
            "body": body,
        }


def completion_body(answer: Answer) -> dict[str, Any]:
    """The completion of ``answer`` (OpenAI's ``choices`` and ``usage``), without its id,
    model and time, which the adapter sets."""
    body = answer.get("body")
    if body:
        return body
    message = answer.get("message") or {"role": "assistant", "content": answer["text"]}
    return {
        "choices": [
            {"index": 0, "message": message, "finish_reason": answer["finish_reason"] or "stop"}
        ],
        "usage": _usage(answer["input_tokens"], answer["output_tokens"]),
    }


# A completion's fields that are not passed on with each chunk of its replay.
_NOT_IN_CHUNKS = frozenset({"id", "object", "created", "model", "choices", "usage"})


def replayed_chunks(answer: Answer) -> Iterator[StreamChunk]:
    """A cached answer as a stream: its text word by word, each choice's tool calls whole,
    its logprobs, the provider's chunk fields and usage as they came."""
    body = answer.get("body")
    ending = StreamChunk(
        finish_reason=answer["finish_reason"],
        input_tokens=answer["input_tokens"],
        output_tokens=answer["output_tokens"],
        usage=(body or {}).get("usage"),
    )
    if not body:
        for index, word in enumerate(answer["text"].split(" ")):
            yield StreamChunk(delta=word if index == 0 else f" {word}")
        yield ending
        return
    extra = {name: value for name, value in body.items() if name not in _NOT_IN_CHUNKS}

    def chunk(index: int, delta: dict[str, Any], text: str = "", **more: Any) -> StreamChunk:
        choice = {"index": index, "delta": delta, **more}
        return StreamChunk(delta=text if index == 0 else "", choices=[choice], extra=extra)

    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content = message.get("content")
        yield chunk(index, {"role": "assistant", "content": None if content is None else ""})
        for number, word in enumerate(content.split(" ") if content else ()):
            piece = word if number == 0 else f" {word}"
            yield chunk(index, {"content": piece}, piece)
        calls = [
            {"index": position, **call}
            for position, call in enumerate(message.get("tool_calls") or ())
        ]
        if calls:
            yield chunk(index, {"tool_calls": calls})
        if message.get("refusal"):
            yield chunk(index, {"refusal": message["refusal"]})
        if choice.get("logprobs"):
            yield chunk(index, {}, logprobs=choice["logprobs"])
        yield chunk(index, {}, finish_reason=choice.get("finish_reason") or "stop")
    yield ending
