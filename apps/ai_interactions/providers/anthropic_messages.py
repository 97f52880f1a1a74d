"""Anthropic's Messages API through the official SDK, spoken in OpenAI's Chat Completions shapes."""

import base64
import contextlib
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import anthropic
import httpx2

from apps.ai_interactions.providers.base import (
    Generation,
    Message,
    ProviderCallError,
    RemoteProvider,
    StreamChunk,
    content_text,
)
from apps.ai_interactions.providers.retry import (
    error_detail,
    retry_after_seconds,
    status_error_type,
)

# Anthropic requires a limit on every call; OpenAI-style callers often give none.
DEFAULT_MAX_TOKENS = 1024
# ``response_format: json_schema`` has no Anthropic field: the schema becomes a tool the
# model is made to call, whose input is the answer. It takes the schema's name, else this one.
ANSWER_TOOL = "json_answer"
# Nor has ``json_object``, and there is no schema to make a tool of: an instruction is the
# closest Anthropic comes, and the model is trusted to follow it.
JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else."
_SYSTEM_ROLES = frozenset({"system", "developer"})
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
# Error types Anthropic can send in an ``error`` event after the stream has started.
_STREAM_ERROR_TYPES = {
    "rate_limit_error": ("rate_limited", True),
    "overloaded_error": ("server_error", True),
    "api_error": ("server_error", True),
    "timeout_error": ("timeout", True),
}


@functools.lru_cache(maxsize=16)
def _client(
    base_url: str, api_key: str, headers: tuple[tuple[str, str], ...], pid: int
) -> anthropic.Anthropic:
    # One client (one connection pool) per server, key and process: a client per call pays
    # a new connection and TLS handshake every time, and a pool must not cross a fork.
    return anthropic.Anthropic(
        base_url=base_url, api_key=api_key, max_retries=0, default_headers=dict(headers) or None
    )


class AnthropicProvider(RemoteProvider):
    """Calls ``POST {base_url}/v1/messages`` once per call; retries live outside.

    The OpenAI request is translated: system and developer messages become ``system``,
    image parts image blocks, tool calls and tool results ``tool_use`` and
    ``tool_result`` blocks, ``tools``/``tool_choice``/``parallel_tool_calls`` their
    Anthropic forms, ``stop`` ``stop_sequences``, ``max_tokens`` (or
    ``max_completion_tokens``, default 1024), ``temperature``, ``top_p`` and ``top_k``
    as they are, ``response_format`` a forced tool (a JSON schema) or an instruction (a
    JSON object). Fields with no Anthropic equivalent are dropped, since Anthropic rejects
    fields it does not know. The answer comes back as an OpenAI completion (or chunks):
    text, tool calls, finish reason and usage.
    """

    default_name = "anthropic"

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation:
        request = _request(messages, params)
        with self._translated_errors():
            message = self._sdk().messages.create(model=model, timeout=timeout, **request.fields)
        pieces: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in message.content:
            if block.type == "text":
                pieces.append(block.text)
            elif block.type == "tool_use" and block.name == request.answer_tool:
                pieces.append(json.dumps(block.input))
            elif block.type == "tool_use":
                calls.append(_tool_call(block.id, block.name, json.dumps(block.input)))
        text = "".join(pieces)
        finish_reason = _finish_reason(message.stop_reason, called=bool(calls))
        input_tokens = _input_tokens(message.usage)
        output_tokens = message.usage.output_tokens or 0
        answer: dict[str, Any] = {
            "role": "assistant",
            "content": None if calls and not text else text,
            "refusal": None,
        }
        if calls:
            answer["tool_calls"] = calls
        choice = {"index": 0, "message": answer, "finish_reason": finish_reason, "logprobs": None}
        body = {
            "object": "chat.completion",
            "choices": [_with_stop_sequence(choice, message.stop_sequence)],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
        return Generation(
            text=text,
            finish_reason=finish_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            body=body,
        )

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]:
        request = _request(messages, params)
        translation = _StreamTranslation(answer_tool=request.answer_tool)
        with self._translated_errors():
            events = self._sdk().messages.create(
                model=model, timeout=timeout, stream=True, **request.fields
            )
            with events:
                for event in events:
                    yield from translation.chunks(event)
        yield from translation.ending()

    def _sdk(self) -> anthropic.Anthropic:
        if not self._api_key:
            raise ProviderCallError(
                f"no API key is configured for {self.name}", error_type="authentication_error"
            )
        return _client(self.base_url, self._api_key, self._headers, os.getpid())

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (anthropic.AnthropicError, httpx2.TransportError) as error:
            raise self._call_error(error) from error

    def _call_error(self, error: Exception) -> ProviderCallError:
        # The SDK wraps transport errors of the request, not those while reading a stream.
        if isinstance(error, anthropic.APITimeoutError | httpx2.TimeoutException):
            return ProviderCallError(
                f"{self.name} did not answer in time", error_type="timeout", retryable=True
            )
        if isinstance(error, anthropic.APIConnectionError | httpx2.TransportError):
            return ProviderCallError(
                f"could not reach {self.name}", error_type="connection_error", retryable=True
            )
        if isinstance(error, anthropic.APIStatusError):
            status = error.status_code
            detail = error_detail(error.body, secret=self._api_key)
            if status < 400:
                # An ``error`` event after the 200 status line, e.g. overloaded mid-stream.
                error_type, retryable = _STREAM_ERROR_TYPES.get(
                    error.type or "", ("server_error", True)
                )
                return ProviderCallError(
                    f"{self.name} failed mid-answer: {detail or error.type}",
                    error_type=error_type,
                    retryable=retryable,
                )
            error_type, retryable = status_error_type(status)
            if status == 400 and "prompt is too long" in detail.lower():
                error_type = "context_length_exceeded"  # Anthropic's words for it
            return ProviderCallError(
                f"{self.name} answered {status}" + (f": {detail}" if detail else ""),
                error_type=error_type,
                status=status,
                retryable=retryable,
                retry_after=retry_after_seconds(error.response.headers) if retryable else None,
            )
        return ProviderCallError(
            f"{self.name} call failed: {error_detail(str(error), secret=self._api_key)}",
            error_type="provider_error",
        )


class _StreamTranslation:
    """Anthropic's stream events as OpenAI chunks: a first chunk with the role, content and
    tool-call deltas, a chunk with the finish reason, then the plain chunk with the usage.

    Tool calls are numbered in the order they start; the answer tool's input (a JSON
    schema's answer) is streamed as content, as in the whole answer.
    """

    def __init__(self, *, answer_tool: str | None) -> None:
        self.answer_tool = answer_tool
        self.started = False
        self.calls = 0
        # Anthropic's block index -> the tool call's index, or None for content blocks.
        self.blocks: dict[int, int | None] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0

    def chunks(self, event: Any) -> Iterator[StreamChunk]:
        if event.type == "message_start":
            self.input_tokens = _input_tokens(event.message.usage)
            self.output_tokens = event.message.usage.output_tokens or 0
        elif event.type == "content_block_start":
            yield from self._block_start(event.index, event.content_block)
        elif event.type == "content_block_delta" and event.index in self.blocks:
            yield from self._block_delta(self.blocks[event.index], event.delta)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.stop_sequence = event.delta.stop_sequence or self.stop_sequence
            # message_delta counts are cumulative; input is repeated only sometimes.
            self.output_tokens = event.usage.output_tokens or self.output_tokens
            if event.usage.input_tokens is not None:
                self.input_tokens = _input_tokens(event.usage)

    def ending(self) -> Iterator[StreamChunk]:
        if not self.started:
            yield self._chunk({"content": ""})
        finish_reason = _finish_reason(self.stop_reason, called=self.calls > 0)
        yield StreamChunk(
            choices=[_with_stop_sequence(_choice({}, finish_reason), self.stop_sequence)]
        )
        yield StreamChunk(
            finish_reason=finish_reason,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )

    def _block_start(self, index: int, block: Any) -> Iterator[StreamChunk]:
        if block.type == "tool_use" and block.name != self.answer_tool:
            self.blocks[index] = self.calls
            call = {"index": self.calls, **_tool_call(block.id, block.name, "")}
            self.calls += 1
            # A call alone has no content (None), as in OpenAI's streams and whole answers.
            opening = {} if self.started else {"content": None}
            yield self._chunk({**opening, "tool_calls": [call]})
        elif block.type in ("text", "tool_use"):
            self.blocks[index] = None
            text = getattr(block, "text", "")
            if not self.started or text:
                yield self._chunk({"content": text}, text)

    def _block_delta(self, call: int | None, delta: Any) -> Iterator[StreamChunk]:
        if delta.type == "text_delta":
            piece = delta.text
        elif delta.type == "input_json_delta":
            piece = delta.partial_json
        else:
            return
        if not piece:
            return
        if call is None:
            yield self._chunk({"content": piece}, piece)
        else:
            arguments = {"index": call, "function": {"arguments": piece}}
            yield self._chunk({"tool_calls": [arguments]})

    def _chunk(self, delta: dict[str, Any], text: str = "") -> StreamChunk:
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return StreamChunk(delta=text, choices=[_choice(delta)])


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _with_stop_sequence(choice: dict[str, Any], stop_sequence: str | None) -> dict[str, Any]:
    """The choice, naming the stop sequence that ended it when one did (a field of the
    choice, as vLLM's ``stop_reason``; OpenAI's clients ignore it)."""
    return {**choice, "stop_sequence": stop_sequence} if stop_sequence else choice


def _tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# Request translation


