"""Per call: the deployments that can answer a route, in the strategy's order, tried
until one answers (then the fallback routes), each attempt recorded.

A 429, 5xx, timeout or lost connection moves on to the next deployment (a 429 at
once, cooling that deployment); a provider's ``context_length_exceeded`` moves on to
a deployment with a larger window; any other refusal is the client's and ends the
call. Deployments whose context window cannot hold the estimated prompt plus
``max_tokens`` are skipped without a call; when none of the route or its fallbacks
can, the call is refused (400 ``context_length_exceeded``).
"""

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.conf import settings

from apps.ai_interactions.providers.base import (
    Attempt,
    Provider,
    ProviderCallError,
    attempt_records,
)
from apps.ai_interactions.providers.retry import call_with_retries
from apps.routing import cooldown
from apps.routing.models import Strategy
from apps.routing.table import DeploymentConfig, RouteConfig, RoutingTable, routing_table
from contextos.exceptions import ValidationFailed
from contextos.timing import stage

T = TypeVar("T")

# The documented estimate of a prompt's tokens (no tokenizer's files can be fetched
# offline): a token per four characters, and a few per message for its framing.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# Weight of the newest latency in a deployment's running average (``latency`` strategy).
_LATENCY_WEIGHT = 0.3


class ContextTooLong(ValidationFailed):
    """No deployment of the route (or its fallbacks) can hold the prompt."""

    code = "context_length_exceeded"


@dataclass
class Routed(Generic[T]):
    """What answered: the result, the deployment, whether a fallback route did, and
    every attempt of the call (each naming its deployment)."""

    result: T
    deployment: DeploymentConfig
    fallback: bool
    attempts: list[dict[str, Any]]


def estimated_tokens(*, prompt_chars: int, messages: int, params: dict[str, Any]) -> int:
    """The prompt's estimated tokens plus the answer's ``max_tokens`` (when given)."""
    limit = params.get("max_completion_tokens") or params.get("max_tokens") or 0
    answer = limit if isinstance(limit, int) and limit > 0 else 0
    return math.ceil(prompt_chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages + answer


def provider_for(deployment: DeploymentConfig) -> Provider:
    """The client of a deployment's provider."""
    provider = deployment.provider
    if provider.kind == "echo":
        from apps.ai_interactions.providers.echo import EchoProvider

        return EchoProvider(delay_seconds=settings.AI_ECHO_DELAY_MS / 1000)
    if provider.kind == "openai":
        from apps.ai_interactions.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            name=provider.name,
            base_url=provider.base_url,
            api_key=provider.api_key,
            extra_headers=provider.extra_headers,
        )
    from apps.ai_interactions.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(
        name=provider.name,
        base_url=provider.base_url,
        api_key=provider.api_key,
        extra_headers=provider.extra_headers,
    )


def timeout_of(deployment: DeploymentConfig) -> float:
    return deployment.provider.timeout or settings.AI_PROVIDER_TIMEOUT


class _Latency:
    """Each deployment's running average latency in this process (``latency`` strategy)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ms: dict[str, float] = {}

    def observe(self, deployment_id: str, ms: float) -> None:
        with self.lock:
            old = self.ms.get(deployment_id)
            self.ms[deployment_id] = ms if old is None else old + _LATENCY_WEIGHT * (ms - old)

    def of(self, deployment_id: str) -> float:
        return self.ms.get(deployment_id, 0.0)  # an untried deployment goes first, to learn


latencies = _Latency()


class _SmoothWeighted:
    """Smooth weighted round robin (as nginx's): each process spreads a route's calls in
    exact proportion to the weights, interleaved, with no randomness to even out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, dict[str, int]] = {}

    def first(self, route: RouteConfig) -> DeploymentConfig:
        deployments = route.deployments
        total = sum(d.weight for d in deployments)
        with self.lock:
            current = self.current.setdefault(route.name, {})
            for deployment in deployments:
                current[deployment.id] = current.get(deployment.id, 0) + deployment.weight
            chosen = max(deployments, key=lambda d: current[d.id])
            current[chosen.id] -= total
        return chosen


weighted = _SmoothWeighted()


