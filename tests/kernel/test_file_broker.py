"""The embedded default's broker: a worker polling the folder never takes half a message."""

import multiprocessing
import time
from queue import Empty
from typing import Any

from kombu import Connection

MESSAGES = 3000
TRANSPORT = "contextos.file_broker:Transport"


def consume(folder: str, polling: Any, results: Any) -> None:
    """Take messages as fast as possible (a worker polling at every instant)."""
    taken, unreadable = [], 0
    options = {"data_folder_in": folder, "data_folder_out": folder}
    with Connection(transport=TRANSPORT, transport_options=options) as connection:
        channel = connection.default_channel
        polling.set()
        deadline = time.monotonic() + 60
        while len(taken) + unreadable < MESSAGES and time.monotonic() < deadline:
            try:
                taken.append(channel._get("q")["i"])
            except Empty:
                continue
            except Exception:
                unreadable += 1
    results.put((taken, unreadable))


def test_a_polling_worker_takes_only_whole_messages(tmp_path):
    processes = multiprocessing.get_context("fork")
    polling, results = processes.Event(), processes.Queue()
    consumer = processes.Process(target=consume, args=(str(tmp_path), polling, results))
    consumer.start()
    assert polling.wait(10)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with Connection(transport=TRANSPORT, transport_options=options) as connection:
        channel = connection.default_channel
        for number in range(MESSAGES):
            channel._put("q", {"i": number, "body": "x" * 2000})
    taken, unreadable = results.get(timeout=90)
    consumer.join(10)
    assert unreadable == 0
    assert sorted(taken) == list(range(MESSAGES))
