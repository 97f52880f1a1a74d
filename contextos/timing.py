"""Where a request's time went, stage by stage, as a ``Server-Timing`` header.

The code of each stage of an AI call marks itself with ``stage(name)``: ``auth`` (the
key and the rate limit), ``parse`` (the body read and checked), ``limits`` (governance's
admission and settlement), ``cache`` (the answer looked up, and kept), ``route`` (the
route, its deployments' breakers, the attempts around the call), ``provider`` (the
provider's call, its HTTP client included), ``record`` (the row written, the call
counted). A stage's time excludes the stages inside it, so the stages add up; ``total``
is the whole request as the outermost middleware saw it, and what the stages leave of
it is the framework and the response.

With ``SERVER_TIMING`` on, :class:`contextos.middleware.HTTPMetricsMiddleware` starts
each request's record and writes ``Server-Timing: auth;dur=0.31, ..., total;dur=4.2``
(milliseconds), which browsers' developer tools show and ``make bench`` reads. For a
stream it covers the time to its first chunk. Off, a stage costs one context-variable
read.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

STAGES = ("auth", "parse", "limits", "cache", "route", "provider", "record")


class Timings:
    """One request's seconds per stage (exclusive of the stages nested inside)."""

    __slots__ = ("nested", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.nested: list[float] = []  # per open stage, the time its inner stages took

    def header(self, total: float) -> str:
        parts = [f"{name};dur={seconds * 1000:.3f}" for name, seconds in self.seconds.items()]
        return ", ".join([*parts, f"total;dur={total * 1000:.3f}"])


_timings: ContextVar[Timings | None] = ContextVar("timings", default=None)


def begin() -> Timings:
    """Start timing this request's stages."""
    timings = Timings()
    _timings.set(timings)
    return timings


def end() -> None:
    _timings.set(None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the block's time, less that of the stages inside it, to the stage ``name``."""
    timings = _timings.get()
    if timings is None:
        yield
        return
    started = perf_counter()
    timings.nested.append(0.0)
    try:
        yield
    finally:
        inner = timings.nested.pop()
        spent = perf_counter() - started
        timings.seconds[name] = timings.seconds.get(name, 0.0) + spent - inner
        if timings.nested:
            timings.nested[-1] += spent
