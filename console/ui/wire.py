"""Quiet on the wire: the terminal's cells as last written, so an update sends only the
cells that would change.

Textual writes the regions widgets mark dirty, and a partial update writes each dirty
line from the left edge of the widget that holds it: a two-cell age at the end of a
table row costs the whole row, colours and all. Over SSH every byte is carried, so each
update the compositor makes passes through ``Wire.filter``, which compares it with what
the terminal already shows: unchanged cells are not sent, an update that changes nothing
is not sent at all, and a run of cells in one style gets one escape sequence.

A full update (start, resize, screen switch) goes out whole and is what the cells are
compared with from then on. Anything else written to the terminal makes the wire
forget what it showed (``forget``) until the next full update.

This reads the compositor's updates (``textual._compositor``): Textual is pinned, and
tests/test_ui_wire.py checks that the updates still look as this module expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rich.cells import get_character_cell_size
from rich.color import ColorSystem
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.control import Control
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, CompositorUpdate, LayoutUpdate
from textual.geometry import Offset, Size
from textual.strip import Strip

# What a cell shows: its character ("" for the right half of a wide one) and the escape
# sequence that starts its style (colours, attributes, link; never Textual's metadata).
Cell = tuple[str, str]

# Unchanged cells between two changed runs are sent anyway when they are fewer than
# this: a new cursor position and style cost about as much.
GAP = 8
LOOKS_KEPT = 4096  # distinct styles remembered before the table is cleared


class CellsUpdate(CompositorUpdate):
    """Runs of changed cells, each written where it starts. A style is set once for
    the cells that share it, across runs: moving the cursor keeps it."""

    def __init__(self, runs: list[tuple[int, int, list[Cell]]], ends: dict[str, str]) -> None:
        self.runs = runs  # (x, y, cells)
        self.ends = ends  # a style's start -> what ends it

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.render_segments(console))  # already terminal sequences

    def render_segments(self, console: Console) -> str:
        out: list[str] = []
        look = ""
        for x, y, cells in self.runs:
            out.append(Control.move_to(x, y).segment.text)
            for char, cell_look in cells:
                if cell_look != look:
                    out.append(self.ends.get(look, ""))
                    out.append(cell_look)
                    look = cell_look
                out.append(char)
        out.append(self.ends.get(look, ""))
        return "".join(out)


class Wire:
    """What the terminal shows, cell by cell, as this console last wrote it."""

    def __init__(self) -> None:
        self.size: Size | None = None  # None: not known (nothing written yet, or forgotten)
        self.lines: list[list[Cell]] = []
        self.cursor: Offset | None = None
        self._looks: dict[Style | None, str] = {}
        self._ends: dict[str, str] = {}  # a style's start -> what ends it
        self._color_system = ColorSystem.TRUECOLOR
        # For tests and benchmarks: what was sent, what was held back.
        self.updates_sent = 0
        self.updates_dropped = 0
        self.cells_sent = 0

    def forget(self) -> None:
        """Something else wrote to the terminal: send everything until a full update."""
        self.size = None
        self.lines = []
        self.cursor = None

    def filter(self, update: RenderableType, cursor: Offset,
               console: Console) -> RenderableType | None:
        """What of ``update`` to write: itself, only its changed cells, or None."""
        color_system = console._color_system or ColorSystem.TRUECOLOR  # as Strip.render
        if color_system != self._color_system:
            self._color_system = color_system
            self._looks.clear()
            self.forget()
        if isinstance(update, LayoutUpdate):
            self._remember(update)
            self.cursor = cursor
            self.updates_sent += 1
            self.cells_sent += update.region.area
            return update
        if not isinstance(update, ChopsUpdate) or self.size is None or \
                len(update.chop_ends) != self.size.height or \
                any(ends[-1:] != [self.size.width] for ends in update.chop_ends):
            # An inline update, a plain renderable, a screen of another size: not ours
            # to follow.
            self.forget()
            self.updates_sent += 1
            return update
        runs = list(self._changed_runs(update))
        # Runs that start in the same style go together: the style is set once for them.
        runs.sort(key=lambda run: run[2][0][1])
        if not runs and cursor == self.cursor:
            self.updates_dropped += 1
            return None
        self.cursor = cursor
        self.updates_sent += 1
        self.cells_sent += sum(len(cells) for _, _, cells in runs)
        return CellsUpdate(runs, self._ends)

    # -- cells ----------------------------------------------------------------------------

    def _look(self, style: Style | None) -> str:
        """The escape sequence that starts ``style`` (its end is kept in ``_ends``)."""
        look = self._looks.get(style)
        if look is None:
            if len(self._looks) >= LOOKS_KEPT:
                self._looks.clear()
            look, end = Strip.render_style(style, "\0", self._color_system).split("\0") \
                if style is not None else ("", "")
            self._looks[style] = look
            self._ends[look] = end
        return look

    def _cells(self, segments: Iterable[Segment]) -> list[Cell]:
        cells: list[Cell] = []
        for text, style, control in segments:
            if control or not text:
                continue
            look = self._look(style)
            if text.isascii():  # Textual has made control characters printable
                cells.extend((char, look) for char in text)
                continue
            for char in text:
                width = get_character_cell_size(char)
                if width == 0:  # a combining mark: part of the cell before it
                    if cells:
                        cells[-1] = (cells[-1][0] + char, cells[-1][1])
                    continue
                cells.append((char, look))
                if width == 2:
                    cells.append(("", look))
        return cells

    def _remember(self, update: LayoutUpdate) -> None:
        region = update.region
        if region.offset != Offset(0, 0):  # not the whole screen: cannot tell the rest
            self.forget()
            return
        self.size = region.size
        self.lines = [self._cells(segment for strip in line for segment in strip)
                      for line in update.strips]

    def _changed_runs(self, update: ChopsUpdate) -> Iterator[tuple[int, int, list[Cell]]]:
        assert self.size is not None
        for y, x1, x2 in update.spans:
            if not 0 <= y < len(self.lines):
                continue
            shown = self.lines[y]
            for x, end, strip in self._chops(update, y, x1, x2):
                cells = self._cells(strip)
                end = min(end, x + len(cells), len(shown))
                yield from self._runs(shown, cells, x, max(x, x1), min(end, x2), y)

    @staticmethod
    def _chops(update: ChopsUpdate, y: int, x1: int,
               x2: int) -> Iterator[tuple[int, int, Strip]]:
        """The chops (a widget's part of a line) of line ``y`` that cross [x1, x2)."""
        for end, (x, strip) in zip(update.chop_ends[y], update.chops[y].items(), strict=False):
            if strip is not None and x < x2 and end > x1:
                yield x, end, strip

    @staticmethod
    def _runs(shown: list[Cell], cells: list[Cell], x: int, start: int, stop: int,
              y: int) -> Iterator[tuple[int, int, list[Cell]]]:
        """Runs of cells in [start, stop) that differ from ``shown``; ``cells`` start at
        column ``x``. ``shown`` is brought up to date."""
        changed = [col for col in range(start, stop) if shown[col] != cells[col - x]]
        runs: list[list[int]] = []
        for col in changed:
            if runs and col - runs[-1][1] < GAP:
                runs[-1][1] = col + 1
            else:
                runs.append([col, col + 1])
        for first, last in runs:
            # Never half a wide character, on the screen or in the update.
            while first > x and (cells[first - x][0] == "" or shown[first][0] == ""):
                first -= 1
            while last < min(x + len(cells), len(shown)) and \
                    (cells[last - x][0] == "" or shown[last][0] == ""):
                last += 1
            shown[first:last] = cells[first - x:last - x]
            yield first, y, cells[first - x:last - x]