def ordered(route: RouteConfig) -> list[DeploymentConfig]:
    """The route's deployments in its strategy's order."""
    deployments = list(route.deployments)
    if route.strategy == Strategy.WEIGHTED and len(deployments) > 1:
        chosen = weighted.first(route)
        # If the chosen one fails, the heaviest of the others next.
        rest = sorted((d for d in deployments if d is not chosen), key=lambda d: -d.weight)
        return [chosen, *rest]
    if route.strategy == Strategy.LATENCY:
        return sorted(deployments, key=lambda d: latencies.of(d.id))
    return deployments  # priority: the table keeps them by priority


def _routes(table: RoutingTable, route: RouteConfig) -> Iterator[tuple[RouteConfig, bool]]:
    yield route, False
    seen = {route.name}
    for name in route.fallbacks:
        fallback = table.get(name)
        if fallback is not None and name not in seen:
            seen.add(name)
            yield fallback, True


def states_look(route: RouteConfig) -> cooldown.StatesLook | None:
    """The states of every deployment ``route`` may ask (its fallbacks' included), to read
    along another round trip to Redis; None when its call will not read them."""
    deployments = [
        d for candidate, _ in _routes(routing_table(), route) for d in candidate.deployments
    ]
    if len(deployments) == 1 and deployments[0].rpm is None and deployments[0].tpm is None:
        return None
    return cooldown.StatesLook([deployment.id for deployment in deployments])


def routed_call(
    route: RouteConfig,
    *,
    tokens: int,
    call: Callable[[Provider, DeploymentConfig], T],
    looked: cooldown.StatesLook | None = None,
) -> Routed[T]:
    with stage("route"):
        return _routed_call(route, tokens=tokens, call=call, looked=looked)


def _routed_call(
    route: RouteConfig,
    *,
    tokens: int,
    call: Callable[[Provider, DeploymentConfig], T],
    looked: cooldown.StatesLook | None = None,
) -> Routed[T]:
    """``call`` on the route's deployments (then its fallbacks') until one answers.

    Raises :class:`ContextTooLong` when no deployment can hold ``tokens``, and the last
    :class:`ProviderCallError` when none answered; its ``attempts`` are then the
    call's recorded attempts (dicts, each naming its deployment). The deployments'
    states are those ``looked`` read (:func:`states_look`), or read now.
    """
    table = routing_table()
    plan = [
        (deployment, fallback)
        for candidate, fallback in _routes(table, route)
        for deployment in ordered(candidate)
        if deployment.fits(tokens)
    ]
    if not plan:
        check_fits(route, tokens)
    (only, _), *others = plan
    if not others and only.rpm is None and only.tpm is None:
        # One candidate is asked whatever its breaker says (see candidates()): its
        # state is not worth a round trip to Redis.
        states = {only.id: cooldown.State()}
    else:
        states = cooldown.states([deployment.id for deployment, _ in plan], looked)
    now = time.time()
    records: list[dict[str, Any]] = []
    last_error: ProviderCallError | None = None
    exceeded_window: int | None = None  # a provider said the prompt is too long for this

    def candidates() -> Iterator[tuple[int, DeploymentConfig, bool]]:
        tried = False
        for position, (deployment, fallback) in enumerate(plan):
            state = states[deployment.id]
            if state.cooling(now) or _over_caps(deployment, state, tokens):
                continue
            window = deployment.context_window
            if exceeded_window is not None and window is not None and window <= exceeded_window:
                continue  # a provider said the prompt does not fit a window this large
            if state.needs_probe(now) and not cooldown.claim_probe(
                deployment.id, timeout_of(deployment) * _attempts(deployment)
            ):
                continue
            tried = True
            yield position, deployment, fallback
        resting = [
            (states[d.id].until or 0.0, position, d, fallback)
            for position, (d, fallback) in enumerate(plan)
            if not _over_caps(d, states[d.id], tokens)
        ]
        if not tried and resting:
            # Every deployment is cooling down: rather than fail with no call at all, the
            # one whose cooling ends first is asked (a route of one deployment still
            # answers as soon as its provider does).
            _, position, deployment, fallback = min(resting, key=lambda r: (r[0], r[1]))
            yield position, deployment, fallback

    for position, deployment, fallback in candidates():
        state = states[deployment.id]
        attempts_allowed = _attempts(deployment)
        if deployment.rpm is not None or deployment.tpm is not None:
            cooldown.count_call(deployment.id, tokens)
        provider = provider_for(deployment)
        others_left = position < len(plan) - 1
        try:
            result, attempts = call_with_retries(
                lambda provider=provider, deployment=deployment: _timed(call, provider, deployment),
                max_attempts=attempts_allowed,
                base_delay=settings.AI_RETRY_BASE_DELAY,
                max_delay=settings.AI_RETRY_MAX_DELAY,
                # With another deployment to try, a 429 moves on at once.
                retry_if=lambda error, others_left=others_left: (
                    not (others_left and error.status == 429)
                ),
            )
        except ProviderCallError as error:
            records += _records(error.attempts, deployment)
            last_error = error
            failures = sum(1 for a in error.attempts if _counts_as_failure(a))
            if failures:
                cooldown.failed(
                    deployment.id,
                    failures=failures,
                    rate_limited=error.status == 429,
                    retry_after=error.retry_after,
                )
            if error.error_type == "context_length_exceeded":
                exceeded_window = max(exceeded_window or 0, deployment.context_window or 0)
                continue
            if error.retryable:
                continue
            error.records = records
            raise
        else:
            records += _records(attempts, deployment)
            latencies.observe(deployment.id, attempts[-1].latency_ms)
            cooldown.succeeded(deployment.id, state)
            return Routed(result, deployment, fallback, records)
    if last_error is None:
        last_error = ProviderCallError(
            f"Every deployment of {route.name!r} is cooling down or at its rate cap.",
            error_type="no_deployment_available",
        )
    last_error.records = records
    raise last_error


