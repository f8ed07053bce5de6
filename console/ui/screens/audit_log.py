"""The audit log: every command the console (and the command line) ran on every host,
newest first. Read in a thread worker; esc closes."""

from __future__ import annotations

import datetime
import shlex
import sqlite3
from pathlib import Path
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from console.audit import AuditEntry, AuditLog
from console.ui.cells import printable

AUDIT_LIMIT = 1000  # newest entries shown


class AuditRead(Message):
    def __init__(self, entries: list[AuditEntry] | None, error: str = "") -> None:
        super().__init__()
        self.entries = entries
        self.error = error


def status_text(returncode: int) -> Text:
    if returncode == 0:
        return Text("ok")
    if returncode < 0:
        return Text(f"signal {-returncode}", style="bold")
    return Text(f"exit {returncode}", style="bold")


def audit_table(entries: list[AuditEntry]) -> Table:
    table = Table.grid(padding=(0, 1))
    for name in ("when", "who", "host", "status", "took"):
        table.add_column(name, no_wrap=True)
    table.add_column("command")
    table.add_row(*(Text(h, style="bold") for h in
                    ("when", "who", "host", "status", "took", "command")))
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry.when).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, printable(entry.who), printable(entry.host),
                      status_text(entry.returncode), f"{entry.duration:.2f}s",
                      printable(shlex.join(entry.argv)))
    return table


class AuditScreen(ModalScreen[None]):
    """Args:
        path: The audit log's file (the journal's).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
    ]

    DEFAULT_CSS = """
    AuditScreen {
        align: center middle;
        #audit {
            width: 100%;
            max-width: 160;
            height: auto;
            max-height: 100%;
            background: $surface;
            border: round $primary;
            border-title-color: $primary;
            border-title-style: bold;
            border-subtitle-color: $text-muted;
            padding: 0 1;
            scrollbar-size-vertical: 1;
        }
    }
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.entries: list[AuditEntry] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="audit") as box:
            box.border_title = "Audit log: every command run, newest first"
            box.border_subtitle = "esc closes · ↑↓ PgUp PgDn scroll"
            yield Static("reading the audit log…", id="entries")

    def on_mount(self) -> None:
        self.query_one("#audit").focus()
        self.read_entries()

    @work(thread=True, exclusive=True, group="audit")
    def read_entries(self) -> None:
        try:
            log = AuditLog(self.path)
            try:
                entries = log.entries(limit=AUDIT_LIMIT)
            finally:
                log.db.close_thread()
        except (sqlite3.Error, OSError) as err:
            self.post_message(AuditRead(None, f"cannot read the audit log {self.path}: {err}"))
        else:
            self.post_message(AuditRead(entries))

    @on(AuditRead)
    def entries_read(self, message: AuditRead) -> None:
        self.entries = message.entries
        target = self.query_one("#entries", Static)
        if message.entries is None:
            target.update(Text(message.error, style="bold"))
        elif not message.entries:
            target.update("no command recorded yet")
        else:
            target.update(audit_table(message.entries))
            if len(message.entries) >= AUDIT_LIMIT:
                self.query_one("#audit").border_subtitle = \
                    f"the newest {AUDIT_LIMIT} · esc closes · ↑↓ PgUp PgDn scroll"

    def action_close(self) -> None:
        self.dismiss(None)
