"""Writes of the AI domain: ask a model (through the cache), record it, retry, delete, purge.

Every call is an ``AIInteraction`` row. Answers are cached in Redis under
``ai:response:<sha256 of provider, model, messages, params>``; identical
requests that arrive together make one provider call (a Redis lock), and
with Redis down calls still work, uncached.
"""

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.ai_interactions import metrics
from apps.ai_interactions.answer_cache import response_cache_key, single_flight
from apps.ai_interactions.catalog import cost_usd, model_get, provider_for
from apps.ai_interactions.models import (
    FINISHED_STATUSES,
    AIInteraction,
    InteractionMode,
    InteractionStatus,
)
from apps.ai_interactions.providers.base import (
    Message,
    ModelInfo,
    ProviderCallError,
    StreamChunk,
)
from apps.ai_interactions.providers.retry import call_with_retries
from apps.tasks.services import task_submit
from contextos.digest import canonical_digest
from contextos.exceptions import Conflict, PayloadTooLarge, ProviderError
from contextos.retention import PURGE_BATCH_SIZE, delete_in_batches

GENERATE_TASK_TYPE = "ai.generate"

T = TypeVar("T")
# An answer as it comes: closing it midway records the call as cut short.
Chunks = Generator[StreamChunk, None, None]


def prompt_chars(messages: list[Message]) -> int:
    return sum(len(message["content"]) for message in messages)


def prompt_hash(*, provider: str, model: str, messages: list[Message], params: dict) -> str:
    return canonical_digest(
        {"provider": provider, "model": model, "messages": messages, "params": params}
    )


def check_prompt_size(messages: list[Message]) -> None:
    size = prompt_chars(messages)
    if size > settings.AI_MAX_PROMPT_CHARS:
        raise PayloadTooLarge(
            f"The prompt is {size} characters; the limit is {settings.AI_MAX_PROMPT_CHARS}.",
            code="prompt_too_large",
            details={"messages": [f"At most {settings.AI_MAX_PROMPT_CHARS} characters in all."]},
        )


def interaction_build(
    *,
    owner: AbstractBaseUser,
    api_key: Any,
    model: ModelInfo,
    messages: list[Message],
    params: dict[str, Any],
    mode: str,
    metadata: dict[str, Any],
    status: str,
) -> AIInteraction:
    return AIInteraction(
        owner=owner,
        api_key=api_key,
        mode=mode,
        status=status,
        provider=model.provider,
        model=model.model,
        messages=messages,
        params=params,
        prompt="\n\n".join(message["content"] for message in messages),
        prompt_hash=prompt_hash(
            provider=model.provider, model=model.model, messages=messages, params=params
        ),
        metadata=metadata,
    )


# --- Recording -----------------------------------------------------------------------


def record_answer(
    interaction: AIInteraction,
    *,
    model: ModelInfo,
    answer: dict[str, Any],
    cached: bool,
    started: float,
    attempts: list[dict[str, Any]],
) -> None:
    interaction.status = InteractionStatus.SUCCEEDED
    interaction.response = answer["text"]
    interaction.finish_reason = answer["finish_reason"]
    interaction.input_tokens = answer["input_tokens"]
    interaction.output_tokens = answer["output_tokens"]
    interaction.cached = cached
    interaction.cost_usd = (
        0
        if cached
        else cost_usd(
            model, input_tokens=answer["input_tokens"], output_tokens=answer["output_tokens"]
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
        *(attempt.as_dict() for attempt in error.attempts),
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


def call_provider(call: Callable[[], T]) -> tuple[T, list[dict[str, Any]]]:
    """``call`` with the configured retries; also the attempts, as recorded."""
    result, attempts = call_with_retries(
        call,
        max_attempts=settings.AI_PROVIDER_MAX_ATTEMPTS,
        base_delay=settings.AI_RETRY_BASE_DELAY,
        max_delay=settings.AI_RETRY_MAX_DELAY,
    )
    return result, [attempt.as_dict() for attempt in attempts]


def _generated(interaction: AIInteraction, model: ModelInfo) -> tuple[Chunks, list]:
    """The provider's whole answer as one chunk, asked with retries."""
    provider = provider_for(model)
    generation, attempts = call_provider(
        lambda: provider.generate(
            messages=interaction.messages,
            model=model.model,
            params=interaction.params,
            timeout=settings.AI_PROVIDER_TIMEOUT,
        )
    )

    def whole() -> Chunks:
        yield StreamChunk(
            delta=generation.text,
            finish_reason=generation.finish_reason,
            input_tokens=generation.input_tokens,
            output_tokens=generation.output_tokens,
        )

    return whole(), attempts


def _streamed(interaction: AIInteraction, model: ModelInfo) -> tuple[Chunks, list]:
    """The provider's answer as it comes, retried (as a whole call is) until its first chunk."""
    provider = provider_for(model)

    def first() -> tuple[StreamChunk, Iterator[StreamChunk]]:
        chunks = iter(
            provider.stream(
                messages=interaction.messages,
                model=model.model,
                params=interaction.params,
                timeout=settings.AI_PROVIDER_TIMEOUT,
            )
        )
        return next(chunks, StreamChunk(finish_reason="stop")), chunks

    (head, rest), attempts = call_provider(first)

    def chained() -> Chunks:
        yield head
        yield from rest

    return chained(), attempts


def _replayed(answer: dict[str, Any], *, streamed: bool) -> Chunks:
    """A cached answer as the provider would give it: word by word to a stream."""
    ending = StreamChunk(
        finish_reason=answer["finish_reason"],
        input_tokens=answer["input_tokens"],
        output_tokens=answer["output_tokens"],
    )
    if not streamed:
        yield replace(ending, delta=answer["text"])
        return
    for index, word in enumerate(answer["text"].split(" ")):
        yield StreamChunk(delta=word if index == 0 else f" {word}")
    yield ending


def _answered(
    interaction: AIInteraction,
    *,
    use_cache: bool,
    streamed: bool = False,
    final: bool = True,
    announce: bool = False,
) -> Chunks:
    """The one path of every AI call: the answer of ``interaction``, chunk by chunk.

    Looks the prompt up and takes its lock (single flight), else asks the
    provider with retries; records the outcome on the row and saves it once the
    last chunk is out (before the caller hears the end), caches the answer and
    releases the lock, and counts it. ``announce`` saves the row as running before
    the provider is called. A provider failure is recorded (``failed``, or
    ``queued`` again when not ``final``: it will be retried) and raised as
    :class:`ProviderCallError`; a caller that stops listening (a client gone
    midway) leaves the row failed as ``client_disconnected`` and the lock released.
    """
    model = model_get(interaction.model)
    started = time.perf_counter()
    interaction.status = InteractionStatus.RUNNING
    interaction.started_at = interaction.started_at or timezone.now()
    pieces: list[str] = []
    attempts: list[dict[str, Any]] = []
    try:
        with single_flight(interaction.prompt_hash, enabled=use_cache) as flight:
            if flight.answer is not None:
                chunks = _replayed(flight.answer, streamed=streamed)
            else:
                if announce:
                    interaction.save()
                ask = _streamed if streamed else _generated
                chunks, attempts = ask(interaction, model)
            with closing(chunks):
                last = StreamChunk()
                for chunk in chunks:
                    pieces.append(chunk.delta)
                    if chunk.finish_reason is not None:
                        last = chunk
                    yield chunk
            answer = {
                "text": "".join(pieces),
                "finish_reason": last.finish_reason or "stop",
                "input_tokens": last.input_tokens or 0,
                "output_tokens": last.output_tokens or 0,
            }
            if flight.answer is None:
                flight.keep(answer, model=interaction.model)
            record_answer(
                interaction,
                model=model,
                answer=answer,
                cached=flight.answer is not None,
                started=started,
                attempts=attempts,
            )
    except ProviderCallError as error:
        interaction.response = "".join(pieces)
        record_failure(interaction, error, started=started, final=final, attempts=attempts)
        _save(interaction, counted=final)
        raise
    except GeneratorExit:
        interaction.response = "".join(pieces)
        record_cut_short(
            interaction,
            started=started,
            message="The client closed the stream.",
            kind="client_disconnected",
        )
        _save(interaction)
        raise
    except Exception:
        interaction.response = "".join(pieces)
        record_cut_short(
            interaction, started=started, message="The call failed.", kind="internal_error"
        )
        _save(interaction)
        raise
    _save(interaction)


def _save(interaction: AIInteraction, *, counted: bool = True) -> None:
    interaction.save()
    if counted:
        metrics.interaction_finished(interaction)


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

    The call is checked now (bad input raises before anything is sent); the
    provider is asked, and the row written, as the chunks are read (see
    :func:`_answered`): a provider failure raises :class:`ProviderCallError`
    from the iterator, after it is recorded. Identical streams share one
    provider call: the others replay its cached answer.
    """
    check_prompt_size(messages)
    interaction = interaction_build(
        owner=owner,
        api_key=api_key,
        model=model_get(model_name),
        messages=messages,
        params=params or {},
        mode=InteractionMode.GATEWAY,
        metadata=metadata or {},
        status=InteractionStatus.RUNNING,
    )
    interaction.started_at = timezone.now()
    return interaction, _answered(interaction, use_cache=use_cache, streamed=True)


def _provider_error(interaction: AIInteraction, error: ProviderCallError) -> ProviderError:
    return ProviderError(
        f"The provider failed: {error.message}",
        details={
            "interaction_id": str(interaction.pk),
            "type": error.error_type,
            "provider_status": error.status,
        },
    )


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
) -> AIInteraction:
    """Ask a model. Sync (and gateway) calls answer now; async ones queue an ``ai.generate`` task.

    A sync call whose provider fails raises :class:`ProviderError` (502) naming
    the recorded interaction.
    """
    check_prompt_size(messages)
    model = model_get(model_name)
    fields = {
        "owner": owner,
        "api_key": api_key,
        "model": model,
        "messages": messages,
        "params": params or {},
        "mode": mode,
        "metadata": metadata or {},
    }
    if mode == InteractionMode.ASYNC:
        return _enqueue(interaction_build(status=InteractionStatus.QUEUED, **fields), use_cache)

    interaction = interaction_build(status=InteractionStatus.RUNNING, **fields)
    interaction.started_at = timezone.now()
    # REST calls that reach the provider are visible as running while they wait;
    # gateway calls, like streams, are written once, when answered. A cache hit
    # is one INSERT either way.
    return _answer_now(interaction, use_cache=use_cache, announce=mode != InteractionMode.GATEWAY)


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


def interaction_retry(*, interaction: AIInteraction) -> AIInteraction:
    """Ask again for a failed interaction, in its own mode (async ones get a new task)."""
    if interaction.status != InteractionStatus.FAILED:
        raise Conflict(
            f"Only failed interactions can be retried; this one is {interaction.status}.",
            code="interaction_not_retryable",
            details={"status": interaction.status},
        )
    interaction.error = None
    interaction.completed_at = None
    if interaction.mode in (InteractionMode.ASYNC, InteractionMode.BATCH):
        return _enqueue(interaction, use_cache=True, insert=False)
    return _answer_now(interaction, use_cache=True)


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
