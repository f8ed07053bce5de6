"""The events log: hosts down and back, jobs of every console, health changes and
threshold crossings, newest first, each with its time."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from console.monitoring import Event
from console.ui.cells import printable


class EventsLog(Widget):
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
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .events-log--title { text-style: bold; color: $primary; }
        & > .events-log--time { color: $text-muted; }
        & > .events-log--warning { color: $warning; }
        & > .events-log--error { color: $error; }
        & > .events-log--muted { color: $text-muted; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.events: list[Event] = []

    def show(self, events: list[Event]) -> None:
        """``events``: the whole log, newest first (the monitor keeps it bounded)."""
        self.events = events
        self.refresh()

    def render(self) -> Text:
        style = self.get_component_rich_style
        text = Text()
        text.append("Events", style("events-log--title"))
        if not self.events:
            text.append("\nnothing has happened since the console opened",
                        style("events-log--muted"))
        for event in self.events[:max(1, self.size.height - 1)]:
            text.append("\n" + time.strftime("%H:%M:%S ", time.localtime(event.at)),
                        style("events-log--time"))
            part = {"warning": "events-log--warning", "error": "events-log--error"}
            text.append(printable(event.text),
                        style(part[event.severity]) if event.severity in part else "")
        return text
