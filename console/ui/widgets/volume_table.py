"""The volume table: a Line-API ScrollView over the cache, never the whole pool in memory.

``render_line`` draws only the visible rows. Rows come from ``Cache.volume_page`` in pages
of ``PAGE_SIZE`` (filter, sort and paging are done in SQL) kept in a small LRU; the row
count is asked once per pool, filter or refresh. Nothing here is O(rows) per key or per
paint, so a pool of 100,000 volumes scrolls as fast as one of ten.

The volumes that running jobs are writing (under temporary names the scan hides) are
pinned under the header, one row each, from a short list the screen hands over
(``set_outputs``): never a job lookup per volume row.

Marks (``marks``, keyed by host/pool/volume) outlive a change of pool; marked rows
lead with ``MARKED`` (a symbol: a theme without colour or bold still shows them) and are
drawn in their own style, and every change posts ``MarksChanged``.
"""

from __future__ import annotations

import os
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.cache import SORTABLE, Cache, VolumeRow
from console.jobs.journal import JobState
from console.marks import Marks
from console.ui.cells import fit, printable
from console.ui.job_board import JobOutput
from console.ui.messages import VolumeHighlighted
from console.ui.widgets.cursor_keys import CursorKeys, cursor_bindings
from console.ui.widgets.painted_lines import PaintedLines
from console.units import format_age, format_size

PAGE_SIZE = 200
MAX_PAGES = 8
STALE_AFTER = 300.0  # seconds: older cached rows show their age in the warning colour
SNAPSHOT_MARK = "◆"
IN_USE_MARK = "▶"  # a running QEMU holds it: destructive actions are refused
JOB_MARK = "⟳"  # a job is writing it: not a volume yet
MARKED = "✓"  # the first cell of a marked row; the marks bar says the same


@dataclass(frozen=True)
class Column:
    key: str  # the SORTABLE column it sorts by ("" for the mark and the snapshot glyph)
    title: str
    width: int  # 0: flexes
    align: Literal["left", "right"] = "left"
    label: str = ""  # long name, for help and the command palette


COLUMNS: tuple[Column, ...] = (
    Column("", "", 2),  # marked, then snapshot / in use: no separator between the two
    Column("name", "name", 0, label="name"),
    Column("format", "fmt", 6, label="format"),
    Column("capacity", "size", 6, "right", label="capacity"),
    Column("allocation", "alloc", 6, "right", label="allocation"),
    Column("backing", "backing", 0, label="backing"),
    Column("health", "health", 9, label="health"),
    Column("chain_depth", "depth", 5, "right", label="chain depth"),
    Column("last_seen", "age", 4, "right", label="age"),
)
SORT_LABELS: dict[str, str] = {c.key: c.label for c in COLUMNS if c.key}
# ``s`` cycles through these; chain depth is in the palette and shown on wide screens.
SORT_CYCLE: tuple[str, ...] = ("name", "format", "capacity", "allocation", "backing",
                               "health", "last_seen")


def table_age(age: float) -> str:
    """A row's age in the table: by the minute. Seconds are the summary's and the
    details' to tell; a column of them counting up is bytes on the wire every tick."""
    return format_age(age) if age >= 60 else "<1m"


