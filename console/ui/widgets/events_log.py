"""The events log: hosts down and back, jobs of every console, health changes and
threshold crossings, each with its time, oldest at the top as a log reads.

It follows new events (stays at the bottom) unless the user scrolled up to read older
ones; scrolling back to the bottom (end, G) follows again. A Line-API ScrollView: only
the lines in sight are drawn, under a title line that stays put.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.monitoring import Event
from console.ui.cells import printable

SEVERITY_PART = {"warning": "events-log--warning", "error": "events-log--error"}


class EventsLog(ScrollView, can_focus=True):
    HELP_ORDER: ClassVar[int] = 6
    HELP_TITLE: ClassVar[str] = "Events log (monitor, focused with tab)"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "older", "Scroll to older events", show=False),
        Binding("down,j", "newer", "Scroll to newer events", show=False),
        Binding("pageup,ctrl+b", "older_page", "A page of older events", show=False),
        Binding("pagedown,ctrl+f", "newer_page", "A page of newer events", show=False),
        Binding("home,g", "oldest", "The oldest event", show=False),
        Binding("end,G", "newest", "The newest event (and follow new ones)", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "events-log--title",
        "events-log--time",
        "events-log--warning",
        "events-log--error",
        "events-log--muted",
    }

    DEFAULT_CSS = """
    EventsLog {
        height: 1fr;
        padding: 0 1;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        & > .events-log--title { text-style: bold; color: $primary; }
        &:focus > .events-log--title { text-style: bold reverse; }
        & > .events-log--time { color: $text-muted; }
        & > .events-log--warning { color: $warning; }
        & > .events-log--error { color: $error; }
        & > .events-log--muted { color: $text-muted; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.events: list[Event] = []  # newest first, as the monitor keeps them
        self._lines: list[Event] = []  # oldest first, as they are shown

    @property
    def following(self) -> bool:
        """At the bottom: a new event scrolls into sight."""
        return round(self.scroll_y) >= self.max_scroll_y

    def show(self, events: list[Event]) -> None:
        """``events``: the whole log, newest first (the monitor keeps it bounded)."""
        following = self.following
        top = round(self.scroll_y)
        read = self._lines[top] if not following and top < len(self._lines) else None
        self.events = events
        self._lines = events[::-1]
        # The title is line 0 of the virtual lines, so scrolling to the end leaves it on
        # top: the last event then sits on the widget's last line.
        self.virtual_size = Size(1, len(self._lines) + 1)
        if following:
            self.scroll_end(animate=False, x_axis=False)  # after the layout grew
        elif read is not None:
            # A full log drops its oldest: the event read on top stays there.
            moved = next((i for i, event in enumerate(self._lines) if event is read), 0)
            if moved != top:
                self.scroll_to(y=moved, animate=False)
        self.refresh()

    # -- keys -------------------------------------------------------------------------

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)  # the title stays

    def action_older(self) -> None:
        self.scroll_to(y=self.scroll_y - 1, animate=False)

    def action_newer(self) -> None:
        self.scroll_to(y=self.scroll_y + 1, animate=False)

    def action_older_page(self) -> None:
        self.scroll_to(y=self.scroll_y - self._page, animate=False)

    def action_newer_page(self) -> None:
        self.scroll_to(y=self.scroll_y + self._page, animate=False)

    def action_oldest(self) -> None:
        self.scroll_home(animate=False, x_axis=False)

    def action_newest(self) -> None:
        self.scroll_end(animate=False, x_axis=False)

    # -- painting ---------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._strip(Text("Events", self._part("events-log--title")), width, base)
        if not self._lines:
            if y == 1:
                return self._strip(Text("nothing has happened since the console opened",
                                        self._part("events-log--muted")), width, base)
            return Strip.blank(width, base)
        index = round(self.scroll_y) + y - 1
        if not 0 <= index < len(self._lines):
            return Strip.blank(width, base)
        event = self._lines[index]
        text = Text(time.strftime("%H:%M:%S ", time.localtime(event.at)),
                    self._part("events-log--time"))
        part = SEVERITY_PART.get(event.severity)
        text.append(printable(event.text), self._part(part) if part else Style())
        return self._strip(text, width, base)

    def _part(self, name: str) -> Style:
        full = self.get_component_rich_style(name)
        return Style(color=full.color, bold=full.bold, reverse=full.reverse)

    def _strip(self, text: Text, width: int, base: Style) -> Strip:
        text.truncate(width, overflow="ellipsis", pad=True)
        segments = [Segment(s.text, base + s.style if s.style else base)
                    for s in text.render(self.app.console)]
        return Strip(segments, width).crop(0, width)
