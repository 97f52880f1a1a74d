"""Run one call from many threads released at the same moment, as concurrent clients."""

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connections

T = TypeVar("T")


def all_at_once(call: Callable[[], T], *, times: int = 10, timeout: float = 30) -> list[T]:
    """``call``'s results, from ``times`` threads that start it together; a failure in
    any thread is raised here. Each thread gives its database connection back."""
    start = threading.Barrier(times)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout)
            results.append(call())
        except BaseException as error:  # surfaced below, in the test's thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert len(results) == times, f"{times - len(results)} calls did not finish in {timeout} s"
    return results
