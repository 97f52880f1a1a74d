"""Anthropic-compatible Messages API: parse Anthropic's request, call the AI services,
answer in Anthropic's shape (a message, or its server-sent events).

The request becomes OpenAI-shaped messages and params, the services' shapes, so any
configured model answers it; the recorded completion comes back as content blocks.
Same API keys, cache and recording as every other call; errors in Anthropic's shape.
"""

import json
import logging
from collections.abc import Iterator
from typing import Any

from django.db import connections
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apps.ai_interactions.anthropic_api.serializers import (
    AnthropicErrorSchema,
    AnthropicMessageSchema,
    AnthropicMessagesRequestSchema,
    AnthropicServerSentEventSchema,
)
from apps.ai_interactions.gateway import (
    GatewayCall,
    GatewayView,
    checked_body,
    gateway_answer,
    gateway_streamed,
    with_rate_limits,
)
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.providers.base import (
    Message,
    ProviderCallError,
    StreamChunk,
    content_text,
)
from apps.ai_interactions.serializers import GenerationParamsSerializer, one_of
from apps.ai_interactions.services import Chunks
from contextos.exceptions import (
    ValidationFailed,
    anthropic_error_body,
)
from contextos.schema import error_responses
from contextos.timing import stage

logger = logging.getLogger(__name__)

ROLES = ("user", "assistant")
# The content blocks each role may send (a tool result holds text and images).
USER_BLOCKS = ("text", "image", "tool_result")
ASSISTANT_BLOCKS = ("text", "tool_use")
# Anthropic's tool_choice types as OpenAI's ("tool" names a function).
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# OpenAI's finish reasons as Anthropic's stop reasons. OpenAI's "stop" does not say
# whether a stop sequence ended the answer: it is always "end_turn".
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- Anthropic's request as OpenAI's messages and params -------------------------------


