"""Writes of the AI domain: ask a model (through the cache), record it, retry, delete, purge.

Every call is an ``AIInteraction`` row. Answers are cached in Redis under
``ai:response:<sha256 of provider, model, messages, params>``; identical
requests that arrive together make one provider call (a Redis lock), and
with Redis down calls still work, uncached.
"""

import copy
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from datetime import datetime
from decimal import Decimal
from functools import partial
from itertools import islice
from typing import Any, TypeVar
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.ai_interactions import metrics
from apps.ai_interactions.answer_cache import FirstLook, response_cache_key, single_flight
from apps.ai_interactions.answers import (
    AnswerAssembler,
    answer_of,
    completion_body,
    replayed_chunks,
)
from apps.ai_interactions.catalog import cost_usd, route_get
from apps.ai_interactions.models import (
    FINISHED_STATUSES,
    AIInteraction,
    InteractionKind,
    InteractionMode,
    InteractionStatus,
)
from apps.ai_interactions.providers.base import (
    Generation,
    Message,
    ProviderCallError,
    StreamChunk,
    content_text,
)
from apps.governance.admission import Admission, admit
from apps.governance.audit import audit_record
from apps.governance.limits import check_model, scopes_for, scopes_of
from apps.routing.cooldown import StatesLook
from apps.routing.router import (
    Routed,
    check_fits,
    estimated_tokens,
    routed_call,
    states_look,
    timeout_of,
    worst_prices,
)
from apps.routing.table import DeploymentConfig, RouteConfig
from apps.tasks.services import task_submit
from contextos.after_response import after_response
from contextos.db import row_insert, row_update, written_aside
from contextos.digest import canonical_digest
from contextos.exceptions import (
    AppError,
    Conflict,
    PayloadTooLarge,
    ProviderError,
    ProviderRejected,
    ValidationFailed,
)
from contextos.retention import PURGE_BATCH_SIZE, delete_in_batches
from contextos.timing import stage

logger = logging.getLogger(__name__)

GENERATE_TASK_TYPE = "ai.generate"

T = TypeVar("T")
# An answer as it comes: closing it midway records the call as cut short.
Chunks = Generator[StreamChunk, None, None]


def prompt_chars(messages: list[Message]) -> int:
    """The prompt's size: its text, image data by its length, tool calls by their arguments."""
    return sum(_message_chars(message) for message in messages)


def _message_chars(message: Message) -> int:
    content = message.get("content")
    size = len(content) if isinstance(content, str) else 0
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            size += len(part["text"])
        elif isinstance(part.get("image_url"), dict):
            size += len(str(part["image_url"].get("url") or ""))
        else:
            size += len(json.dumps(part))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        size += len(str(function.get("arguments") or "")) if isinstance(function, dict) else 0
    return size


def prompt_hash(*, model: str, messages: list[Message], params: dict) -> str:
    """The answer cache's key: the route's public name (not the deployment that
    answered), the messages and every param."""
    return canonical_digest({"model": model, "messages": messages, "params": params})


def check_prompt_size(size: int, *, field: str = "messages") -> None:
    """A prompt of ``size`` characters (``prompt_chars``) fits ``AI_MAX_PROMPT_CHARS``."""
    if size > settings.AI_MAX_PROMPT_CHARS:
        raise PayloadTooLarge(
            f"The prompt is {size} characters; the limit is {settings.AI_MAX_PROMPT_CHARS}.",
            code="prompt_too_large",
            details={field: [f"At most {settings.AI_MAX_PROMPT_CHARS} characters in all."]},
        )


def interaction_build(
    *,
    owner: AbstractBaseUser,
    api_key: Any,
    route: RouteConfig,
    messages: list[Message],
    params: dict[str, Any],
    mode: str,
    metadata: dict[str, Any],
    status: str,
    kind: str = InteractionKind.CHAT,
) -> AIInteraction:
    if kind == InteractionKind.EMBEDDING:
        prompt = "\n\n".join(_input_texts(params["input"]))
    else:
        prompt = "\n\n".join(content_text(message.get("content")) for message in messages)
    interaction = AIInteraction(
        owner=owner,
        api_key=api_key,
        mode=mode,
        kind=kind,
        status=status,
        # The provider that answers is known once one has; until then the route's first.
        provider=route.first.provider.name if route.first else "",
        model=route.name,
        messages=messages,
        params=params,
        prompt=prompt,
        prompt_hash=prompt_hash(model=route.name, messages=messages, params=params),
        metadata=metadata,
        team_id=getattr(api_key, "team_id", None),
        tags=tags_of(metadata),
    )
    interaction.key_confirmation = getattr(api_key, "confirmation", None)
    check_model(scopes_for(api_key=api_key, user=owner), route.name)  # 403 before anything
    check_fits(route, _tokens(interaction))  # too large for every deployment: a 400 now
    return interaction


