"""Quiet repaints for Line API widgets: remember what each line showed when last
painted, and repaint only the lines whose look has moved on.

Over SSH every repainted line is bytes on the wire. A clock tick (ages, elapsed times)
or a progress update that changes one cell should cost that line, and a tick that
changes nothing should cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.cells import cell_len
from rich.segment import Segment
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

Look = tuple[Segment, ...]


def cells(look: Look) -> list[tuple[str, object]]:
    """(character, style) per character: where two looks differ, column by column."""
    return [(char, segment.style) for segment in look for char in segment.text]


def changed_span(before: Look | None, after: Look) -> tuple[int, int] | None:
    """The columns [start, end) that differ; None when the looks are the same. A line
    whose characters are not all one cell wide is taken whole."""
    if before == after:
        return None
    old, new = cells(before or ()), cells(after)
    text = "".join(char for char, _ in new)
    if before is None or len(old) != len(new) or cell_len(text) != len(text):
        return 0, max(len(new), cell_len(text))
    first = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
    last = next(i for i in range(len(new) - 1, -1, -1) if old[i] != new[i])
    return first, last + 1


class PaintedLines:
    """The looks (text and styles) of a widget's visible lines as last painted."""

    def __init__(self) -> None:
        self.looks: dict[int, Look] = {}

    def remember(self, y: int, strip: Strip) -> Strip:
        """Call with each line ``render_line`` returns."""
        self.looks[y] = tuple(strip)
        return strip

    def repaint_changed(self, widget: Widget, render_line: Callable[[int], Strip]) -> int:
        """Repaint the cells of ``widget``'s lines (``y`` relative to its top, as
        ``render_line`` takes it) that would now look different; returns how many lines."""
        changed = 0
        for y in range(widget.size.height):
            before = self.looks.get(y)
            span = changed_span(before, tuple(self.remember(y, render_line(y))))
            if span is not None:
                widget.refresh(Region(span[0], y, span[1] - span[0], 1))
                changed += 1
        return changed
