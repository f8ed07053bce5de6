"""Quiet repaints for Line API widgets: remember what each line showed when last
painted, and repaint only the lines whose look has moved on.

Over SSH every repainted line is bytes on the wire. A clock tick (ages, elapsed times)
that changes nothing should cost nothing; of a line it changes, the wire
(console/ui/wire.py) sends only the cells that differ.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.segment import Segment
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

Look = tuple[Segment, ...]


class PaintedLines:
    """The looks (text and styles) of a widget's visible lines as last painted."""

    def __init__(self) -> None:
        self.looks: dict[int, Look] = {}

    def remember(self, y: int, strip: Strip) -> Strip:
        """Call with each line ``render_line`` returns."""
        self.looks[y] = tuple(strip)
        return strip

    def repaint_changed(self, widget: Widget, render_line: Callable[[int], Strip]) -> int:
        """Repaint ``widget``'s lines (``y`` relative to its top, as ``render_line``
        takes it) that would now look different; returns how many lines."""
        changed = 0
        for y in range(widget.size.height):
            strip = render_line(y)
            look = tuple(strip)
            if self.looks.get(y) != look:
                self.looks[y] = look
                widget.refresh(Region(0, y, strip.cell_length, 1))
                changed += 1
        return changed
