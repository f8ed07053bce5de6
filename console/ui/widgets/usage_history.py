"""The pool's usage history: a sparkline of its used space over the recorded refreshes,
and the trend in words ("+2G/day ...: full in 12 days")."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline

from console.cache import Cache, UsageSample
from console.monitoring import trend_words


class UsageHistory(Vertical):
    DEFAULT_CSS = """
    UsageHistory {
        height: 2;
        padding: 0 1;
        background: $panel;
        display: none;
        &.-shown { display: block; }
        & > Horizontal { height: 1; }
        & Label { width: auto; color: $text-muted; }
        & Sparkline { width: 1fr; height: 1; margin-left: 1; }
        & > #trend { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    }
    """

    def __init__(self, cache: Cache, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cache = cache
        self.samples: list[UsageSample] = []

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("used", id="used")
            yield Sparkline([], id="plot")
        yield Label("", id="trend")

    def show(self, key: tuple[str, str] | None) -> None:
        """The history of pool ``key`` (host, pool); hidden with fewer than two samples."""
        samples = self.cache.usage_history(*key) if key is not None else []
        if samples == self.samples:
            return  # nothing new: nothing redrawn
        self.samples = samples
        self.set_class(len(samples) >= 2, "-shown")
        if len(samples) < 2:
            return
        self.query_one(Sparkline).data = [float(s.allocation) for s in samples]
        last = samples[-1]
        self.query_one("#used", Label).update(f"used {100 * last.allocation / last.capacity:.0f}%"
                                              if last.capacity else "used")
        self.query_one("#trend", Label).update(Text(trend_words(samples)))
