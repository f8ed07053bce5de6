"""The selected volume: its backing chain as a tree (leaf first), its health reasons, and
the last fix attempted on it (from the journal: host, stage X/Y, percent, last error)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

from rich.text import Span, Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.cache import VolumeRow
from console.jobs.journal import JobRecord
from console.ui.cells import printable, seen
from console.units import format_size

PROBLEM_WORDS = {
    "missing": "missing",
    "loop": "loops back",
    "escape": "outside the allowed roots",
    "not-regular": "not a regular file",
    "undeclared-format": "no declared format: not followed",
    "unreadable": "unreadable",
    "too-deep": "too deep: not followed further",
}


class VolumeDetail(VerticalScroll, can_focus=True):
    HELP_ORDER: ClassVar[int] = 3
    HELP_TITLE: ClassVar[str] = "Details (focused with tab)"

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "volume-detail--name",
        "volume-detail--muted",
        "volume-detail--optimized",
        "volume-detail--degraded",
        "volume-detail--broken",
        "volume-detail--problem",
        "volume-detail--snapshot",
        "volume-detail--in-use",
        "volume-detail--guide",
    }

    DEFAULT_CSS = """
    VolumeDetail {
        height: 40%;
        min-height: 6;
        background: $surface;
        border-top: solid $panel;
        padding: 0 1;
        scrollbar-size-vertical: 1;
        &:focus { border-top: solid $primary; }
        & > Static { width: 1fr; }
        & > .volume-detail--name { text-style: bold; }
        & > .volume-detail--muted { color: $text-muted; }
        & > .volume-detail--guide { color: $text-muted; }
        & > .volume-detail--optimized { color: $success; }
        & > .volume-detail--degraded { color: $warning; }
        & > .volume-detail--broken { color: $error; text-style: bold; }
        & > .volume-detail--problem { color: $error; text-style: bold underline; }
        & > .volume-detail--snapshot { color: $accent; }
        & > .volume-detail--in-use { color: $warning; text-style: bold; }
    }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.volume: VolumeRow | None = None
        self.pool_path = ""
        self.last_fix: JobRecord | None = None
        self._look: tuple[str, list[Span]] | None = None  # the text as last painted

    def compose(self) -> ComposeResult:
        yield Static(id="detail-body")

    def on_mount(self) -> None:
        self.show(None)

    def show(self, volume: VolumeRow | None, pool_path: str = "",
             last_fix: JobRecord | None = None) -> None:
        self.volume = volume
        self.pool_path = pool_path
        self.last_fix = last_fix
        self._paint(self.describe())
        self.scroll_home(animate=False)

    def show_last_fix(self, last_fix: JobRecord | None) -> None:
        """The same volume, its last fix moved on: repainted where it is scrolled."""
        if last_fix != self.last_fix:
            self.last_fix = last_fix
            self._paint(self.describe())

    def repaint_changed(self) -> None:
        """A clock tick: repaint only when the words moved on ("seen 2m ago"); the
        terminal then gets only the changed cells (console/ui/wire.py)."""
        text = self.describe()
        if (text.plain, text.spans) != self._look:
            self._paint(text)

    def _paint(self, text: Text) -> None:
        self._look = (text.plain, list(text.spans))
        self.query_one("#detail-body", Static).update(text)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted:
            self._paint(self.describe())

    def _where(self, path: str) -> str:
        """``path`` relative to the pool when it is inside it."""
        if self.pool_path and os.path.dirname(path) == self.pool_path.rstrip("/"):
            return printable(os.path.basename(path))
        return printable(path)

    def describe(self) -> Text:
        part = self.get_component_rich_style
        muted = part("volume-detail--muted", partial=True)
        text = Text(end="")
        row = self.volume
        if row is None:
            text.append("no volume selected", muted)
            return text
        health = part(f"volume-detail--{row.health}", partial=True,
                      default=muted)
        guide = part("volume-detail--guide", partial=True)
        if row.readonly:
            text.append("◆ ", part("volume-detail--snapshot", partial=True))
        text.append(printable(row.name), part("volume-detail--name", partial=True))
        text.append(f"  {row.format} · {format_size(row.capacity)} virtual · "
                    f"{format_size(row.allocation)} allocated", muted)
        if row.readonly:
            text.append(" · snapshot (read-only)", part("volume-detail--snapshot",
                                                         partial=True))
        if row.in_use:
            text.append(" · in use by a running QEMU", part("volume-detail--in-use",
                                                             partial=True))
        text.append(f" · {seen(self.clock() - row.last_seen)}\n", muted)
        if row.used_by:
            text.append("used by ", muted)
            for i, (domain, running) in enumerate(row.used_by):
                text.append(", " if i else "", muted)
                text.append(printable(domain), part("volume-detail--in-use", partial=True)
                            if running else muted)
                text.append(" (running)" if running else " (defined)", muted)
            text.append("\n")

        text.append(f"chain, leaf first ({row.chain_depth} "
                    f"image{'s' if row.chain_depth != 1 else ''}):\n", muted)
        text.append("● ", health)
        text.append(printable(row.name))
        text.append(f"  {row.format} · {format_size(row.capacity)}\n", muted)
        depth = 0
        for depth, link in enumerate(row.chain, start=1):
            text.append("   " * (depth - 1) + "└─ ", guide)
            text.append(self._where(link.path))
            text.append(f"  {link.format} · {format_size(link.capacity)}\n", muted)
        if row.chain_problem:
            problem = part("volume-detail--problem", partial=True)
            text.append("   " * depth + "└─ ", guide)
            text.append(f"✗ {PROBLEM_WORDS.get(row.chain_problem, row.chain_problem)}: ",
                        part("volume-detail--broken", partial=True))
            text.append(printable(row.chain_problem_path or "?"), problem)
            text.append("\n")

        text.append("health: ", muted)
        text.append(row.health, health)
        text.append("\n")
        for reason in row.reasons:
            text.append("  • ", health)
            text.append(printable(reason) + "\n")
        text.append("path: ", muted)
        text.append(printable(row.path))
        if self.last_fix is not None:
            self._describe_fix(text, self.last_fix)
        return text

    def _describe_fix(self, text: Text, job: JobRecord) -> None:
        part = self.get_component_rich_style
        muted = part("volume-detail--muted", partial=True)
        text.append("\nlast fix: ", muted)
        text.append(f"job {job.id} {job.params.get('code', '?')} ({job.state})")
        where = f" · host {printable(job.host)} · stage {job.stage}/{job.stages}"
        if job.stage_label:
            where += f" {job.stage_label}"
        if job.percent >= 0:
            where += f" · {job.percent:.0f}%"
        text.append(where, muted)
        if job.error:
            text.append("\n  last error: ", muted)
            text.append(printable(job.error), part("volume-detail--broken", partial=True))
