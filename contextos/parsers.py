"""The API's JSON parser: only what PostgreSQL and a JSON response can hold gets through.

Python's JSON decoder accepts unpaired UTF-16 surrogates (``"\\ud800"``), which are
not text: they cannot be encoded as UTF-8, so they could be neither stored nor
echoed back in an error. Nesting deep enough to exhaust the decoder's recursion is
refused the same way, as malformed JSON (400), never as a server error.
"""

import re
from collections.abc import Iterator
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, object keys included (iteratively: any depth)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def json_depth(value: Any) -> int:
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            data = None
        if data is None or json_depth(data) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        if any(_SURROGATE.search(text) for text in json_strings(data)):
            raise ParseError("JSON parse error - a string holds an unpaired UTF-16 surrogate.")
        return data