def _invalid(where: str, problem: str) -> ValidationFailed:
    """A 400 naming the field as Anthropic does (``messages.0.content.1.type: ...``)."""
    return ValidationFailed(f"{where}: {problem}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, "must be an object.")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(where, "must be a string.")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(where, "must be a non-empty string.")
    return value


def _block(value: Any, where: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    block = _object(value, where)
    if block.get("type") not in kinds:
        raise _invalid(f"{where}.type", f"use {one_of(kinds)}.")
    return block


def _part(value: Any, where: str, kinds: tuple[str, ...] = ("text", "image")) -> dict[str, Any]:
    """A text or image block as an OpenAI content part (an image as its URL or data URI)."""
    block = _block(value, where, kinds)
    if block["type"] == "text":
        return {"type": "text", "text": _string(block.get("text"), f"{where}.text")}
    source = _object(block.get("source"), f"{where}.source")
    if source.get("type") == "base64":
        media_type = _name(source.get("media_type"), f"{where}.source.media_type")
        data = _name(source.get("data"), f"{where}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif source.get("type") == "url":
        url = _name(source.get("url"), f"{where}.source.url")
    else:
        raise _invalid(f"{where}.source.type", "use base64 or url.")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: dict[str, Any], where: str) -> Message:
    content = block.get("content", "")
    if isinstance(content, list):
        content = [_part(item, f"{where}.content.{n}") for n, item in enumerate(content)]
    elif not isinstance(content, str):
        raise _invalid(f"{where}.content", "must be a string or a list of text and image blocks.")
    return {
        "role": "tool",
        "tool_call_id": _name(block.get("tool_use_id"), f"{where}.tool_use_id"),
        "content": content,
    }


def _user_messages(blocks: list[Any], where: str) -> list[Message]:
    results: list[Message] = []
    parts: list[dict[str, Any]] = []
    for number, value in enumerate(blocks):
        at = f"{where}.{number}"
        block = _block(value, at, USER_BLOCKS)
        if block["type"] == "tool_result":
            results.append(_tool_message(block, at))
        else:
            parts.append(_part(block, at))
    # OpenAI wants a call's results right after the assistant message that made it.
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise _invalid(f"{where}.input", "must be an object.")
    return {
        "id": _name(block.get("id"), f"{where}.id"),
        "type": "function",
        "function": {
            "name": _name(block.get("name"), f"{where}.name"),
            "arguments": json.dumps(tool_input),
        },
    }


def _assistant_message(blocks: list[Any], where: str) -> Message:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for number, value in enumerate(blocks):
        at = f"{where}.{number}"
        block = _block(value, at, ASSISTANT_BLOCKS)
        if block["type"] == "text":
            texts.append(_string(block.get("text"), f"{at}.text"))
        else:
            calls.append(_tool_call(block, at))
    message: Message = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def _conversation(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "must be a non-empty list.")
    messages: list[Message] = []
    for number, item in enumerate(value):
        where = f"messages.{number}"
        message = _object(item, where)
        role = message.get("role")
        if role not in ROLES:
            raise _invalid(f"{where}.role", f"use {one_of(ROLES)}.")
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif not isinstance(content, list) or (role == "user" and not content):
            raise _invalid(
                f"{where}.content", "must be a string or a non-empty list of content blocks."
            )
        elif role == "assistant":
            messages.append(_assistant_message(content, f"{where}.content"))
        else:
            messages += _user_messages(content, f"{where}.content")
    return messages


def _system(value: Any) -> list[Message]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "system", "content": value}]
    if not isinstance(value, list):
        raise _invalid("system", "must be a string or a list of text blocks.")
    parts = [_part(block, f"system.{n}", ("text",)) for n, block in enumerate(value)]
    return [{"role": "system", "content": parts}] if parts else []


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _invalid("tools", "must be a list.")
    tools = []
    for number, item in enumerate(value):
        where = f"tools.{number}"
        tool = _object(item, where)
        if tool.get("type") not in (None, "custom"):
            # Server tools (web search, code execution) run at Anthropic, nowhere else.
            raise _invalid(f"{where}.type", "only custom tools (name, input_schema) are supported.")
        function: dict[str, Any] = {"name": _name(tool.get("name"), f"{where}.name")}
        if tool.get("description") is not None:
            function["description"] = _string(tool["description"], f"{where}.description")
        function["parameters"] = _object(tool.get("input_schema"), f"{where}.input_schema")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_params(tools: Any, choice: Any) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``, none without tools (OpenAI
    refuses a tool choice with no tools)."""
    functions = _tools(tools) if tools is not None else []
    if choice is None:
        return {"tools": functions} if functions else {}
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        named: Any = {
            "type": "function",
            "function": {"name": _name(choice.get("name"), "tool_choice.name")},
        }
    elif isinstance(kind, str) and kind in TOOL_CHOICES:
        named = TOOL_CHOICES[kind]
    else:
        raise _invalid("tool_choice.type", f"use {one_of([*TOOL_CHOICES, 'tool'])}.")
    serial = choice.get("disable_parallel_tool_use", False)
    if not isinstance(serial, bool):
        raise _invalid("tool_choice.disable_parallel_tool_use", "must be true or false.")
    if not functions:
        return {}
    return {
        "tools": functions,
        "tool_choice": named,
        **({"parallel_tool_calls": False} if serial else {}),
    }


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    """``max_tokens`` (required, as Anthropic's), ``temperature``, ``top_p``, ``top_k`` and
    ``stop``, checked as every call's are."""
    if body.get("max_tokens") is None:
        raise _invalid("max_tokens", "required: the most tokens the answer may have.")
    given = {
        name: body[name]
        for name in ("max_tokens", "temperature", "top_p")
        if body.get(name) is not None
    }
    checked = GenerationParamsSerializer(data=given)
    if not checked.is_valid():
        name, problems = next(iter(checked.errors.items()))
        raise ValidationFailed(f"{name}: {problems[0]}", details=checked.errors)
    params = dict(checked.validated_data)
    top_k = body.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise _invalid("top_k", "must be a non-negative integer.")
        params["top_k"] = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
            raise _invalid("stop_sequences", "must be a list of strings.")
        if stop:
            params["stop"] = stop
    return params


def _parse(body: Any, cache_control: str) -> GatewayCall:
    """An Anthropic Messages request as the services take it: OpenAI's messages and params."""
    body = checked_body(body)
    model = _name(body.get("model"), "model")
    messages = _system(body.get("system")) + _conversation(body.get("messages"))
    params = {**_sampling(body), **_tool_params(body.get("tools"), body.get("tool_choice"))}
    stream = body.get("stream", False)
    cache = body.get("cache", True)
    metadata = body.get("metadata") or {}
    if not isinstance(stream, bool):
        raise _invalid("stream", "must be true or false.")
    if not isinstance(cache, bool):
        raise _invalid("cache", "must be true or false.")
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "must be an object.")
    return GatewayCall(
        model=model,
        messages=messages,
        params=params,
        stream=stream,
        use_cache=cache and "no-store" not in cache_control.lower(),
        metadata=metadata,
    )


