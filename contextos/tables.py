"""Plain-text tables for management commands."""

from collections.abc import Iterable, Sequence


def format_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart, a header line first."""
    lines = [tuple(columns), *(tuple(str(value) for value in row) for row in rows)]
    widths = [max(len(value) for value in column) for column in zip(*lines, strict=True)]
    return "\n".join(
        "  ".join(
            str(value).ljust(width) for value, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )
