"""Reading server-sent events as a client does, for the gateway's tests."""

import json
from typing import Any


def data_events(text: str) -> list[Any]:
    """The data of each server-sent event, parsed as JSON; ``"[DONE]"`` stays text."""
    events = []
    for block in text.split("\n\n"):
        data = "".join(
            line.removeprefix("data:").strip()
            for line in block.splitlines()
            if line.startswith("data:")
        )
        if data:
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