# --- The answer as Anthropic's message --------------------------------------------------


def _head(interaction: AIInteraction, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{interaction.pk.hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
    }


def _stop_reason(finish_reason: str | None, stop_sequence: str | None = None) -> str:
    if stop_sequence:
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _stop_sequence(choice: dict[str, Any]) -> str | None:
    """The stop sequence that ended a choice: ``stop_sequence`` (an Anthropic provider's,
    as ContextOS passes it on) or a string ``stop_reason`` (vLLM's); else None."""
    for field in ("stop_sequence", "stop_reason"):
        value = choice.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _usage(interaction: AIInteraction) -> dict[str, int]:
    return {"input_tokens": interaction.input_tokens, "output_tokens": interaction.output_tokens}


def _tool_input(arguments: Any) -> dict[str, Any]:
    """A call's arguments (JSON text) as a ``tool_use`` block's input object."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's text block (always one when it calls no tool), then a block per call."""
    text = content_text(message.get("content")) or message.get("refusal") or ""
    calls = message.get("tool_calls") or []
    blocks = [{"type": "text", "text": text}] if text or not calls else []
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"call_{position}",
                "name": function.get("name") or "",
                "input": _tool_input(function.get("arguments")),
            }
        )
    return blocks


def _message(interaction: AIInteraction, model: str) -> dict[str, Any]:
    choice = interaction.completion["choices"][0]
    stop_sequence = _stop_sequence(choice)
    return {
        **_head(interaction, model),
        "content": _content(choice.get("message") or {}),
        "stop_reason": _stop_reason(
            choice.get("finish_reason") or interaction.finish_reason, stop_sequence
        ),
        "stop_sequence": stop_sequence,
        "usage": _usage(interaction),
    }


# --- The answer as Anthropic's server-sent events ---------------------------------------


def _sse(payload: dict[str, Any]) -> bytes:
    """One event, named (as Anthropic names them) by its payload's type."""
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


def _first_choice(chunk: StreamChunk) -> dict[str, Any]:
    for choice in chunk.choices or ():
        if choice.get("index", 0) == 0:
            return choice
    return {}


class _ContentBlocks:
    """A stream's chunks as content-block events: each run of text and each tool call is
    one block, started at its first piece and stopped when another block starts."""

    def __init__(self) -> None:
        self.started = 0  # blocks started so far; the last one may still be open
        self.open: tuple[str, int] | None = None  # ("text", 0) or ("tool_use", call index)
        self.tool_blocks: dict[int, int] = {}  # a tool call's index -> its block's index
        self.stop_sequence: str | None = None  # the stop sequence that ended the answer

    def events(self, chunk: StreamChunk) -> Iterator[bytes]:
        choice = _first_choice(chunk)
        self.stop_sequence = _stop_sequence(choice) or self.stop_sequence
        delta = choice.get("delta") or {}
        refusal = delta.get("refusal")
        text = chunk.delta or (refusal if isinstance(refusal, str) else "")
        if text:
            if self.open != ("text", 0):
                yield from self._start(("text", 0), {"type": "text", "text": ""})
            yield self._delta(self.started - 1, {"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            position = call.get("index", 0)
            function = call.get("function") or {}
            if position not in self.tool_blocks:
                block = {
                    "type": "tool_use",
                    "id": call.get("id") or f"call_{position}",
                    "name": function.get("name") or "",
                    "input": {},
                }
                yield from self._start(("tool_use", position), block)
                self.tool_blocks[position] = self.started - 1
            if function.get("arguments"):
                yield self._delta(
                    self.tool_blocks[position],
                    {"type": "input_json_delta", "partial_json": function["arguments"]},
                )

    def finish(self) -> Iterator[bytes]:
        """Stop the open block; an answer with none has one empty text block."""
        if not self.started:
            yield from self._start(("text", 0), {"type": "text", "text": ""})
        if self.open is not None:
            yield _sse({"type": "content_block_stop", "index": self.started - 1})
            self.open = None

    def _start(self, key: tuple[str, int], block: dict[str, Any]) -> Iterator[bytes]:
        if self.open is not None:
            yield _sse({"type": "content_block_stop", "index": self.started - 1})
        yield _sse({"type": "content_block_start", "index": self.started, "content_block": block})
        self.open = key
        self.started += 1

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return _sse({"type": "content_block_delta", "index": index, "delta": delta})


def _events(interaction: AIInteraction, chunks: Chunks, model: str) -> Iterator[bytes]:
    """Anthropic's events of the service's chunks: ``message_start``, the content blocks,
    ``message_delta`` (stop reason and usage) and ``message_stop``; a failure midway ends
    the stream with an ``error`` event.

    The interaction is recorded when the chunks end, before ``message_delta``, which
    reports its tokens. No database connection is held while the provider answers: they
    go back to the pool before the provider is asked.
    """
    blocks = _ContentBlocks()
    start = {
        **_head(interaction, model),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    try:
        yield _sse({"type": "message_start", "message": start})
        for chunk in chunks:
            yield from blocks.events(chunk)
        yield from blocks.finish()
        stop = {
            "stop_reason": _stop_reason(interaction.finish_reason, blocks.stop_sequence),
            "stop_sequence": blocks.stop_sequence,
        }
        yield _sse({"type": "message_delta", "delta": stop, "usage": _usage(interaction)})
        yield _sse({"type": "message_stop"})
    except ProviderCallError as error:
        status = error.status if error.status and 400 <= error.status < 600 else 502
        yield _sse(anthropic_error_body(error.message, "provider_error", status))
    except Exception:
        logger.exception("Streaming message %s failed", interaction.pk)
        yield _sse(anthropic_error_body("Internal error.", "internal_error", 500))
    finally:
        # A client gone midway closes this generator: the service records it so.
        chunks.close()
        connections.close_all()


class MessagesView(GatewayView):
    key_on_trust = True

    @extend_schema(
        summary="Anthropic-compatible messages",
        description=(
            "Anthropic's Messages API for any configured model. Authenticate with "
            "`x-api-key: <api key>` or `Authorization: Bearer <api key>`; "
            '`anthropic-version` is accepted. With `"stream": true` the answer is '
            "`text/event-stream`: `message_start`, `content_block_start`, "
            "`content_block_delta`, `content_block_stop`, `message_delta` and "
            "`message_stop` events, or an `error` event when the provider fails midway."
        ),
        request=AnthropicMessagesRequestSchema,
        responses={
            (200, "application/json"): AnthropicMessageSchema,
            (200, "text/event-stream"): AnthropicServerSentEventSchema,
            **error_responses(400, 401, 404, 413, 429, 502, serializer=AnthropicErrorSchema),
        },
        tags=["anthropic-compatible"],
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        with stage("parse"):
            asked = _parse(request.data, request.headers.get("Cache-Control", ""))
        if not asked.stream:
            interaction = gateway_answer(request, asked)
            return with_rate_limits(Response(_message(interaction, asked.model)), interaction)
        return gateway_streamed(
            request, asked, lambda interaction, chunks: _events(interaction, chunks, asked.model)
        )
