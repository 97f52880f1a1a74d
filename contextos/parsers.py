"""The API's JSON parser: only what PostgreSQL and a JSON response can hold gets through.

Python's JSON decoder accepts unpaired UTF-16 surrogates (``"\\ud800"``), which are
not text (they cannot be encoded as UTF-8), and numbers too large for a float
(``1e999`` becomes infinity, which JSON cannot express): such values could be
neither stored nor echoed back. Nesting deep enough to exhaust the decoder's
recursion is refused the same way: all are malformed JSON (400), never a server error.
"""

import math
import re
from collections.abc import Iterator
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_nodes(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value in a decoded JSON document, object keys included, with its depth
    (iteratively, so any depth is safe)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        yield item, depth
        if isinstance(item, dict):
            pending.extend((key, depth + 1) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)


def json_strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON document, object keys included."""
    return (item for item, _ in json_nodes(value) if isinstance(item, str))


def json_problem(value: Any) -> str | None:
    """Why a decoded JSON document cannot be accepted, or None."""
    for item, depth in json_nodes(value):
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str) and _SURROGATE.search(item):
            return "a string holds an unpaired UTF-16 surrogate"
        if isinstance(item, float) and not math.isfinite(item):
            return "a number is too large"
    return None


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            problem = f"nested deeper than {MAX_JSON_DEPTH} levels"
        else:
            problem = json_problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}.")
        return data