def _timed(call: Callable[[Provider, DeploymentConfig], T], *args: Any) -> T:
    with stage("provider"):
        return call(*args)


def _attempts(deployment: DeploymentConfig) -> int:
    return deployment.provider.max_attempts or settings.AI_PROVIDER_MAX_ATTEMPTS


def _over_caps(deployment: DeploymentConfig, state: cooldown.State, tokens: int) -> bool:
    """Whether a call of ``tokens`` would pass the deployment's RPM or TPM cap this minute."""
    if deployment.rpm is not None and state.requests >= deployment.rpm:
        return True
    return deployment.tpm is not None and state.tokens + tokens > deployment.tpm


def _records(attempts: list[Attempt], deployment: DeploymentConfig) -> list[dict[str, Any]]:
    return attempt_records(attempts, deployment=deployment.label, provider=deployment.provider.name)


def _counts_as_failure(attempt: Attempt) -> bool:
    """A failure of the deployment (429, 5xx, timeout, lost connection), not of the request."""
    return attempt.outcome in {"rate_limited", "server_error", "timeout", "connection_error"}


def check_fits(route: RouteConfig, tokens: int) -> None:
    """Refuse (400 ``context_length_exceeded``) a call no deployment of the route or of
    its fallbacks can hold, before anyone is called."""
    table = routing_table()
    if not any(
        deployment.fits(tokens)
        for candidate, _ in _routes(table, route)
        for deployment in candidate.deployments
    ):
        raise ContextTooLong(
            f"The prompt (about {tokens} tokens with the answer's max_tokens) is too large "
            f"for every deployment of {route.name!r}.",
            details={"messages": ["Shorten the prompt or lower max_tokens."]},
        )


def worst_prices(route: RouteConfig) -> tuple[Decimal, Decimal]:
    """The highest input and output prices (USD per million tokens) of any deployment
    that may answer the route (its own, then its fallbacks'): a call's worst case."""
    deployments = [
        deployment
        for candidate, _ in _routes(routing_table(), route)
        for deployment in candidate.deployments
    ]
    return (
        max((Decimal(d.input_price_per_mtok) for d in deployments), default=Decimal(0)),
        max((Decimal(d.output_price_per_mtok) for d in deployments), default=Decimal(0)),
    )