# Tags are grouped on in usage rollups (an indexed column): short, and few per call.
MAX_TAGS, MAX_TAG_LENGTH = 20, 100


def tags_of(metadata: dict[str, Any]) -> list[str]:
    """The call's tags for attribution: ``metadata.tags``, strings only, each once."""
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    if not isinstance(tags, list):
        return []
    unique = list(dict.fromkeys(tag for tag in tags if isinstance(tag, str) and tag))
    if len(unique) > MAX_TAGS or any(len(tag) > MAX_TAG_LENGTH for tag in unique):
        raise ValidationFailed(
            f"At most {MAX_TAGS} tags of at most {MAX_TAG_LENGTH} characters each.",
            details={"metadata": [f"tags: at most {MAX_TAGS}, {MAX_TAG_LENGTH} characters each"]},
        )
    return unique


# --- Recording -----------------------------------------------------------------------


def record_answer(
    interaction: AIInteraction,
    *,
    priced: DeploymentConfig | None,
    answer: dict[str, Any],
    cached: bool,
    started: float,
    attempts: list[dict[str, Any]],
) -> None:
    interaction.status = InteractionStatus.SUCCEEDED
    interaction.response = answer["text"]
    interaction.response_message = answer.get("message")
    interaction.completion = completion_body(answer)
    interaction.finish_reason = answer["finish_reason"]
    interaction.input_tokens = answer["input_tokens"]
    interaction.output_tokens = answer["output_tokens"]
    interaction.cached = cached
    interaction.cost_usd = (
        0
        if cached or priced is None
        else cost_usd(
            priced, input_tokens=answer["input_tokens"], output_tokens=answer["output_tokens"]
        )
    )
    interaction.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    interaction.attempts = attempts
    interaction.error = None
    interaction.provider_error_type = ""
    interaction.provider_status = None
    interaction.completed_at = timezone.now()


def record_failure(
    interaction: AIInteraction,
    error: ProviderCallError,
    *,
    started: float,
    final: bool,
    attempts: Sequence[dict[str, Any]] = (),
) -> None:
    """The provider failed; ``attempts`` are this run's attempts that succeeded before it
    (a stream cut off midway), ``error.attempts`` the failed ones."""
    interaction.status = InteractionStatus.FAILED if final else InteractionStatus.QUEUED
    interaction.error = {
        "message": error.message,
        "type": error.error_type,
        "provider_status": error.status,
    }
    interaction.provider_error_type = error.error_type
    interaction.provider_status = error.status
    interaction.attempts = [
        *interaction.attempts,
        *attempts,
        *(
            error.records
            if error.records is not None
            else (attempt.as_dict() for attempt in error.attempts)
        ),
    ]
    interaction.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    interaction.completed_at = timezone.now() if final else None


def record_cut_short(
    interaction: AIInteraction, *, started: float, message: str, kind: str
) -> None:
    """The call ended before its answer did: the client left, or ContextOS failed."""
    interaction.status = InteractionStatus.FAILED
    interaction.error = {"message": message, "type": kind, "provider_status": None}
    interaction.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    interaction.completed_at = timezone.now()


def _tokens(interaction: AIInteraction) -> int:
    """The call's estimated size in tokens (its text and the answer's ``max_tokens``)."""
    return estimated_tokens(
        prompt_chars=len(interaction.prompt),
        messages=max(1, len(interaction.messages)),
        params=interaction.params,
    )


def _calling(interaction: AIInteraction, announce: bool) -> Callable[[], None]:
    """What is done before each provider call: before the first, when ``announce``, the
    interaction is saved as running (:func:`_announce`), so that the write goes on while
    the provider is asked rather than before."""
    pending = announce

    def before() -> None:
        nonlocal pending
        if pending:
            pending = False
            _announce(interaction)

    return before


