"""The monitoring strip of the read-only console: the alerts panel beside the events log.

A thread worker polls a ``Monitor`` (the cache and the shared journal, never a host)
every ``POLL_EVERY`` seconds and posts only what changed; a threshold crossing is also a
notification, once per crossing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.worker import get_current_worker

from console.cache import Cache
from console.config import Thresholds
from console.jobs.journal import Journal
from console.monitoring import Monitor, MonitorUpdate
from console.ui.widgets.alerts_panel import AlertsPanel
from console.ui.widgets.events_log import EventsLog


class MonitorPolled(Message):
    """A poll found something new (or is the first)."""

    def __init__(self, update: MonitorUpdate) -> None:
        super().__init__()
        self.update = update


class MonitorPanel(Horizontal):
    """Args:
        cache: What refreshes found.
        thresholds: A pool's limits by (host, pool).
        journal: The shared journal's file; None: no job events.
        clock: Seconds since the epoch (fixed in tests).
    """

    POLL_EVERY: ClassVar[float] = 2.0  # seconds; the cache and journal are local reads

    DEFAULT_CSS = """
    MonitorPanel {
        height: 7;
        border-top: hkey $panel;
        & > AlertsPanel { width: 2fr; }
        & > EventsLog { width: 3fr; border-left: vkey $panel; }
    }
    """

    def __init__(self, cache: Cache, thresholds: Callable[[str, str], Thresholds], *,
                 journal: Journal | None, clock: Callable[[], float],
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.monitor = Monitor(cache, thresholds, journal=journal)
        self.clock = clock
        self.polls = 0  # polls shown: tests wait on it
        self.wake = threading.Event()

    def compose(self) -> ComposeResult:
        yield AlertsPanel(clock=self.clock, id="alerts")
        yield EventsLog(id="events")

    def on_mount(self) -> None:
        self.watch_monitor()

    def poll_now(self) -> None:
        """Look again at once (after a refresh) instead of at the next tick."""
        self.wake.set()

    @work(thread=True, exclusive=True, group="monitor")
    def watch_monitor(self) -> None:
        worker = get_current_worker()
        first = True
        try:
            while not worker.is_cancelled:
                try:
                    update = self.monitor.poll(self.clock())
                except Exception as err:  # the cache or journal unreadable: say so, go on
                    update = MonitorUpdate([], [], [], f"monitoring: {type(err).__name__}: "
                                           f"{err}")
                if first or update.changes or update.events or update.error:
                    self.post_message(MonitorPolled(update))
                first = False
                self.wake.wait(self.POLL_EVERY)
                self.wake.clear()
        finally:
            self.monitor.cache.db.close_thread()
            if self.monitor.journal is not None:
                self.monitor.journal.db.close_thread()

    def on_unmount(self) -> None:
        self.wake.set()  # the worker is cancelled with the widget: let it see that

    @on(MonitorPolled)
    def polled(self, message: MonitorPolled) -> None:
        update = message.update
        self.query_one(AlertsPanel).show(update.alerts)
        if update.events or self.polls == 0:
            self.query_one(EventsLog).show(self.monitor.log.events())
        for change in update.changes:
            self.notify(change.text, title=f"pool {change.pool}: {change.after}",
                        severity=change.severity, timeout=10 if change.raised else 5)
        if update.error:
            self.notify(update.error, title="monitoring", severity="error", timeout=10)
        self.polls += 1
