"""Text for a terminal or a script: names made printable, aligned tables, JSON arrays."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def printable(text: str) -> str:
    # Names may hold newlines or undecodable bytes: never let them break the table.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        .encode("unicode_escape").decode("ascii").replace("\\\\", "\\")


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
