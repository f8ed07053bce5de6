"""The alerts panel: pools above a capacity threshold, critical first."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from console.monitoring import Alert, Level
from console.ui.cells import printable
from console.units import format_age


class AlertsPanel(Widget):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "alerts-panel--title",
        "alerts-panel--warning",
        "alerts-panel--critical",
        "alerts-panel--muted",
    }

    DEFAULT_CSS = """
    AlertsPanel {
        height: 1fr;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .alerts-panel--title { text-style: bold; color: $primary; }
        & > .alerts-panel--warning { color: $warning; }
        & > .alerts-panel--critical { color: $error; text-style: bold; }
        & > .alerts-panel--muted { color: $text-muted; }
    }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.alerts: list[Alert] = []

    def show(self, alerts: list[Alert]) -> None:
        if alerts != self.alerts:  # nothing new: nothing redrawn
            self.alerts = alerts
            self.refresh()

    def render(self) -> Text:
        style = self.get_component_rich_style
        text = Text()
        text.append(f"Alerts ({len(self.alerts)})", style("alerts-panel--title"))
        if not self.alerts:
            text.append("\nno pool above its thresholds", style("alerts-panel--muted"))
        now = self.clock()
        for alert in self.alerts[:max(1, self.size.height - 1)]:
            part = "critical" if alert.level == Level.CRITICAL else "warning"
            text.append(f"\n{str(alert.level).upper():8} ", style(f"alerts-panel--{part}"))
            text.append(f"{printable(alert.host)}:{printable(alert.pool)} "
                        f"{100 * alert.used:.0f}% ")
            text.append(format_age(max(0.0, now - alert.since)), style("alerts-panel--muted"))
        return text
