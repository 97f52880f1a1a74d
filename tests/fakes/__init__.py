"""Scriptable fake AI provider servers: real HTTP on 127.0.0.1, driven by the real SDK clients."""

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

# A client that gave up (a timeout in the test) closes its socket under a sleeping handler.
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass
class Reply:
    """One scripted answer. ``body`` (JSON), ``text`` (raw) or ``events`` (a stream)
    replace the default answer.

    A 200 with none of them gets the fake's default success (streamed if the request
    asked); an error status with none gets the provider's error JSON. ``events`` are
    sent as a 200 ``text/event-stream``, exactly as given: a string as it is (a whole
    event, ending in a blank line), anything else as ``data: <its JSON>``.
    ``delay`` holds the answer back (a long one is a hang); ``chunk_delay`` pauses
    between streamed events. ``fail_after`` cuts a streamed default answer after that
    many words with the provider's error event (a provider failing mid-answer, after
    its 200).
    """

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    chunk_delay: float = 0.0
    fail_after: int | None = None
    events: list[Any] | None = None


def sse_event(event: Any) -> str:
    """A scripted event as sent: a string as it is, anything else as ``data: <JSON>``."""
    return event if isinstance(event, str) else f"data: {json.dumps(event)}\n\n"


def word_count(text: str) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text"}`` blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def answer_words(text: str, max_tokens: Any) -> tuple[list[str], bool]:
    """The default answer's words, cut to ``max_tokens`` words; and whether it was cut."""
    words = text.split()
    if isinstance(max_tokens, int) and len(words) > max_tokens:
        return words[: max(0, max_tokens)], True
    return words, False


class FakeServer:
    """A threaded HTTP server with a queue of scripted replies for its main endpoint.

    Subclasses set ``routes`` (``{(method, path): handler method name}``), ``main_path``
    (the endpoint scripts apply to), and answer with the ``send_*`` helpers of the
    request handler they are given.
    """

    routes: dict[tuple[str, str], str] = {}
    main_path = ""

    def __init__(self) -> None:
        self.default_delay = 0.0
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._outage_until = 0.0
        self._outage_status = 503
        self._requests: list[dict[str, Any]] = []
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> Self:
        server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping on a scripted delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Scripting and inspection

    @property
    def origin(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next calls to the main endpoint, in order."""
        with self._lock:
            self._script.extend(replies)

    def outage(self, seconds: float, *, status: int = 503) -> None:
        """Answer ``status`` on the main endpoint for the next ``seconds`` (a provider outage)."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_status = status

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received: ``{"method", "path", "peer", "headers", "body"}``.

        ``peer`` is the client's (host, port): requests on one connection share it. Header
        names are lower-cased; the body is the parsed JSON (None if there was none).
        """
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    # For subclasses

    def next_reply(self) -> Reply | None:
        with self._lock:
            if time.monotonic() < self._outage_until:
                return Reply(status=self._outage_status)
            return self._script.popleft() if self._script else None

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the server is shutting down meanwhile."""
        return seconds <= 0 or not self._closing.wait(seconds)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def answer_main(self, handler: "FakeHandler", body: dict[str, Any], reply: Reply) -> None:
        """The default success of the main endpoint for this request."""
        raise NotImplementedError

    def handle(self, handler: "FakeHandler", method: str) -> None:
        path = urlsplit(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._requests.append(
                {
                    "method": method,
                    "path": path,
                    "peer": handler.client_address,  # one per connection
                    "headers": {name.lower(): value for name, value in handler.headers.items()},
                    "body": body,
                }
            )
        route = self.routes.get((method, path))
        if route is None:
            handler.send_json(404, self.error_body(404, f"Unknown path {method} {path}"))
            return
        if path != self.main_path:
            getattr(self, route)(handler, body)
            return
        reply = self.next_reply() or Reply(delay=self.default_delay)
        if not self.pause(reply.delay):
            return
        if reply.text is not None:
            handler.send_text(reply.status, reply.text, reply.headers)
        elif reply.events is not None:
            handler.send_events(
                [sse_event(event) for event in reply.events],
                headers=reply.headers,
                chunk_delay=reply.chunk_delay,
                pause=self.pause,
            )
        elif reply.body is not None or reply.status >= 400:
            payload = reply.body if reply.body is not None else self.error_body(reply.status, "")
            handler.send_json(reply.status, payload, reply.headers)
        else:
            self.answer_main(handler, body if isinstance(body, dict) else {}, reply)


class FakeHandler(BaseHTTPRequestHandler):
    fake: FakeServer
    # Keep-alive, as the providers' own servers do: an answer, with a length or streamed
    # in chunks, leaves the connection open for the client's next request.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        try:
            self.fake.handle(self, method)
        except _CLIENT_GONE:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._start(status, {"Content-Type": "application/json", **(headers or {})}, len(data))
        self.wfile.write(data)

    def send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        data = text.encode()
        self._start(status, {"Content-Type": "text/plain", **(headers or {})}, len(data))
        self.wfile.write(data)

    def send_events(
        self,
        events: Iterable[str],
        *,
        headers: dict[str, str] | None = None,
        chunk_delay: float = 0.0,
        pause: Callable[[float], bool],
    ) -> None:
        """Stream server-sent events (each already formatted, ending in a blank line), one
        chunk of the chunked encoding each, as the providers' servers do; the connection
        is kept for the next request once the body has ended."""
        self._start(200, {"Content-Type": "text/event-stream", **(headers or {})}, None)
        for number, event in enumerate(events):
            if number and not pause(chunk_delay):
                self.close_connection = True  # cut off: the body has no end
                return
            if data := event.encode():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _start(self, status: int, headers: dict[str, str], length: int | None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()


def _handler_for(fake: FakeServer) -> type[FakeHandler]:
    return type("BoundFakeHandler", (FakeHandler,), {"fake": fake})


class _QuietServer(ThreadingHTTPServer):
    # Daemon handler threads: a handler stuck in a scripted hang never blocks shutdown.
    daemon_threads = True
    # A provider's backlog, not socketserver's 5: 32 clients connecting at once are
    # queued, not refused.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], _CLIENT_GONE):
            super().handle_error(request, client_address)
