"""The one small interface every AI provider implements, and its error type."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class Generation:
    """A finished answer."""

    text: str
    finish_reason: str  # "stop", "length", ...
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer. The last chunk has ``finish_reason`` and the token counts."""

    delta: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


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
    ) -> None:
        super().__init__(message)
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


class Provider(Protocol):
    """Calls one model of one provider. One call = one HTTP request; retries live outside."""

    name: str

    def generate(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Generation: ...

    def stream(
        self, *, messages: list[Message], model: str, params: dict[str, Any], timeout: float
    ) -> Iterator[StreamChunk]: ...
