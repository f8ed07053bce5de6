"""Text for a terminal or a script: names made printable, aligned tables, JSON arrays."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def printable(text: str) -> str:
    """``text`` safe on a terminal: undecodable bytes as ``\\xNN``, control and format
    characters as Python writes them (``\\n``, ``\\x1b``, ``\\u202e``); everything else,
    ``é`` and ``→`` included, as it is. Names may hold anything but ``/`` and NUL."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def table(rows: Iterable[Sequence[str]], right: set[int]) -> str:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_json(records: list[dict[str, Any]]) -> None:
    # One object per line, greppable. '}, {"host": ' cannot occur inside a JSON string
    # (its quotes would be escaped), so splitting the one fast dumps() there is safe.
    text = json.dumps(records).replace('}, {"host": ', '},\n{"host": ')
    sys.stdout.write(text[:1] + "\n" + text[1:-1] + "\n]\n" if records else "[]\n")
