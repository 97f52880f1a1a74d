"""The one small interface every AI provider implements, and its error type."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# An OpenAI Chat Completions message as the client sent it: ``role``, ``content`` (a
# string, a list of parts, or None), and for some roles ``tool_calls``, ``tool_call_id``,
# ``name``. Every provider takes messages, params and answers in OpenAI's shapes.
Message = dict[str, Any]


@dataclass(frozen=True)
class Generation:
    """A finished answer: its text and outcome, and the whole completion when the
    provider gave one in OpenAI's shape (``body``: every choice, tool calls, usage details)."""

    text: str
    finish_reason: str  # "stop", "length", "tool_calls", ...
    input_tokens: int
    output_tokens: int
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer. The last chunk has ``finish_reason`` and the token counts.

    ``delta`` is the piece of text; ``choices`` the chunk's choices in OpenAI's shape when
    the provider gives more than text (tool-call deltas, several choices, logprobs). A
    provider that gives ``choices`` gives them all: the role delta first (``content:
    None`` when the answer starts with a tool call), the deltas, a finish delta.
    """

    delta: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    choices: list[dict[str, Any]] | None = None
    # The chunk's other fields from the provider (``system_fingerprint``, ...), and on the
    # last chunk its whole ``usage`` (with the token details), passed on as they came.
    extra: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


def content_text(content: Any) -> str:
    """The text of a message's ``content``: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


@dataclass
class Attempt:
    """One call to the provider, as recorded on the interaction."""

    number: int
    outcome: str  # "ok" or the error type
    status: int | None = None
    latency_ms: float = 0.0
    retry_after_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "outcome": self.outcome,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "retry_after_s": self.retry_after_s,
        }


def attempt_records(attempts: list[Attempt], *, deployment: str, provider: str) -> list[dict]:
    """Attempts as recorded on an interaction, each naming the deployment it called."""
    return [{**a.as_dict(), "deployment": deployment, "provider": provider} for a in attempts]


class ProviderCallError(Exception):
    """The provider did not answer. ``retryable`` for 429, 5xx, timeouts and lost connections."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        attempts: list[Attempt] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param  # the request field a provider's refusal names, if it names one
        # Every attempt of a routed call (dicts naming their deployments), set by the router.
        self.records: list[dict[str, Any]] | None = None
        self.message = message
        self.error_type = error_type
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts: list[Attempt] = attempts or []


@dataclass(frozen=True)
class ModelInfo:
    provider: str
    model: str
    input_price_per_mtok: str = "0"  # decimal strings: prices are money
    output_price_per_mtok: str = "0"
    default: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RemoteProvider:
    """What a provider behind an HTTP API is configured with: its server, key and extra
    headers (a tuple, to key the per-process SDK client cache)."""

    default_name = ""

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str,
        api_key: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name or self.default_name
        self.base_url = base_url
        self._api_key = api_key
        self._headers = tuple(sorted((extra_headers or {}).items()))


class Provider(Protocol):
    """Calls one model of one provider. One call = one HTTP request; retries live outside."""

    name: str

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation: ...

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]: ...


class EmbeddingProvider(Provider, Protocol):
    """A provider that also embeds: ``params`` are OpenAI's embeddings request fields
    (``input``, ``dimensions``, ``encoding_format``, ...); the answer's ``body`` is OpenAI's
    embeddings list and ``input_tokens`` its usage."""

    def embed(self, *, model: str, params: dict[str, Any], timeout: float) -> Generation: ...