@dataclass(frozen=True)
class _Request:
    """The SDK's arguments for an OpenAI request, and the name of the tool that stands for
    its ``response_format`` JSON schema, if any (its input is the answer's content)."""

    fields: dict[str, Any]
    answer_tool: str | None


def _request(messages: list[Message], params: dict[str, Any]) -> _Request:
    system = [content_text(m.get("content")) for m in messages if m.get("role") in _SYSTEM_ROLES]
    response_format = params.get("response_format")
    if not isinstance(response_format, dict):
        response_format = {}
    if response_format.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    fields: dict[str, Any] = {
        "messages": _turns([m for m in messages if m.get("role") not in _SYSTEM_ROLES]),
        "max_tokens": int(max_tokens or DEFAULT_MAX_TOKENS),
    }
    joined = "\n\n".join(part for part in system if part)
    if joined:
        fields["system"] = joined
    stop = params.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stop_sequences = [s for s in stops if isinstance(s, str) and s]
    if stop_sequences:
        fields["stop_sequences"] = stop_sequences
    tools, tool_choice, answer_tool = _tools(params, response_format)
    if tools:
        fields["tools"] = tools
    if tool_choice:
        fields["tool_choice"] = tool_choice
    # This SDK has no typed sampling arguments; the API still takes them as body fields.
    sampling = {key: params[key] for key in ("temperature", "top_p", "top_k") if key in params}
    if sampling:
        fields["extra_body"] = sampling
    return _Request(fields=fields, answer_tool=answer_tool)


def _tools(
    params: dict[str, Any], response_format: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """Anthropic's ``tools`` and ``tool_choice``, and the answer tool's name."""
    tools = [
        _tool(tool["function"])
        for tool in params.get("tools") or ()
        if isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and isinstance(tool.get("function"), dict)
    ]
    choice = _tool_choice(params.get("tool_choice"))
    answer_tool = None
    schema = response_format.get("json_schema")
    if response_format.get("type") == "json_schema" and isinstance(schema, dict):
        answer_tool = str(schema.get("name") or ANSWER_TOOL)
        if choice and choice["type"] == "none":
            tools, choice = [], None
        if not tools:
            choice = {"type": "tool", "name": answer_tool, "disable_parallel_tool_use": True}
        elif not choice or choice["type"] == "auto":
            # OpenAI's model may call a tool or answer; here answering is a tool call too.
            choice = {"type": "any"}
        tools.append(
            {
                "name": answer_tool,
                "description": schema.get("description") or "Give the answer as this input.",
                "input_schema": schema.get("schema") or {"type": "object"},
            }
        )
    if not tools:
        return [], None, None
    if params.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return tools, choice, answer_tool


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    tool = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return {"type": _TOOL_CHOICES[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"type": "tool", "name": name}
    return None


def _turns(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as Anthropic's turns: tool results are user turns, and turns of
    the same role in a row are merged (Anthropic's roles alternate)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = _turn(message)
        if content is None:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    return turns


def _turn(message: Message) -> tuple[str, Any]:
    """A message's role and content in Anthropic's shape; content None when it says nothing."""
    role = message.get("role")
    content = message.get("content")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id") or "",
            "content": content_text(content),
        }
        return "user", [result]
    if role == "assistant":
        text = content_text(content)
        calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
        if not calls:
            # Anthropic refuses empty text, and an assistant turn with none says nothing.
            return "assistant", (content if isinstance(content, str) else text) or None
        return "assistant", _blocks(text) + [_tool_use(call) for call in calls]
    if isinstance(content, list):
        return "user", [block for part in content if (block := _user_block(part))]
    return "user", content if content is not None else ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def _user_block(part: Any) -> dict[str, Any] | None:
    """An OpenAI content part as an Anthropic block; None for parts Anthropic has no block
    for here (audio, files), which are dropped."""
    if not isinstance(part, dict):
        return None
    if part.get("type") == "text" and part.get("text"):
        return {"type": "text", "text": part["text"]}
    if part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url:
            return {"type": "image", "source": _image_source(url)}
    return None


def _image_source(url: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        return {"type": "url", "url": url}
    header, _, data = url.removeprefix("data:").partition(",")
    media_type, *options = header.split(";")
    if "base64" not in options:
        data = base64.b64encode(unquote_to_bytes(data)).decode()
    return {"type": "base64", "media_type": media_type, "data": data}


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = None
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": function.get("name") or "",
        # Anthropic takes only an object: a call whose arguments were none is sent without.
        "input": arguments if isinstance(arguments, dict) else {},
    }


# Answer translation


def _finish_reason(stop_reason: str | None, *, called: bool) -> str:
    if stop_reason is None:
        return "stop"
    if stop_reason == "tool_use" and not called:
        return "stop"  # only the answer tool was called: its input is the answer
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def _input_tokens(usage: Any) -> int:
    # Anthropic reports cached prompt tokens apart; the prompt's size is their sum.
    return (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )
