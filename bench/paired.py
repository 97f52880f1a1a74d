"""Paired A/B of the gateway's hot path: two servers side by side, calls alternated.

This machine's speed drifts by the hour (up to twice as slow), far more than most
changes to the hot path move it. Two servers run at once, A and B, each one gunicorn
worker process with ``SERVER_TIMING`` on; every call goes to both, in alternating
order, with a new prompt each (never a cache hit), and once straight to the upstream.
The medians of each side and their difference are then measured under the same
drift. Timed also inside the fake upstream (when each request reached it, when its
answer began), each side's added time is split into what it adds before the provider is
asked and after it answers. Each side is a checkout (``--a-root``: a ``git worktree``
of the code before a change, say) and settings (``--b-env NAME=VALUE``, repeatable).

    git worktree add /tmp/before HEAD~1
    python -m bench.paired --a-root /tmp/before --calls 600
    python -m bench.paired --b-env DATABASE_PREPARED_STATEMENTS=false

Uses the bench's database and Redis databases, a key with a budget, RPM and TPM
limits and a route of 3 deployments on a fake upstream (``make bench``'s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import run

KINDS = ("miss", "stream", "floor")


@dataclass
class Side:
    name: str
    root: Path
    env: dict[str, str]
    base: str = ""
    ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    stages: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {k: [] for k in KINDS}
    )
    # Per call: ms from sending it to the upstream's receiving it, and from the
    # upstream's answer to the client's (first) byte.
    legs: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {k: [] for k in KINDS}
    )


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            raise SystemExit(f"{pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _call(kind: str, prompt: str) -> tuple[str, dict, bool]:
    """The path, body and whether only the first byte counts, of one call of ``kind``."""
    if kind == "stream":
        return "/v1/chat/completions", run.streamed_body(prompt), True
    path = "/bench/bare-proxy" if kind == "floor" else "/v1/chat/completions"
    return path, run.gateway_body(prompt), False


def _marked_upstream():
    """The bench's fake upstream, noting when its last request came in and when its
    answer (a stream's first event) began, on ``time.perf_counter``'s clock."""
    from tests.fakes.openai_server import FakeOpenAI

    class Marked(FakeOpenAI):
        came = left = 0.0

        def handle(self, handler, method):
            self.came = time.perf_counter()
            return super().handle(handler, method)

        def answer_main(self, handler, body, reply):  # once its delay is over
            self.left = time.perf_counter()
            return super().answer_main(handler, body, reply)

    return Marked()


def _legs(upstream, sent: float, answer: run.Timed) -> tuple[float, float]:
    return (upstream.came - sent) * 1000, (sent + answer.seconds - upstream.left) * 1000


def measure(sides: list[Side], kinds: list[str], *, calls: int, upstream_ms: float) -> None:
    run.prepare_database()
    run.setup_django()
    user, _ = run.bench_api_key()
    with _marked_upstream() as upstream, ExitStack() as servers:
        upstream.default_delay = upstream_ms / 1000
        run.echo_route()
        run.gateway_route(upstream.base_url)
        key = run.governed_api_key(user)
        for number, side in enumerate(sides):
            side.base = servers.enter_context(
                run.web_server(
                    workers=1,
                    root=side.root,
                    port=18500 + number,
                    SERVER_TIMING="true",
                    BENCH_UPSTREAM_URL=upstream.base_url,
                    **side.env,
                )
            )
        client = run.KeepAliveClient()
        direct: dict[str, list[float]] = {k: [] for k in kinds}
        direct_legs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for number in range(calls + 20):  # the first 20 warm the servers up
            for kind in kinds:
                for side in sides if number % 2 == 0 else reversed(sides):
                    # A prompt of its own each (the sides share the answer cache).
                    prompt = f"paired {side.name} {number} {time.perf_counter_ns()}"
                    path, body, first_byte = _call(kind, prompt)
                    sent = time.perf_counter()
                    answer = client.post(side.base + path, body, key, first_byte=first_byte)
                    if answer.status != 200:
                        raise run.BenchError(f"{side.name} answered {answer.status}")
                    if number >= 20:
                        side.ms[kind].append(answer.seconds * 1000)
                        side.stages[kind].append(answer.stages)
                        side.legs[kind].append(_legs(upstream, sent, answer))
                path, body, first_byte = _call(kind, f"paired upstream {number}")
                sent = time.perf_counter()
                answer = client.post(
                    f"{upstream.base_url}/chat/completions", body, first_byte=first_byte
                )
                if number >= 20:
                    direct[kind].append(answer.seconds * 1000)
                    direct_legs[kind].append(_legs(upstream, sent, answer))
    report(sides, kinds, direct, direct_legs)


def _leg_medians(legs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(leg[0] for leg in legs), statistics.median(leg[1] for leg in legs)


def report(
    sides: list[Side],
    kinds: list[str],
    direct: dict[str, list[float]],
    direct_legs: dict[str, list[tuple[float, float]]],
) -> None:
    for kind in kinds:
        upstream = statistics.median(direct[kind])
        to_upstream, from_upstream = _leg_medians(direct_legs[kind])
        print(f"\n{kind}: the upstream directly {upstream:.2f} ms; added, median (ms):")
        added = {}
        for side in sides:
            added[side.name] = statistics.median(side.ms[kind]) - upstream
            p99 = statistics.quantiles(side.ms[kind], n=100)[98] - upstream
            stages = run.Stages.of(kind, side.stages[kind], upstream)
            breakdown = ", ".join(f"{name} {ms:.2f}" for name, ms in stages.medians.items())
            before, after = _leg_medians(side.legs[kind])
            print(f"  {side.name}: {added[side.name]:.2f}, p99 {p99:.2f}  ({breakdown})")
            print(
                f"     before the provider +{before - to_upstream:.2f}, "
                f"after it +{after - from_upstream:.2f}"
            )
        print(f"  B - A: {added['B'] - added['A']:+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a-root", type=Path, default=run.ROOT, help="A's checkout")
    parser.add_argument("--b-root", type=Path, default=run.ROOT, help="B's checkout")
    parser.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind, per side")
    parser.add_argument("--kinds", default=",".join(KINDS), help="of miss, stream, floor")
    parser.add_argument("--upstream-ms", type=float, default=50.0)
    args = parser.parse_args()
    kinds = [kind for kind in args.kinds.split(",") if kind]
    if unknown := set(kinds) - set(KINDS):
        raise SystemExit(f"unknown kinds: {', '.join(sorted(unknown))}")
    sides = [
        Side("A", args.a_root.resolve(), _env(args.a_env)),
        Side("B", args.b_root.resolve(), _env(args.b_env)),
    ]
    measure(sides, kinds, calls=args.calls, upstream_ms=args.upstream_ms)


if __name__ == "__main__":
    main()