def layout(width: int) -> list[tuple[Column, int]]:
    """Columns and their widths for ``width`` cells; optional ones go first when narrow."""

    def fixed(cols: list[Column]) -> int:
        return sum(c.width for c in cols) + len(cols) - 1

    cols = list(COLUMNS)
    # At 60 columns the fixed columns left the name one letter: age, allocation and
    # format give way first (the details still show them), so the name keeps 14.
    for optional, needs in (("chain_depth", 44), ("backing", 26), ("last_seen", 14),
                            ("allocation", 14), ("format", 14)):
        if width - fixed(cols) < needs:
            cols = [c for c in cols if c.key != optional]
    flex = max(width - fixed(cols), 2)
    backing = min(max(flex // 3, 10), 30) if any(c.key == "backing" for c in cols) else 0
    widths = {"backing": backing, "name": flex - backing}
    return [(c, c.width or widths[c.key]) for c in cols]


def _sort_value(row: VolumeRow, column: str) -> tuple[int, object]:
    """How SQLite orders ``column`` (NULL first, BLOBs bytewise) as a comparable key."""
    value: object = getattr(row, column)
    if value is None:
        return (0, 0)
    if column == "backing":
        value = os.fsencode(str(value))
    return (1, value)


class VolumeTable(CursorKeys, ScrollView, can_focus=True):
    """The volumes of one pool, filtered and sorted in SQL, one page at a time."""

    HELP_ORDER: ClassVar[int] = 1
    HELP_TITLE: ClassVar[str] = "Volumes (table focused)"

    BINDINGS: ClassVar[list[BindingType]] = [
        *cursor_bindings("First volume", "Last volume"),
        Binding("enter", "select", "Show details", show=False),
        Binding("space", "toggle_mark", "Mark", show=False),
        Binding("shift+down", "extend_marks(1)", "Mark down", show=False),
        Binding("shift+up", "extend_marks(-1)", "Mark up", show=False),
        Binding("ctrl+space,ctrl+@", "mark_range", "Mark from the last mark", show=False),
        Binding("asterisk", "mark_matching", "Mark all that match", show=False),
    ]

    class MarksChanged(Message):
        """Volumes were marked or unmarked (``Marks`` holds them)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "volume-table--header",
        "volume-table--cursor",
        "volume-table--optimized",
        "volume-table--degraded",
        "volume-table--broken",
        "volume-table--age",
        "volume-table--stale",
        "volume-table--snapshot",
        "volume-table--in-use",
        "volume-table--empty",
        "volume-table--job",
        "volume-table--marked",
    }

    DEFAULT_CSS = """
    VolumeTable {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        & > .volume-table--header { background: $panel; color: $foreground; text-style: bold; }
        & > .volume-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .volume-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .volume-table--optimized { color: $success; }
        & > .volume-table--degraded { color: $warning; }
        & > .volume-table--broken { color: $error; text-style: bold; }
        & > .volume-table--age { color: $text-muted; }
        & > .volume-table--stale { color: $warning; }
        & > .volume-table--snapshot { color: $accent; text-style: bold; }
        & > .volume-table--in-use { color: $warning; text-style: bold; }
        & > .volume-table--empty { color: $text-muted; text-style: italic; }
        & > .volume-table--job { color: $accent; text-style: italic; }
        & > .volume-table--marked { background: $accent 30%; text-style: bold; }
    }
    """

    def __init__(self, cache: Cache, *, clock: Callable[[], float],
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.painted = PaintedLines()  # what each line showed: ticks repaint only changes
        self.cache = cache
        self.clock = clock
        self.host: str | None = None
        self.pool: str | None = None
        self.sort = "name"
        self.descending = False
        self.filter_text = ""
        self.row_count = 0
        self.cursor = 0
        self.empty_text = "no pool selected"
        self._pages: OrderedDict[int, list[VolumeRow]] = OrderedDict()
        self._highlighted: tuple[str, str, str | None, float] | None = None
        self.outputs: list[JobOutput] = []  # the active jobs' outputs in this pool
        self.pinned: list[JobOutput] = []  # those the filter keeps: rows under the header
        self.page_fetches = 0  # for tests and benchmarks: SQL pages read so far
        self.marks = Marks()
        self.mark_anchor: tuple[str, str, str] | None = None  # the last one space marked

    # -- data -----------------------------------------------------------------------

    def show_pool(self, host: str | None, pool: str | None, *, empty_text: str = "") -> None:
        """Show another pool from its first row (the filter is kept)."""
        self.host, self.pool = host, pool
        self.empty_text = empty_text
        self.cursor = 0
        self.outputs, self.pinned = [], []  # the other pool's; the screen sends these
        self._recount()
        self.scroll_to(y=0, animate=False)
        self._announce()

    def set_filter(self, text: str) -> None:
        """Keep only names containing ``text`` (SQL ``LIKE``, case-insensitive ASCII)."""
        if text == self.filter_text:
            return
        keep = self.current
        self.filter_text = text
        self.pinned = self._matching(self.outputs)
        self._recount()
        self._restore(keep.name if keep else None, 0)

    def set_outputs(self, outputs: list[JobOutput]) -> None:
        """The volumes active jobs are writing into this pool, shown pinned under the
        header until their job ends (a refresh then shows the volume itself)."""
        if outputs == self.outputs:
            return
        self.outputs = outputs
        pinned = self._matching(outputs)
        grows = len(pinned) != len(self.pinned)
        self.pinned = pinned
        if grows:
            self.virtual_size = Size(1, self.row_count + 1 + len(pinned))
            self._scroll_to_cursor()
        self.refresh()

    def _matching(self, outputs: list[JobOutput]) -> list[JobOutput]:
        """The outputs whose name has the filter text (case-insensitive, as SQL's LIKE
        is for ASCII)."""
        needle = self.filter_text.casefold()
        return [o for o in outputs if needle in o.name.casefold()]

    def sort_by(self, column: str, descending: bool | None = None) -> None:
        """Sort by ``column`` (one of ``SORTABLE``), keeping the cursor on its volume."""
        if column not in SORTABLE:
            raise ValueError(f"cannot sort by {column!r}")
        keep = self.current
        self.sort = column
        if descending is not None:
            self.descending = descending
        self._invalidate()
        self._restore(keep.name if keep else None, self.cursor)

    def cycle_sort(self) -> None:
        following = SORT_CYCLE[(SORT_CYCLE.index(self.sort) + 1) % len(SORT_CYCLE)] \
            if self.sort in SORT_CYCLE else SORT_CYCLE[0]
        self.sort_by(following, descending=False)

    def reverse_sort(self) -> None:
        self.sort_by(self.sort, descending=not self.descending)

    def reload(self, select: str | None = None) -> None:
        """Re-query after the cache changed: the cursor stays on ``select`` (default: the
        volume it was on) or, when that is gone, at the same position."""
        keep = select or (self.current.name if self.current else None)
        index = self.cursor
        self._recount()
        self._restore(keep, index)

    def select_name(self, name: str) -> bool:
        """Put the cursor on volume ``name``; False when it is not in the current view."""
        index = self._locate(name)
        if index is None:
            return False
        self._set_cursor(index)
        return True

    @property
    def current(self) -> VolumeRow | None:
        """The volume under the cursor."""
        return self.row(self.cursor) if self.row_count else None

    def row(self, index: int) -> VolumeRow | None:
        """Row ``index`` of the current view, from the page cache or one SQL page."""
        if self.host is None or self.pool is None or not 0 <= index < self.row_count:
            return None
        number, within = divmod(index, PAGE_SIZE)
        page = self._pages.get(number)
        if page is None:
            page = self.cache.volume_page(
                self.host, self.pool, sort=self.sort, descending=self.descending,
                filter_text=self.filter_text, offset=number * PAGE_SIZE, limit=PAGE_SIZE)
            self.page_fetches += 1
            self._pages[number] = page
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page[within] if within < len(page) else None

    def _invalidate(self) -> None:
        self._pages.clear()
        self.refresh()

    def _recount(self) -> None:
        self._invalidate()
        if self.host is None or self.pool is None:
            self.row_count = 0
        else:
            self.row_count = self.cache.count_volumes(self.host, self.pool, self.filter_text)
        self.virtual_size = Size(1, self.row_count + 1 + len(self.pinned))

    def _restore(self, name: str | None, fallback: int) -> None:
        index = self._locate(name, near=fallback) if name is not None else None
        self._set_cursor(fallback if index is None else index, force=True)

    def _locate(self, name: str, near: int | None = None) -> int | None:
        """Index of ``name`` in the current view, or None when filtered out or gone.

        Looks in the page around ``near`` first (a refresh rarely moves a row far), then
        bisects with one-row queries: O(log rows) queries, only on refresh/create/sort.
        """
        if self.host is None or self.pool is None or not self.row_count:
            return None
        if near is not None:
            start = max(0, min(near, self.row_count - 1)) // PAGE_SIZE * PAGE_SIZE
            for index in range(start, min(start + PAGE_SIZE, self.row_count)):
                found = self.row(index)
                if found is not None and found.name == name:
                    return index
        target = self.cache.volume(self.host, self.pool, name)
        if target is None:
            return None
        key = (_sort_value(target, self.sort), target.name)
        low, high = 0, self.row_count
        while low < high:
            middle = (low + high) // 2
            probe = self.cache.volume_page(
                self.host, self.pool, sort=self.sort, descending=self.descending,
                filter_text=self.filter_text, offset=middle, limit=1)
            if not probe:
                high = middle
                continue
            probe_key = (_sort_value(probe[0], self.sort), probe[0].name)
            before = probe_key > key if self.descending else probe_key < key
            if before:
                low = middle + 1
            else:
                high = middle
        found = self.row(low)
        return low if found is not None and found.name == name else None

    # -- cursor -----------------------------------------------------------------------

    @property
    def visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1 - len(self.pinned))

    def _set_cursor(self, index: int, *, force: bool = False) -> None:
        index = max(0, min(index, self.row_count - 1)) if self.row_count else 0
        if index != self.cursor:
            below = 1 + len(self.pinned)  # the lines above the first volume row
            self.refresh_line(self.cursor + below)
            self.cursor = index
            self.refresh_line(index + below)
        self._scroll_to_cursor()
        self._announce(force=force)

    def on_resize(self, event: events.Resize) -> None:
        # The jobs panel, the marks bar or the `:` line take rows: keep the cursor's row
        # (the one the details describe) on screen.
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self.visible_rows:
            self.scroll_to(y=self.cursor - self.visible_rows + 1, animate=False)

    def _announce(self, *, force: bool = False) -> None:
        row = self.current
        stamp = (self.host or "", self.pool or "", row.name if row else None,
                 row.last_seen if row else 0.0)
        if force or stamp != self._highlighted:
            self._highlighted = stamp
            self.post_message(VolumeHighlighted(self.host, self.pool, row))

    @property
    def cursor_rows(self) -> int:
        return self.row_count

    def action_select(self) -> None:
        self._announce(force=True)

    # -- marks --------------------------------------------------------------------------

    def _marks_changed(self) -> None:
        self.refresh()
        self.post_message(self.MarksChanged())

    def action_toggle_mark(self) -> None:
        """space: mark or unmark the volume under the cursor, then move down."""
        row = self.current
        if row is None:
            return
        if self.marks.toggle(row):
            self.mark_anchor = (row.host, row.pool, row.name)
        self._marks_changed()
        self._set_cursor(self.cursor + 1)

    def action_extend_marks(self, step: int) -> None:
        """shift+arrow: mark the volume under the cursor and the next one that way."""
        row = self.current
        if row is None:
            return
        self.marks.add([row])
        self._set_cursor(self.cursor + step)
        following = self.current
        if following is not None:
            self.marks.add([following])
            self.mark_anchor = (following.host, following.pool, following.name)
        self._marks_changed()

    def action_mark_range(self) -> None:
        """ctrl+space (as in k9s): mark everything from the last mark to the cursor."""
        anchor = self.mark_anchor
        start = None
        if anchor is not None and anchor[:2] == (self.host, self.pool):
            start = self._locate(anchor[2], near=self.cursor)
        if start is None:
            self.action_toggle_mark()  # no mark in this view yet: this is the first
            return
        low, high = sorted((start, self.cursor))
        self.marks.add(row for index in range(low, high + 1)
                       if (row := self.row(index)) is not None)
        self._marks_changed()

    def action_mark_matching(self) -> None:
        """*: mark every volume the filter matches (all of the pool without one)."""
        if self.host is None or self.pool is None or not self.row_count:
            return
        self.marks.add(self.cache.volume_page(self.host, self.pool, sort=self.sort,
                                              descending=self.descending,
                                              filter_text=self.filter_text,
                                              offset=0, limit=self.row_count))
        self._marks_changed()

    def clear_marks(self) -> int:
        count = self.marks.clear()
        self.mark_anchor = None
        if count:
            self._marks_changed()
        return count

    def prune_marks(self, host: str, pool: str) -> None:
        """Drop the marks of ``pool`` whose volume the cache no longer has (a refresh
        found it gone)."""
        marked = [m.volume for m in self.marks.in_pool(host, pool)]
        if not marked:
            return
        if self.marks.keep_only(host, pool, self.cache.present(host, pool, marked)):
            self._marks_changed()

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1 + len(self.pinned):
            self._set_cursor(round(self.scroll_y) + offset.y - 1 - len(self.pinned))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    # -- painting -----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        return self.painted.remember(y, self._render_line(y))

    def repaint_changed(self) -> None:
        """A clock tick: repaint only the lines whose text moved on (ages, times)."""
        self.painted.repaint_changed(self, self._render_line)

    def _render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        columns = layout(width)
        if y == 0:
            return self._header(columns, width, base)
        pinned = len(self.pinned)
        if y <= pinned:
            return self._output(self.pinned[y - 1], columns, width, base)
        index = round(self.scroll_y) + y - 1 - pinned
        if self.row_count == 0:
            text = self.empty_text or ("no volumes match the filter" if self.filter_text
                                       else "no volumes in this pool")
            # A long message (a host's error with its key's fingerprint) wraps.
            lines = [line for paragraph in text.split("\n")
                     for line in textwrap.wrap(paragraph, max(8, width - 2)) or [""]]
            at = y - pinned - 1
            if not pinned and 0 <= at < len(lines):
                style = base + self.get_component_rich_style("volume-table--empty",
                                                             partial=True)
                return Strip([Segment(fit(" " + lines[at], width), style)], width)
            return Strip.blank(width, base)
        row = self.row(index)
        if row is None:
            return Strip.blank(width, base)
        return self._row(row, index == self.cursor, columns, width, base)

    def _header(self, columns: list[tuple[Column, int]], width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("volume-table--header")
        segments = []
        for column, cells in columns:
            title = column.title
            if column.key == self.sort:
                title += "▼" if self.descending else "▲"
            segments.append(Segment(fit(title, cells, column.align) + " ", style))
        return Strip(segments).crop_extend(0, width, style)

    def _output(self, output: JobOutput, columns: list[tuple[Column, int]], width: int,
                base: Style) -> Strip:
        """A volume a job is writing: its final name, the job, how far it is."""
        line = base + self.get_component_rich_style("volume-table--job", partial=True)
        if output.state == JobState.PENDING:
            progress = "queued"
        elif output.state == JobState.ABORTING:
            progress = "stopping"
        else:
            progress = f"{output.percent:.0f}%" if output.percent >= 0 else "…"
        texts = {"": " " + JOB_MARK, "name": printable(output.name),
                 "backing": f"{output.verb} #{output.job_id}",  # the panel's "#id"
                 "health": f"{JOB_MARK} {progress}"}
        segments = []
        for column, cells in columns:
            segments.append(Segment(fit(texts.get(column.key, ""), cells, column.align), line))
            segments.append(Segment(" ", line))
        return Strip(segments).crop_extend(0, width, line)

    def _row(self, row: VolumeRow, is_cursor: bool, columns: list[tuple[Column, int]],
             width: int, base: Style) -> Strip:
        line = base
        marked = bool(self.marks) and self.marks.is_marked(row)
        if marked:  # under the cursor's colours
            line += self.get_component_rich_style("volume-table--marked", partial=True)
        if is_cursor:
            line += self.get_component_rich_style("volume-table--cursor")
        partial = self.get_component_rich_style
        segments = []
        for column, cells in columns:
            key = column.key
            accent: Style | None = None
            if key == "":
                segments.append(Segment(MARKED if marked else " ", line))
                cells -= 1
                if row.in_use:
                    text = IN_USE_MARK
                    accent = partial("volume-table--in-use", partial=True)
                else:
                    text = SNAPSHOT_MARK if row.readonly else " "
                    accent = partial("volume-table--snapshot", partial=True)
            elif key == "name":
                text = printable(row.name)
            elif key == "format":
                text = row.format
            elif key == "capacity":
                text = format_size(row.capacity)
            elif key == "allocation":
                text = format_size(row.allocation)
            elif key == "backing":
                text = printable(os.path.basename(row.backing)) if row.backing else ""
            elif key == "health":
                text = row.health
                accent = partial(f"volume-table--{row.health}", partial=True,
                                 default=Style())
            elif key == "chain_depth":
                text = str(row.chain_depth)
            else:
                age = max(0.0, self.clock() - row.last_seen)
                text = table_age(age)
                accent = partial("volume-table--stale" if age > STALE_AFTER
                                 else "volume-table--age", partial=True)
            cell = fit(text, cells, column.align)
            segments.append(Segment(cell, line + accent if accent else line))
            segments.append(Segment(" ", line))
        return Strip(segments).crop_extend(0, width, line)
