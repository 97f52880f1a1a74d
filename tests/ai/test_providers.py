"""The real provider classes against fake HTTP servers, the echo provider, and the retry policy."""

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from apps.ai_interactions.providers.anthropic_messages import AnthropicProvider
from apps.ai_interactions.providers.base import ProviderCallError, StreamChunk
from apps.ai_interactions.providers.echo import EchoProvider
from apps.ai_interactions.providers.openai_compatible import OpenAICompatibleProvider
from apps.ai_interactions.providers.retry import call_with_retries, retry_after_seconds
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, Reply

OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
# "fake: What is the capital of France?" is 7 words; the prompt is 2 + 6 words.
ANSWER = "fake: What is the capital of France?"


@pytest.fixture
def openai_provider(fake_openai: FakeOpenAI) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        name="openai", base_url=fake_openai.base_url, api_key=OPENAI_KEY
    )


@pytest.fixture
def anthropic_provider(fake_anthropic: FakeAnthropic) -> AnthropicProvider:
    return AnthropicProvider(
        name="anthropic", base_url=fake_anthropic.base_url, api_key=ANTHROPIC_KEY
    )


class SleepRecorder:
    """Stands in for ``time.sleep`` in the retry loop: records the waits, does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def retried(provider, *, max_attempts: int = 3, sleep=None, timeout: float = 5.0, **params):
    return call_with_retries(
        lambda: provider.generate(messages=MESSAGES, model="m-1", params=params, timeout=timeout),
        max_attempts=max_attempts,
        base_delay=0.01,
        max_delay=0.05,
        sleep=sleep or SleepRecorder(),
    )


def streamed(provider, *, timeout: float = 5.0, **params) -> list[StreamChunk]:
    return list(provider.stream(messages=MESSAGES, model="m-1", params=params, timeout=timeout))


def assert_stream_well_formed(chunks: list[StreamChunk], text: str) -> None:
    *pieces, last = chunks
    assert len(pieces) > 1, "the answer arrives in several pieces"
    assert "".join(c.delta for c in pieces) == text
    assert all(c.finish_reason is None for c in pieces)
    assert last.delta == ""
    assert last.finish_reason is not None
    assert last.input_tokens is not None
    assert last.output_tokens is not None


# OpenAI-compatible


def test_openai_answer_maps_text_tokens_and_finish_reason(fake_openai, openai_provider):
    generation = openai_provider.generate(
        messages=MESSAGES, model="m-1", params={"temperature": 0.2, "top_p": 0.9}, timeout=5
    )

    assert generation.text == ANSWER
    assert generation.finish_reason == "stop"
    assert (generation.input_tokens, generation.output_tokens) == (8, 7)
    (request,) = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request["body"] == {
        "model": "m-1",
        "messages": MESSAGES,
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_openai_max_tokens_cut_is_reported_as_length(openai_provider):
    generation = openai_provider.generate(
        messages=MESSAGES, model="m-1", params={"max_tokens": 3}, timeout=5
    )

    assert generation.text == "fake: What is"
    assert generation.finish_reason == "length"
    assert generation.output_tokens == 3


def test_openai_server_specific_params_reach_the_server(fake_openai, openai_provider):
    params = {"seed": 7, "stop": ["\n"], "repetition_penalty": 1.1}

    openai_provider.generate(messages=MESSAGES, model="m-1", params=params, timeout=5)

    body = fake_openai.requests[0]["body"]
    assert {k: body[k] for k in params} == params


@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="<html>gateway</html>", headers={"Content-Type": "application/json"}),
        Reply(body={"choices": []}),
        Reply(body={"choices": [{"finish_reason": "stop"}]}),
        Reply(body=["not", "a", "completion"]),
    ],
    ids=["not-json", "no-choice", "no-message", "not-an-object"],
)
def test_openai_malformed_answer_is_an_invalid_response(fake_openai, openai_provider, reply):
    fake_openai.script(reply)

    with pytest.raises(ProviderCallError) as raised:
        openai_provider.generate(messages=MESSAGES, model="m-1", params={}, timeout=5)

    assert raised.value.error_type == "invalid_response"
    assert raised.value.status == 200


def test_openai_rate_limit_with_retry_after_then_success(fake_openai, openai_provider):
    fake_openai.script(Reply(status=429, headers={"Retry-After": "0"}))
    sleep = SleepRecorder()

    generation, attempts = retried(openai_provider, sleep=sleep)

    assert generation.text == ANSWER
    assert [a.outcome for a in attempts] == ["rate_limited", "ok"]
    assert attempts[0].status == 429
    assert attempts[0].retry_after_s == 0
    assert sleep.waits == [0]
    assert fake_openai.count == 2


def test_openai_server_error_every_time_gives_up_after_max_attempts(fake_openai, openai_provider):
    fake_openai.script(*[Reply(status=500)] * 5)

    with pytest.raises(ProviderCallError) as raised:
        retried(openai_provider, max_attempts=3)

    error = raised.value
    assert error.error_type == "server_error"
    assert error.status == 500
    assert error.retryable
    assert [a.outcome for a in error.attempts] == ["server_error"] * 3
    assert [a.number for a in error.attempts] == [1, 2, 3]
    assert fake_openai.count == 3


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "bad_request"),
        (401, "authentication_error"),
        (403, "authentication_error"),
        (404, "not_found"),
        (422, "client_error"),
    ],
)
def test_openai_client_errors_are_not_retried(fake_openai, openai_provider, status, error_type):
    fake_openai.script(Reply(status=status))

    with pytest.raises(ProviderCallError) as raised:
        retried(openai_provider)

    assert raised.value.error_type == error_type
    assert raised.value.status == status
    assert not raised.value.retryable
    assert len(raised.value.attempts) == 1
    assert fake_openai.count == 1


def test_openai_error_message_never_shows_the_api_key(fake_openai, openai_provider):
    body = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}.", "type": "x"}}
    fake_openai.script(Reply(status=401, body=body))

    with pytest.raises(ProviderCallError) as raised:
        openai_provider.generate(messages=MESSAGES, model="m-1", params={}, timeout=5)

    assert OPENAI_KEY not in str(raised.value)
    assert "Incorrect API key provided" in str(raised.value)


def test_openai_hang_longer_than_timeout_is_a_retryable_timeout(fake_openai, openai_provider):
    fake_openai.script(Reply(delay=3))
    started = time.monotonic()

    with pytest.raises(ProviderCallError) as raised:
        openai_provider.generate(messages=MESSAGES, model="m-1", params={}, timeout=0.5)

    assert time.monotonic() - started < 2.5
    assert raised.value.error_type == "timeout"
    assert raised.value.retryable


def test_openai_unreachable_server_is_a_retryable_connection_error():
    with FakeOpenAI() as fake:
        base_url = fake.base_url
    provider = OpenAICompatibleProvider(name="openai", base_url=base_url, api_key=OPENAI_KEY)

    with pytest.raises(ProviderCallError) as raised:
        provider.generate(messages=MESSAGES, model="m-1", params={}, timeout=2)

    assert raised.value.error_type == "connection_error"
    assert raised.value.retryable


def test_openai_stream_yields_pieces_then_usage(fake_openai, openai_provider):
    chunks = streamed(openai_provider, temperature=0)

    assert_stream_well_formed(chunks, ANSWER)
    assert (chunks[-1].finish_reason, chunks[-1].input_tokens, chunks[-1].output_tokens) == (
        "stop",
        8,
        7,
    )
    body = fake_openai.requests[0]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_openai_streams_one_after_another_reuse_one_connection(fake_openai, openai_provider):
    for _ in range(3):
        assert_stream_well_formed(streamed(openai_provider), ANSWER)
    # A stream left unread midway closes its connection: the next call opens another.
    openai_provider.stream(messages=MESSAGES, model="m-1", params={}, timeout=5).__next__()
    assert_stream_well_formed(streamed(openai_provider), ANSWER)

    peers = [request["peer"] for request in fake_openai.requests]
    assert len(peers) == 5
    assert len(set(peers[:4])) == 1, "each stream read to its end gives its connection back"
    assert peers[4] != peers[3]


def test_openai_stream_whose_body_goes_on_after_done_ends_at_done(fake_openai, openai_provider):
    piece = {"choices": [{"index": 0, "delta": {"content": "one"}}]}
    # The server holds its body open for 1.5 s after [DONE], then sends more.
    fake_openai.script(Reply(events=[piece, "data: [DONE]\n\n", piece], chunk_delay=1.5))

    started = time.monotonic()
    chunks = streamed(openai_provider, timeout=30)
    waited = time.monotonic() - started

    assert [c.delta for c in chunks] == ["one", ""]
    assert waited < 2.5, "not held until the server's next write, nor its read timeout"
    assert_stream_well_formed(streamed(openai_provider), ANSWER)
    first, second = (request["peer"] for request in fake_openai.requests)
    assert first != second, "the connection left mid-body is not reused"


def test_openai_stream_cut_by_max_tokens_ends_with_length(openai_provider):
    chunks = streamed(openai_provider, max_tokens=2)

    assert "".join(c.delta for c in chunks) == "fake: What"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].output_tokens == 2


def test_openai_stream_rate_limited_before_any_piece(fake_openai, openai_provider):
    fake_openai.script(Reply(status=429, headers={"Retry-After": "2"}))

    with pytest.raises(ProviderCallError) as raised:
        streamed(openai_provider)

    assert raised.value.error_type == "rate_limited"
    assert raised.value.retry_after == 2


def test_openai_stream_reads_events_as_servers_write_them_until_an_error_event(
    fake_openai, openai_provider
):
    def delta(text: str) -> str:
        return json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})

    events = [
        ": keep-alive comment\n\n",
        f"data: {delta('one ')}\r\n\r\n",  # CRLF line ends
        # One event's data on two lines (joined with a newline: still one JSON object).
        'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "two"}}]}\n\n',
        'event: error\ndata: {"error": {"message": "the model is overloaded"}}\n\n',
        f"data: {delta(' never')}\n\n",
    ]
    fake_openai.script(Reply(events=events))
    received: list[StreamChunk] = []

    stream = openai_provider.stream(messages=MESSAGES, model="m-1", params={}, timeout=5)
    with pytest.raises(ProviderCallError) as raised:
        received.extend(stream)

    assert [c.delta for c in received] == ["one ", "two"]
    assert raised.value.error_type == "server_error"
    assert raised.value.retryable
    assert "failed mid-answer: the model is overloaded" in raised.value.message


def test_openai_stream_that_stops_sending_midway_is_a_timeout(fake_openai, openai_provider):
    fake_openai.script(Reply(chunk_delay=2.0))
    received: list[StreamChunk] = []

    with pytest.raises(ProviderCallError) as raised:
        received.extend(
            openai_provider.stream(messages=MESSAGES, model="m-1", params={}, timeout=0.5)
        )

    assert len(received) == 1  # the first piece came, then nothing for longer than timeout
    assert raised.value.error_type == "timeout"


# Anthropic


def test_anthropic_answer_maps_text_tokens_and_finish_reason(fake_anthropic, anthropic_provider):
    generation = anthropic_provider.generate(
        messages=MESSAGES, model="claude-x", params={"temperature": 0.3, "stop": "END"}, timeout=5
    )

    assert generation.text == ANSWER
    assert generation.finish_reason == "stop"
    assert (generation.input_tokens, generation.output_tokens) == (8, 7)
    (request,) = fake_anthropic.requests
    assert request["path"] == "/v1/messages"
    assert ANTHROPIC_KEY in (
        request["headers"].get("x-api-key", "") + request["headers"].get("authorization", "")
    )
    body = request["body"]
    assert body["system"] == "Answer briefly."
    assert body["messages"] == [MESSAGES[1]]
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 0.3
    assert body["stop_sequences"] == ["END"]


def test_anthropic_joins_system_messages_and_drops_openai_only_params(
    fake_anthropic, anthropic_provider
):
    messages = [{"role": "system", "content": "One."}, {"role": "system", "content": "Two."}]
    messages.append({"role": "user", "content": "Hi"})

    anthropic_provider.generate(
        messages=messages, model="claude-x", params={"presence_penalty": 1, "seed": 3}, timeout=5
    )

    body = fake_anthropic.requests[0]["body"]
    assert body["system"] == "One.\n\nTwo."
    assert "presence_penalty" not in body
    assert "seed" not in body


def test_anthropic_max_tokens_cut_is_reported_as_length(fake_anthropic, anthropic_provider):
    generation = anthropic_provider.generate(
        messages=MESSAGES, model="claude-x", params={"max_tokens": 3}, timeout=5
    )

    assert generation.text == "fake: What is"
    assert generation.finish_reason == "length"
    assert fake_anthropic.requests[0]["body"]["max_tokens"] == 3


def test_anthropic_rate_limit_then_success(fake_anthropic, anthropic_provider):
    fake_anthropic.script(Reply(status=429, headers={"retry-after": "0"}))

    generation, attempts = retried(anthropic_provider)

    assert generation.text == ANSWER
    assert [a.outcome for a in attempts] == ["rate_limited", "ok"]
    assert fake_anthropic.count == 2


@pytest.mark.parametrize("status", [500, 529])
def test_anthropic_server_errors_and_overload_are_retryable(
    fake_anthropic, anthropic_provider, status
):
    fake_anthropic.script(*[Reply(status=status)] * 3)

    with pytest.raises(ProviderCallError) as raised:
        retried(anthropic_provider, max_attempts=3)

    assert raised.value.error_type == "server_error"
    assert raised.value.status == status
    assert raised.value.retryable
    assert len(raised.value.attempts) == 3
    assert fake_anthropic.count == 3


def test_anthropic_bad_request_is_not_retried(fake_anthropic, anthropic_provider):
    fake_anthropic.script(Reply(status=400))

    with pytest.raises(ProviderCallError) as raised:
        retried(anthropic_provider)

    assert raised.value.error_type == "bad_request"
    assert not raised.value.retryable
    assert fake_anthropic.count == 1


def test_anthropic_without_a_key_fails_without_calling_out(fake_anthropic):
    provider = AnthropicProvider(name="anthropic", base_url=fake_anthropic.base_url, api_key="")

    with pytest.raises(ProviderCallError) as raised:
        provider.generate(messages=MESSAGES, model="claude-x", params={}, timeout=5)

    assert raised.value.error_type == "authentication_error"
    assert not raised.value.retryable
    assert fake_anthropic.count == 0


def test_anthropic_hang_longer_than_timeout_is_a_retryable_timeout(
    fake_anthropic, anthropic_provider
):
    fake_anthropic.script(Reply(delay=3))

    with pytest.raises(ProviderCallError) as raised:
        anthropic_provider.generate(messages=MESSAGES, model="claude-x", params={}, timeout=0.5)

    assert raised.value.error_type == "timeout"
    assert raised.value.retryable


def test_anthropic_stream_yields_pieces_then_usage(fake_anthropic, anthropic_provider):
    chunks = streamed(anthropic_provider)

    assert_stream_well_formed(chunks, ANSWER)
    assert (chunks[-1].finish_reason, chunks[-1].input_tokens, chunks[-1].output_tokens) == (
        "stop",
        8,
        7,
    )
    assert fake_anthropic.requests[0]["body"]["stream"] is True


def test_anthropic_stream_that_stalls_midway_is_a_timeout(fake_anthropic, anthropic_provider):
    fake_anthropic.script(Reply(chunk_delay=3))

    with pytest.raises(ProviderCallError) as raised:
        streamed(anthropic_provider, timeout=0.5)

    assert raised.value.error_type == "timeout"
    assert raised.value.retryable


def test_anthropic_overloaded_event_midstream_is_a_retryable_server_error(
    fake_anthropic, anthropic_provider
):
    events = (
        'event: message_start\ndata: {"type": "message_start", "message": {"id": "m", '
        '"type": "message", "role": "assistant", "model": "x", "content": [], '
        '"stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 1}}}\n\n'
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        '"message": "Overloaded"}}\n\n'
    )
    fake_anthropic.script(Reply(text=events, headers={"Content-Type": "text/event-stream"}))

    with pytest.raises(ProviderCallError) as raised:
        streamed(anthropic_provider)

    assert raised.value.error_type == "server_error"
    assert raised.value.retryable
    assert "Overloaded" in str(raised.value)


# Echo


def test_echo_answers_the_last_user_message_deterministically():
    messages = [*MESSAGES, {"role": "assistant", "content": "Paris."}]
    provider = EchoProvider()

    first = provider.generate(messages=messages, model="echo-1", params={}, timeout=5)
    second = provider.generate(messages=messages, model="echo-1", params={}, timeout=5)

    assert first == second
    assert first.text == "Echo: What is the capital of France?"
    assert first.finish_reason == "stop"
    # ceil(len / 4): the prompt "Answer briefly.\nWhat is ...?\nParis." is 53 characters.
    assert first.input_tokens == 14
    assert first.output_tokens == 9


def test_echo_without_a_user_message_echoes_the_last_message():
    generation = EchoProvider().generate(
        messages=[{"role": "system", "content": "Be terse."}], model="echo-1", params={}, timeout=5
    )

    assert generation.text == "Echo: Be terse."


def test_echo_max_tokens_truncates_with_length():
    generation = EchoProvider().generate(
        messages=MESSAGES, model="echo-1", params={"max_tokens": 3}, timeout=5
    )

    assert generation.text == "Echo: What i"
    assert generation.finish_reason == "length"
    assert generation.output_tokens == 3


def test_echo_stop_sequence_ends_the_answer():
    generation = EchoProvider().generate(
        messages=MESSAGES, model="echo-1", params={"stop": [" of"]}, timeout=5
    )

    assert generation.text == "Echo: What is the capital"
    assert generation.finish_reason == "stop"


def test_echo_takes_the_configured_time():
    started = time.monotonic()

    EchoProvider(delay_seconds=0.2).generate(
        messages=MESSAGES, model="echo-1", params={}, timeout=5
    )

    assert time.monotonic() - started >= 0.2


def test_echo_slower_than_the_timeout_times_out():
    with pytest.raises(ProviderCallError) as raised:
        EchoProvider(delay_seconds=5).generate(
            messages=MESSAGES, model="echo-1", params={}, timeout=0.1
        )

    assert raised.value.error_type == "timeout"
    assert raised.value.retryable


def test_echo_stream_matches_generate():
    provider = EchoProvider()
    generation = provider.generate(messages=MESSAGES, model="echo-1", params={}, timeout=5)

    chunks = streamed(provider)

    assert_stream_well_formed(chunks, generation.text)
    assert chunks[-1] == StreamChunk(
        finish_reason="stop",
        input_tokens=generation.input_tokens,
        output_tokens=generation.output_tokens,
    )


def test_echo_stream_spreads_its_delay_over_the_pieces():
    started = time.monotonic()

    chunks = list(
        EchoProvider(delay_seconds=0.2).stream(
            messages=MESSAGES, model="echo-1", params={}, timeout=5
        )
    )

    assert time.monotonic() - started >= 0.2
    assert chunks[-1].finish_reason == "stop"


# Retry policy


def failing(*errors: ProviderCallError):
    """A call that raises the given errors in turn, then answers "done"."""
    remaining = list(errors)

    def call() -> str:
        if remaining:
            raise remaining.pop(0)
        return "done"

    return call


def test_backoff_waits_grow_with_full_jitter_and_are_capped():
    errors = [ProviderCallError("down", error_type="server_error", retryable=True)] * 5
    sleep = SleepRecorder()

    result, attempts = call_with_retries(
        failing(*errors), max_attempts=6, base_delay=0.1, max_delay=0.3, sleep=sleep
    )

    assert result == "done"
    assert len(attempts) == 6
    assert [a.outcome for a in attempts] == ["server_error"] * 5 + ["ok"]
    ceilings = [0.1, 0.2, 0.3, 0.3, 0.3]
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleep.waits, ceilings, strict=True))


def test_retry_after_is_honored_but_capped_at_max_delay():
    errors = [
        ProviderCallError("slow down", error_type="rate_limited", retryable=True, retry_after=0.2),
        ProviderCallError("slow down", error_type="rate_limited", retryable=True, retry_after=60),
    ]
    sleep = SleepRecorder()

    call_with_retries(failing(*errors), max_attempts=3, base_delay=0.01, max_delay=5, sleep=sleep)

    assert sleep.waits == [0.2, 5]


def test_non_retryable_error_is_raised_at_once_with_its_attempt():
    sleep = SleepRecorder()
    error = ProviderCallError("no", error_type="bad_request", status=400)

    with pytest.raises(ProviderCallError) as raised:
        call_with_retries(failing(error), max_attempts=3, base_delay=0.01, max_delay=1, sleep=sleep)

    assert raised.value.attempts[0].as_dict() == {
        "number": 1,
        "outcome": "bad_request",
        "status": 400,
        "latency_ms": raised.value.attempts[0].latency_ms,
        "retry_after_s": None,
    }
    assert len(raised.value.attempts) == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers, seconds):
    assert retry_after_seconds(headers) == seconds


def test_retry_after_header_as_a_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert 25 <= retry_after_seconds({"Retry-After": when}) <= 30
