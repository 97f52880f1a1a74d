"""The streams a web process holds open, at most ``WEB_MAX_STREAMS``: a stream holds a thread
for as long as it lasts, and the threads left over serve every other call (health probes,
other keys). Past the cap a stream is refused at once (429 ``too_many_concurrent_requests``).
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack

from django.conf import settings
from rest_framework import status

from contextos.exceptions import AppError


class TooManyOpenStreams(AppError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_concurrent_requests"
    message = "This server holds as many streams as it may; try again in a moment."


class StreamPlace:
    """One open stream's place among its process's; given back once, however often released."""

    def __init__(self, streams: "OpenStreams") -> None:
        self._streams = streams
        self._held = True

    def release(self) -> None:
        with self._streams.lock:
            if self._held:
                self._held = False
                self._streams.count -= 1


class OpenStreams:
    """This process's count of open streams (a non-blocking semaphore whose size is the
    setting as it stands)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def take(self) -> StreamPlace:
        """A place for one more stream, or :class:`TooManyOpenStreams` (429) at once."""
        with self.lock:
            if self.count >= settings.WEB_MAX_STREAMS:
                raise TooManyOpenStreams(details={"retry_after": 1})
            self.count += 1
        return StreamPlace(self)


open_streams = OpenStreams()


class HeldStream:
    """A streamed response's content that runs ``closers`` once, when it is read to the end
    or closed, read or not. The server closes a response however it ends (finished,
    failed, the client gone), so the closers always run; each runs if one before it fails.
    """

    def __init__(self, content: Iterator[bytes], *, closers: Iterable[Callable[[], None]]) -> None:
        self._content = content
        self._closers = [getattr(content, "close", lambda: None), *closers]
        self._closed = False

    def __iter__(self) -> "HeldStream":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._content)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with ExitStack() as stack:  # runs them last-pushed first: pushed in reverse
            for closer in reversed(self._closers):
                stack.callback(closer)