def _generated(
    interaction: AIInteraction,
    route: RouteConfig,
    *,
    announce: bool = False,
    routing: StatesLook | None = None,
) -> Routed[Generation]:
    """The provider's whole answer (a completion, or embeddings), routed and retried."""
    before = _calling(interaction, announce)

    def call(provider: Any, deployment: DeploymentConfig) -> Generation:
        before()
        if interaction.kind == InteractionKind.EMBEDDING:
            return provider.embed(
                model=deployment.model, params=interaction.params, timeout=timeout_of(deployment)
            )
        return provider.generate(
            messages=interaction.messages,
            model=deployment.model,
            params=interaction.params,
            timeout=timeout_of(deployment),
        )

    return routed_call(route, tokens=_tokens(interaction), call=call, looked=routing)


def _streamed(
    interaction: AIInteraction,
    route: RouteConfig,
    *,
    announce: bool = False,
    routing: StatesLook | None = None,
) -> tuple[Chunks, Routed]:
    """The provider's answer as it comes, routed and retried (as a whole call is) until
    its first chunk."""
    before = _calling(interaction, announce)

    def first(provider: Any, deployment: DeploymentConfig) -> tuple[StreamChunk, Iterator]:
        before()
        chunks = iter(
            provider.stream(
                messages=interaction.messages,
                model=deployment.model,
                params=interaction.params,
                timeout=timeout_of(deployment),
            )
        )
        return next(chunks, StreamChunk(finish_reason="stop")), chunks

    routed = routed_call(route, tokens=_tokens(interaction), call=first, looked=routing)
    head, rest = routed.result

    def chained() -> Chunks:
        yield head
        yield from rest

    return chained(), routed


def _record_route(interaction: AIInteraction, routed: Routed) -> None:
    interaction.provider = routed.deployment.provider.name
    interaction.deployment = routed.deployment.label
    interaction.fallback = routed.fallback


def _admitted(
    interaction: AIInteraction,
    route: RouteConfig,
    looked: FirstLook | None,
    routing: StatesLook | None,
) -> Admission:
    """The call let through the limits of its key, user and team (or refused, 429/503),
    its answer ``looked`` up and its deployments' states read (``routing``) in the same
    round trip to Redis.

    An async or batch call refused when its turn comes is recorded as failed."""
    tokens = _tokens(interaction)  # the prompt's estimate and max_tokens: for TPM
    prompt_tokens = estimated_tokens(
        prompt_chars=len(interaction.prompt),
        messages=max(1, len(interaction.messages)),
        params={},
    )
    limit = interaction.params.get("max_completion_tokens") or interaction.params.get("max_tokens")
    answer_tokens = limit if isinstance(limit, int) and limit > 0 else None
    answer_tokens = answer_tokens or settings.GOVERNANCE_DEFAULT_MAX_TOKENS
    input_price, output_price = worst_prices(route)
    per_million = prompt_tokens * input_price + answer_tokens * output_price
    worst = per_million / Decimal(1_000_000)
    scopes = scopes_of(
        key_id=interaction.api_key_id,
        team_id=interaction.team_id,
        user_id=interaction.owner_id,
        # A call answered while its client waits holds a web thread: its key's are capped.
        in_flight_default=interaction.mode in (InteractionMode.SYNC, InteractionMode.GATEWAY),
    )
    try:
        with stage("limits"):
            along = [call for call in (looked, routing) if call is not None]
            return admit(
                scopes,
                tokens=tokens,
                worst_cost=worst,
                along=along,
                confirming=interaction.key_confirmation,
            )
    except BaseException as refusal:
        if looked is not None:
            looked.let_go()  # the lock it may have taken: the call goes no further
        if isinstance(refusal, AppError) and interaction.mode in (
            InteractionMode.ASYNC,
            InteractionMode.BATCH,
        ):
            interaction.status = InteractionStatus.FAILED
            interaction.error = {"message": refusal.message, "type": refusal.code}
            interaction.completed_at = timezone.now()
            _save(interaction)
        raise


def _answered(
    interaction: AIInteraction,
    *,
    use_cache: bool,
    streamed: bool = False,
    final: bool = True,
    announce: bool = False,
) -> Chunks:
    """Every AI call: admitted by governance (:func:`_admitted`), answered
    (:func:`_answered_admitted`), then settled to its real tokens and cost."""
    route = route_get(interaction.model)
    looked = FirstLook.of(interaction.prompt_hash, enabled=use_cache)
    routing = states_look(route)
    admission = _admitted(interaction, route, looked, routing)
    interaction.rate_limit_headers = admission.headers
    interaction.reserved_usd = admission.reserved
    try:
        yield from _answered_admitted(
            interaction,
            route=route,
            use_cache=use_cache,
            looked=looked,
            routing=routing,
            streamed=streamed,
            final=final,
            # A budgeted call's row holds its reservation while it runs.
            announce=announce or admission.reserved > 0,
        )
    finally:
        # Before the response, not after it: a client calling again at once, on another
        # connection, would otherwise find its parallel place still taken.
        with stage("limits"):
            admission.settle(
                tokens=(interaction.input_tokens or 0) + (interaction.output_tokens or 0),
                cost=Decimal(interaction.cost_usd or 0),
            )


def _answered_admitted(
    interaction: AIInteraction,
    *,
    route: RouteConfig,
    use_cache: bool,
    looked: FirstLook | None = None,
    routing: StatesLook | None = None,
    streamed: bool = False,
    final: bool = True,
    announce: bool = False,
) -> Chunks:
    """The one path of every AI call: the answer of ``interaction``, chunk by chunk.

    Looks the prompt up and takes its lock (single flight; the first look
    ``looked`` may have been sent with the admission), else asks the
    provider with retries; records the outcome on the row and saves it once the
    last chunk is out (before the caller hears the end), caches the answer and
    releases the lock, and counts it. ``announce`` saves the row as running before
    the provider is called. A provider failure is recorded (``failed``, or
    ``queued`` again when not ``final``: it will be retried) and raised as
    :class:`ProviderCallError`; a caller that stops listening (a client gone
    midway) leaves the row failed as ``client_disconnected`` and the lock released.
    """
    started = time.perf_counter()
    interaction.status = InteractionStatus.RUNNING
    interaction.started_at = interaction.started_at or timezone.now()
    attempts: list[dict[str, Any]] = []
    routed: Routed | None = None
    sent = AnswerAssembler()  # what the caller has been given so far
    try:
        with single_flight(interaction.prompt_hash, enabled=use_cache, looked=looked) as flight:
            answer = flight.answer
            if answer is None and not streamed:
                routed = _generated(interaction, route, announce=announce, routing=routing)
                _record_route(interaction, routed)
                attempts, answer = routed.attempts, answer_of(routed.result)
            elif streamed:
                if answer is None:
                    chunks, routed = _streamed(
                        interaction, route, announce=announce, routing=routing
                    )
                    _record_route(interaction, routed)
                    attempts = routed.attempts
                else:
                    chunks = replayed_chunks(answer)
                with closing(chunks):
                    for chunk in chunks:
                        sent.add(chunk)
                        yield chunk
                answer = answer or sent.answer()
            if flight.answer is None:
                flight.keep(answer, model=interaction.model)
            record_answer(
                interaction,
                priced=routed.deployment if routed else None,
                answer=answer,
                cached=flight.answer is not None,
                started=started,
                attempts=attempts,
            )
    except ProviderCallError as error:
        interaction.response = sent.text
        record_failure(interaction, error, started=started, final=final, attempts=attempts)
        _save(interaction, counted=final)
        raise
    except GeneratorExit:
        interaction.response = sent.text
        record_cut_short(
            interaction,
            started=started,
            message="The client closed the stream.",
            kind="client_disconnected",
        )
        _save(interaction)
        raise
    except Exception:
        interaction.response = sent.text
        record_cut_short(
            interaction, started=started, message="The call failed.", kind="internal_error"
        )
        _save(interaction)
        raise
    _save(interaction)


# Calls answered while their client waits: their row is saved as running aside.
_WEB_MODES = frozenset({InteractionMode.SYNC, InteractionMode.GATEWAY})
# The running row's write starts this long after the provider is called, once its
# request is out: started at once, the write's Python held the provider call back
# (paired: a stream's first byte 0.39 ms sooner on a 50 ms upstream, 0.74-0.87 ms on
# a 10 ms one; a whole call's within the noise, -0.31 to +0.09 ms).
_ANNOUNCE_AFTER_SECONDS = 0.001


