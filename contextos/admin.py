"""Helpers shared by the admin classes of every app."""

import json
from typing import Any

from django.utils.html import format_html


def pretty_json(value: Any) -> str:
    """A JSON value, indented, in a ``<pre>`` block for read-only admin pages."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)
