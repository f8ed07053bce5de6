"""Two lines above the volume table: which pool, how fresh, and its space in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget

from console.ui.cells import printable, seen, shorten
from console.ui.widgets.capacity_bar import BarStyles, capacity_bar, capacity_words
from console.ui.widgets.pool_tree import PoolEntry
from console.ui.widgets.volume_table import SORT_LABELS

NAME_ROOM = 24  # cells a long pool name keeps before a fresh age gives way to it
NAME_STUB = 10  # cells it keeps at the least


class PoolSummary(Widget):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "pool-summary--name",
        "pool-summary--muted",
        "pool-summary--error",
        "pool-summary--stale",
        "pool-summary--allocated",
        "pool-summary--committed",
        "pool-summary--free",
        "pool-summary--over",
    }

    DEFAULT_CSS = """
    PoolSummary {
        height: 2;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $panel;
        & > .pool-summary--name { text-style: bold; color: $primary; }
        & > .pool-summary--muted { color: $text-muted; }
        & > .pool-summary--error { color: $error; text-style: bold; }
        & > .pool-summary--stale { color: $warning; }
        & > .pool-summary--allocated { color: $primary; }
        & > .pool-summary--committed { color: $warning; }
        & > .pool-summary--free { color: $text-muted; }
        & > .pool-summary--over { color: $error; }
    }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self._look: tuple[str, tuple[object, ...]] | None = None  # as last painted
        self.clock = clock
        self.entry: PoolEntry | None = None
        self.shown = 0
        self.filter_text = ""
        self.sort = "name"
        self.descending = False

    def show(self, entry: PoolEntry | None, *, shown: int, filter_text: str, sort: str,
             descending: bool) -> None:
        self.entry = entry
        self.shown, self.filter_text = shown, filter_text
        self.sort, self.descending = sort, descending
        self.refresh()

    def render(self) -> Text:
        text = self._text()
        self._look = (text.plain, tuple(text.spans))
        return text

    def repaint_changed(self) -> None:
        """A clock tick: repaint only when the words moved on ("seen 2m ago")."""
        text = self._text()
        if (text.plain, tuple(text.spans)) != self._look:
            self.refresh()

    def _text(self) -> Text:
        part = self.get_component_rich_style
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        entry = self.entry
        if entry is None:
            text.append("no pool: add one to the config, pass a directory, or define one on a "
                        "libvirt host (P)",
                        part("pool-summary--muted", partial=True))
            return text
        pool, row = entry.pool, entry.row
        text.append_text(self._title(entry))
        text.append("\n")
        if row is not None and row.error:
            text.append(f"✗ {printable(row.error)}", part("pool-summary--error", partial=True))
            return text
        if row is None or row.capacity <= 0:
            why = ": not scanned yet (r refreshes)"
            path = shorten(printable(pool.path),
                           max(self.content_region.width - len(why), NAME_STUB))
            text.append(path + why, part("pool-summary--muted", partial=True))
            return text
        styles = BarStyles(part("pool-summary--allocated", partial=True),
                           part("pool-summary--committed", partial=True),
                           part("pool-summary--free", partial=True),
                           part("pool-summary--over", partial=True))
        words = capacity_words(row.capacity, row.allocation, row.available, row.committed)
        room = self.content_region.width - len(words) - 1
        if room >= 8:  # the bar only where the words fit beside it (the tree has one too)
            text.append(capacity_bar(row.capacity, row.allocation, row.committed,
                                     min(room, 24), styles))
            text.append(" ")
        text.append(words)
        return text

    def _title(self, entry: PoolEntry) -> Text:
        """``host › pool  N volumes · by name ▲ · seen 2m ago`` in the width there is: the
        sort goes first, then a fresh age if the pool's name would keep less than
        ``NAME_ROOM`` cells, then the name is cut in the middle (a pool named by a long
        path) down to a stub; the rest is cut at the end."""
        part = self.get_component_rich_style
        pool, row = entry.pool, entry.row
        total = row.volumes if row is not None else 0
        if self.filter_text:
            count = f"  {self.shown:,} of {total:,} match “{printable(self.filter_text)}”"
        else:
            count = f"  {self.shown:,} volumes"
        arrow = "▼" if self.descending else "▲"
        sort = f" · by {SORT_LABELS.get(self.sort, self.sort)} {arrow}"
        state = entry.state(self.clock())
        age, age_style = "", "pool-summary--muted"
        if state == "refreshing":
            age, age_style = " · refreshing…", "pool-summary--stale"
        elif row is not None and row.last_seen is not None:
            age = f" · {seen(self.clock() - row.last_seen)}"
            age_style = "pool-summary--stale" if state == "stale" else "pool-summary--muted"
        host = f"{printable(pool.host)} › "
        name = printable(pool.name)
        width = self.content_region.width

        def room(*rest: str) -> int:
            """Cells left for the pool's name beside ``rest``."""
            return width - cell_len(host) - sum(cell_len(r) for r in rest)

        if cell_len(name) > room(count, sort, age):
            sort = ""
            if room(count, age) < NAME_ROOM and age_style == "pool-summary--muted":
                age = ""
            name = shorten(name, max(room(count, age), NAME_STUB))
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(host + name, part("pool-summary--name", partial=True))
        text.append(count)
        text.append(sort, part("pool-summary--muted", partial=True))
        text.append(age, part(age_style, partial=True))
        return text