def _announce(interaction: AIInteraction) -> None:
    """Save ``interaction`` as running, with the reservation it holds. For a call its client
    waits for, the write is done on a connection of its own while the provider is asked
    (:func:`contextos.db.written_aside`); :func:`_save` waits for it before writing the
    outcome over it. A queued task's row is updated at once, in the worker."""
    if interaction.mode not in _WEB_MODES:
        with stage("record"):
            _write(interaction)
        return
    running = copy.copy(interaction)  # as it is now; the caller goes on changing its own

    def write() -> AIInteraction:
        _write(running)
        return running

    with stage("record"):
        interaction.announced = written_aside(write, after=_ANNOUNCE_AFTER_SECONDS)


# What interaction_build sets and nothing changes after: an outcome written over the
# row saved as running leaves these columns as they are (a long prompt is sent once).
_BUILT_FIELDS = frozenset(
    {"owner", "api_key", "team", "mode", "kind", "model", "messages", "params", "prompt"}
    | {"prompt_hash", "metadata", "tags", "task", "created_at"}
)


def _write(
    interaction: AIInteraction,
    unchanged: frozenset[str] = frozenset(),
    *,
    wait_for_disk: bool = True,
) -> None:
    """Save the row, new or not, as ``interaction.save()`` would, in one statement
    (:func:`contextos.db.row_insert`: no receiver listens to interactions' saves).
    ``wait_for_disk=False``: an update over a row already on disk need not wait for
    its commit's flush (:func:`contextos.db.row_update`); an INSERT always does."""
    if interaction._state.adding or not row_update(
        interaction, unchanged=unchanged, wait_for_disk=wait_for_disk
    ):
        row_insert(interaction)


def _save(interaction: AIInteraction, *, counted: bool = True) -> None:
    if interaction.status != InteractionStatus.RUNNING:
        interaction.reserved_usd = Decimal(0)
    unchanged: frozenset[str] = frozenset()
    on_disk = False  # the row saved as running, which keeps the call and its reservation
    with stage("record"):
        if (announced := interaction.announced) is not None:
            interaction.announced = None
            try:
                interaction.created_at = announced.result().created_at
                interaction._state.adding = False  # the row is there: an UPDATE
                unchanged, on_disk = _BUILT_FIELDS, True
            except Exception as error:  # the outcome is written whole instead (an INSERT)
                logger.warning(
                    "Interaction %s was not saved as running (%s)", interaction.pk, error
                )
        # Over a row on disk, the outcome's commit need not wait for the flush
        # (docs/decisions.md, sixth pass): a crash of PostgreSQL may forget the outcome,
        # never the call.
        _write(interaction, unchanged, wait_for_disk=not on_disk)
    if counted:  # once the response is out: /metrics need not hold the client
        after_response(partial(metrics.interaction_finished, interaction))


def interaction_run(
    *, interaction: AIInteraction, use_cache: bool, final: bool = True, announce: bool = False
) -> None:
    """Answer ``interaction`` (from the cache, or the provider) and save the outcome.

    See :func:`_answered`: raises :class:`ProviderCallError` when the provider fails.
    """
    for _ in _answered(interaction, use_cache=use_cache, final=final, announce=announce):
        pass


def interaction_stream(
    *,
    owner: AbstractBaseUser,
    api_key: Any = None,
    messages: list[Message],
    model_name: str | None = None,
    params: dict[str, Any] | None = None,
    use_cache: bool = True,
    metadata: dict[str, Any] | None = None,
) -> tuple[AIInteraction, Chunks]:
    """Ask a model for a streamed (gateway) answer: the interaction, and its chunks.

    The call starts now: bad input, and a provider that fails before any output,
    raise here as a whole call's would (:func:`_provider_error`), recorded. The
    rest of the answer comes as the chunks are read, and the row is written when
    they end (see :func:`_answered`); a provider failing midway raises
    :class:`ProviderCallError` from the iterator, after it is recorded. Closing
    the chunks early records the call as cut short. Identical streams share one
    provider call: the others replay its cached answer.
    """
    check_prompt_size(prompt_chars(messages))
    interaction = interaction_build(
        owner=owner,
        api_key=api_key,
        route=route_get(model_name),
        messages=messages,
        params=params or {},
        mode=InteractionMode.GATEWAY,
        metadata=metadata or {},
        status=InteractionStatus.RUNNING,
    )
    interaction.started_at = timezone.now()
    chunks = _answered(interaction, use_cache=use_cache, streamed=True)
    try:
        first = next(chunks)
    except ProviderCallError as error:
        raise _provider_error(interaction, error) from error

    return interaction, _Begun(first, chunks)


