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
from typing import cast

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
# A cell the terminal shows but the wire cannot tell (half of a wide character the
# terminal blanked): it equals no cell, so the next update that renders it sends it.
UNKNOWN: Cell = ("\0", "\0")


class Unfollowable(Exception):
    """An update the wire cannot turn into changed cells: it goes out whole."""


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
        self._looks: dict[tuple[Style | None, str | None], str] = {}
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
            self._ends.clear()
            self.forget()
        elif len(self._looks) >= LOOKS_KEPT:  # between updates: no cell sent needs an end
            self._looks.clear()
            self._ends.clear()
        if isinstance(update, LayoutUpdate):
            try:
                self._remember(update)
            except Exception:  # it goes out whole anyway; follow from the next one
                self.forget()
            self.cursor = cursor
            self.updates_sent += 1
            self.cells_sent += update.region.area
            return update
        if not isinstance(update, ChopsUpdate) or self.size is None or \
                len(update.chop_ends) != self.size.height or \
                any(ends[-1:] != [self.size.width] for ends in update.chop_ends):
            # An inline update, a plain renderable, a screen of another size: not ours
            # to follow.
            return self._whole(update)
        try:
            runs = list(self._changed_runs(update))
        except Exception:  # whatever it was, the screen must not be left wrong
            return self._whole(update)
        # Runs that start in the same style go together: the style is set once for them.
        runs.sort(key=lambda run: run[2][0][1])
        if not runs and cursor == self.cursor:
            self.updates_dropped += 1
            return None
        self.cursor = cursor
        self.updates_sent += 1
        self.cells_sent += sum(len(cells) for _, _, cells in runs)
        return CellsUpdate(runs, self._ends)

    def _whole(self, update: RenderableType) -> RenderableType:
        """Send ``update`` as it is; what the terminal then shows is not known."""
        self.forget()
        self.updates_sent += 1
        return update

    # -- cells ----------------------------------------------------------------------------

    def _look(self, style: Style | None) -> str:
        """The escape sequence that starts ``style`` (its end is kept in ``_ends``).

        Keyed by the style and the codes Rich keeps on that style object: Textual writes
        an object's kept codes as they are (whatever colour system made them), so two
        equal styles may be written differently, and the wire writes each as Textual
        would."""
        key = (style, None if style is None else style._ansi)
        look = self._looks.get(key)
        if look is None:
            look, end = Strip.render_style(style, "\0", self._color_system).split("\0") \
                if style is not None else ("", "")
            self._looks[key] = look
            self._ends[look] = end
        return look

    def _cells(self, segments: Iterable[Segment], cells: list[Cell] | None = None) -> list[Cell]:
        """``segments`` as cells, after ``cells``: their last cell takes a combining mark
        that leads the segments, as in the terminal. Without ``cells`` the segments start
        a line, where such a mark joins nothing and is dropped."""
        at_line_start = cells is None
        cells = [] if cells is None else cells
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
                    elif not at_line_start:
                        raise Unfollowable("a combining mark joins a cell not rendered")
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
        line: list[Cell | None] = []
        line_y = -1
        for y, x1, x2 in update.spans:  # by line; a line may have several spans
            if not 0 <= y < len(self.lines):
                continue
            if y != line_y:
                line, line_y = self._line(update, y), y
            for x, end in self._crossing(update, y, x1, x2):
                start = max(x, x1)
                if start == x and x > 0 and line[x - 1] is not None and \
                        line[x - 1] != self.lines[y][x - 1]:
                    start = x - 1  # a combining mark that leads this chop joined that cell
                yield from self._runs(self.lines[y], line, start, min(end, x2), y)

    def _line(self, update: ChopsUpdate, y: int) -> list[Cell | None]:
        """Line ``y`` as the update renders it: None where it renders nothing."""
        assert self.size is not None
        line: list[Cell | None] = [None] * self.size.width
        for end, (x, strip) in zip(update.chop_ends[y], update.chops[y].items(), strict=False):
            if strip is None:
                continue
            previous = line[x - 1] if x > 0 else None
            if x == 0:
                cells = self._cells(strip)
            elif previous is None:
                cells = self._cells(strip, [])  # a mark would join a cell not rendered
            else:
                cells = self._cells(strip, [previous])
                line[x - 1] = cells.pop(0)
            end = min(end, x + len(cells), len(line))
            line[x:end] = cells[:end - x]
        return line

    @staticmethod
    def _crossing(update: ChopsUpdate, y: int, x1: int, x2: int) -> Iterator[tuple[int, int]]:
        """Where the chops (a widget's part of a line) of line ``y`` that cross [x1, x2)
        start and end."""
        for end, (x, strip) in zip(update.chop_ends[y], update.chops[y].items(), strict=False):
            if strip is not None and x < x2 and end > x1:
                yield x, end

    @staticmethod
    def _runs(shown: list[Cell], line: list[Cell | None], start: int, stop: int,
              y: int) -> Iterator[tuple[int, int, list[Cell]]]:
        """Runs of cells in [start, stop) of ``line`` that differ from ``shown``, which
        is brought up to date."""
        changed = [col for col in range(start, stop)
                   if line[col] is not None and shown[col] != line[col]]
        runs: list[list[int]] = []
        for col in changed:
            if runs and col - runs[-1][1] < GAP:
                runs[-1][1] = col + 1
            else:
                runs.append([col, col + 1])
        for first, last in runs:
            # Never half a wide character, on the screen or in the update.
            while first > 0 and line[first - 1] is not None and \
                    (line[first][0] == "" or shown[first][0] == ""):  # type: ignore[index]
                first -= 1
            while last < len(line) and line[last] is not None and \
                    (line[last][0] == "" or shown[last][0] == ""):  # type: ignore[index]
                last += 1
            cells = cast("list[Cell]", line[first:last])
            if None in cells:
                raise Unfollowable(f"line {y}: a gap in a run of cells")
            # The terminal blanks the half of a wide character the run does not write.
            if first > 0 and shown[first][0] == "":
                shown[first - 1] = UNKNOWN
            if last < len(shown) and shown[last][0] == "":
                shown[last] = UNKNOWN
            shown[first:last] = cells
            yield first, y, cells
