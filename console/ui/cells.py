"""Fitting names into terminal cells: control characters made visible, truncation with …

File names come from disk and may hold anything but ``/`` and NUL, including escape
sequences: they are made printable before they reach the terminal.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from rich.cells import cell_len, set_cell_size

from console.units import format_age

ELLIPSIS = "…"

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    """``text`` with control characters (ESC, newline, C1 ...) shown as ``\\xNN``."""
    text = text.translate(_CONTROL)
    if text.isprintable():
        return text
    # Rare: format characters such as bidi overrides would reorder the line.
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cf", "Co", "Cs")
                   else c for c in text)


def fit(text: str, width: int, align: Literal["left", "right"] = "left",
        *, keep: Literal["start", "end"] = "start") -> str:
    """``text`` in exactly ``width`` cells: padded, or cut with an ellipsis.

    Args:
        text: Printable text (see ``printable``).
        width: Cells to fill.
        align: Where the padding goes when the text is shorter.
        keep: Which end survives a cut: ``end`` suits paths (``…/images/pool``).
    """
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        if keep == "end":
            tail = text
            while cell_len(tail) > width - 1:
                tail = tail[1:]
            return set_cell_size(ELLIPSIS + tail, width)
        return set_cell_size(text, width - 1) + ELLIPSIS
    pad = " " * (width - length)
    return text + pad if align == "left" else pad + text


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut in the middle: a path keeps its root and
    more of its end (``/srv/pools/…/tenant-a/images``)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head_width = (width - 1) // 3
    head = set_cell_size(text, head_width).rstrip()
    tail = text
    # Nor a combining mark without its letter: it would join the ellipsis.
    while cell_len(tail) > width - 1 - cell_len(head) or \
            (tail and unicodedata.combining(tail[0])):
        tail = tail[1:]
    return head + ELLIPSIS + tail


def seen(age: float) -> str:
    """``seen 5m ago`` / ``seen just now``: how fresh cached data is."""
    words = format_age(max(0.0, age))
    return "seen just now" if words == "now" else f"seen {words} ago"