class _Begun(Generator[StreamChunk, None, None]):
    """A stream's chunks once the first has come: that one, then the rest. Closing it,
    read or not, closes the call (recorded, its limits given back)."""

    def __init__(self, first: StreamChunk, rest: Chunks) -> None:
        self._first: StreamChunk | None = first
        self._rest = rest

    def send(self, value: None) -> StreamChunk:
        first, self._first = self._first, None
        return first if first is not None else self._rest.send(value)

    def throw(self, *args: Any) -> StreamChunk:
        return self._rest.throw(*args)

    def close(self) -> None:
        self._first = None
        self._rest.close()


# A provider's statuses for a request it finds invalid (e.g. a bad tool schema).
REFUSED_STATUSES = frozenset({400, 404, 413, 422})


def _provider_error(interaction: AIInteraction, error: ProviderCallError) -> AppError:
    """The error a caller gets when the provider failed. A gateway call the provider
    refused is the client's to fix: it gets the provider's status and message."""
    details = {
        "interaction_id": str(interaction.pk),
        "type": error.error_type,
        "provider_status": error.status,
    }
    if interaction.mode == InteractionMode.GATEWAY and error.status in REFUSED_STATUSES:
        return ProviderRejected(
            f"The provider refused the request: {error.message}",
            status_code=error.status,
            details={**details, "param": error.param},
        )
    return ProviderError(f"The provider failed: {error.message}", details=details)


def interaction_create(
    *,
    owner: AbstractBaseUser,
    api_key: Any = None,
    messages: list[Message],
    model_name: str | None = None,
    params: dict[str, Any] | None = None,
    mode: str = InteractionMode.SYNC,
    use_cache: bool = True,
    metadata: dict[str, Any] | None = None,
    task_id: UUID | None = None,
) -> AIInteraction:
    """Ask a model. Sync (and gateway) calls answer now; async ones queue an ``ai.generate`` task.

    A sync call whose provider fails raises :class:`ProviderError` (502) naming
    the recorded interaction. ``task_id`` is the task that asks (a batch's prompts).
    """
    check_prompt_size(prompt_chars(messages))
    fields = {
        "owner": owner,
        "api_key": api_key,
        "route": route_get(model_name),
        "messages": messages,
        "params": params or {},
        "mode": mode,
        "metadata": metadata or {},
    }
    if mode == InteractionMode.ASYNC:
        return _enqueue(interaction_build(status=InteractionStatus.QUEUED, **fields), use_cache)

    interaction = interaction_build(status=InteractionStatus.RUNNING, **fields)
    interaction.task_id = task_id
    interaction.started_at = timezone.now()
    # REST calls that reach the provider are visible as running while they wait;
    # gateway calls, like streams, are written once, when answered. A cache hit
    # is one INSERT either way.
    return _answer_now(interaction, use_cache=use_cache, announce=mode != InteractionMode.GATEWAY)


def embedding_create(
    *,
    owner: AbstractBaseUser,
    api_key: Any = None,
    model_name: str | None,
    params: dict[str, Any],
    use_cache: bool = True,
    metadata: dict[str, Any] | None = None,
) -> AIInteraction:
    """Embed ``params["input"]`` (a string, strings, or token arrays) with a model, now.

    The same path as every call (cache, single flight, retries, record, metrics); the
    interaction is ``kind: embedding``, its prompt the input, priced by input tokens.
    The vectors are in ``interaction.completion`` (OpenAI's shape), never stored.
    """
    check_prompt_size(sum(map(len, _input_texts(params["input"]))), field="input")
    route = route_get(model_name)
    if all(d.provider.kind == "anthropic" for d in route.deployments):
        raise ValidationFailed(
            f"Model {route.name!r} cannot make embeddings.",
            details={"model": ["anthropic models answer chat only."]},
        )
    interaction = interaction_build(
        owner=owner,
        api_key=api_key,
        route=route,
        messages=[],
        params=params,
        mode=InteractionMode.GATEWAY,
        metadata=metadata or {},
        status=InteractionStatus.RUNNING,
        kind=InteractionKind.EMBEDDING,
    )
    interaction.started_at = timezone.now()
    return _answer_now(interaction, use_cache=use_cache)


def _input_texts(value: Any) -> list[str]:
    """An embeddings input as texts: a string, strings, or token arrays (as their numbers)."""
    items = [value] if isinstance(value, str) or _is_tokens(value) else list(value)
    return [item if isinstance(item, str) else " ".join(map(str, item)) for item in items]


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def _enqueue(interaction: AIInteraction, use_cache: bool, *, insert: bool = True) -> AIInteraction:
    """Save ``interaction`` as queued with an ``ai.generate`` task, in one transaction."""
    interaction.status = InteractionStatus.QUEUED
    with transaction.atomic():
        task, _ = task_submit(
            owner=interaction.owner,
            type_name=GENERATE_TASK_TYPE,
            params={"interaction_id": str(interaction.pk), "cache": use_cache},
            internal=True,
        )
        interaction.task = task
        interaction.save(force_insert=insert)
    return interaction


def _answer_now(
    interaction: AIInteraction, *, use_cache: bool, announce: bool = False
) -> AIInteraction:
    try:
        interaction_run(interaction=interaction, use_cache=use_cache, announce=announce)
    except ProviderCallError as error:
        raise _provider_error(interaction, error) from error
    return interaction


def interaction_retry(
    *, interaction: AIInteraction, actor: AbstractBaseUser | None = None
) -> AIInteraction:
    """Ask again for a failed interaction, in its own mode (async ones get a new task).

    The retry is recorded in the audit log as done by ``actor`` (None: a command or the
    system), with the status it ended in: queued (async), or the sync answer's outcome,
    a provider error included.
    """
    if interaction.status != InteractionStatus.FAILED:
        raise Conflict(
            f"Only failed interactions can be retried; this one is {interaction.status}.",
            code="interaction_not_retryable",
            details={"status": interaction.status},
        )
    before = {"status": interaction.status, "error": interaction.error}

    def audit() -> None:
        audit_record(
            action="interaction.retry",
            target=interaction,
            actor=actor,
            before=before,
            after={"status": interaction.status, "error": interaction.error},
        )

    interaction.error = None
    interaction.completed_at = None
    if interaction.mode in (InteractionMode.ASYNC, InteractionMode.BATCH):
        with transaction.atomic():
            _enqueue(interaction, use_cache=True, insert=False)
            audit()
        return interaction
    try:
        return _answer_now(interaction, use_cache=True)
    finally:
        audit()


def interaction_delete(*, interaction: AIInteraction) -> None:
    """Delete the record and the cached answer it was made from."""
    cache.delete(response_cache_key(interaction.prompt_hash))
    interaction.delete()


def interaction_purge(
    *, before: datetime, dry_run: bool = False, batch_size: int = PURGE_BATCH_SIZE
) -> dict[str, int]:
    """Delete finished interactions created before ``before`` in batches, and their cached answers.

    A cached answer goes only when no interaction that stays was made from
    the same prompt. Queued and running interactions are never removed.
    ``dry_run`` counts what would go.
    """
    purged = Q(created_at__lt=before, status__in=FINISHED_STATUSES)
    interactions = AIInteraction.objects.filter(purged)
    forgotten: set[str] = set()
    if dry_run:
        hashes = interactions.values_list("prompt_hash", flat=True).iterator(chunk_size=batch_size)
        while batch := list(islice(hashes, batch_size)):
            _forget_answers(set(batch), purged=purged, forgotten=forgotten, dry_run=True)
        return {"interactions": interactions.count(), "cached answers": len(forgotten)}
    removed = 0
    for rows, deleted in delete_in_batches(
        interactions, order_by=("created_at",), batch_size=batch_size, fields=["prompt_hash"]
    ):
        removed += deleted[AIInteraction._meta.label]
        _forget_answers({digest for _, digest in rows}, purged=purged, forgotten=forgotten)
    return {"interactions": removed, "cached answers": len(forgotten)}


def _forget_answers(
    hashes: set[str], *, purged: Q, forgotten: set[str], dry_run: bool = False
) -> None:
    """Delete the cached answers of ``hashes`` that no remaining interaction was made from.

    ``forgotten`` collects the keys found (and, unless ``dry_run``, deleted).
    """
    kept = set(
        AIInteraction.objects.filter(prompt_hash__in=hashes)
        .exclude(purged)
        .values_list("prompt_hash", flat=True)
    )
    keys = [response_cache_key(digest) for digest in hashes - kept]
    found = set(cache.get_many(keys)) - forgotten  # a Redis outage finds none
    if found and not dry_run:
        cache.delete_many(found)
    forgotten |= found
