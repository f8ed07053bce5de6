"""Add a host: its name and URI, checked here, written to config.toml by the caller
(in a worker: a file write does not belong on the event loop)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from console.hosts import uri_kind
from console.ui.screens.dialog import DialogScreen

EXAMPLES = ("ssh://root@host:22 (dir and LVM pools over SSH; add pools in config.toml), "
            "qemu:///system or qemu+ssh://root@host/system (every libvirt pool)")


class AddHostScreen(DialogScreen[tuple[str, str] | None]):
    """Dismissed with (name, uri), or ``None`` when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    AddHostScreen {
        #fields { grid-size: 2; grid-columns: 6 1fr; height: auto; margin: 1 0 0 0; }
        #examples { color: $text-muted; height: auto; }
    }
    """

    def __init__(self, taken: set[str]) -> None:
        super().__init__()
        self.taken = taken

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Add a host"
            with Grid(id="fields"):
                yield Label("name")
                yield Input(placeholder="e.g. store1", id="name", compact=True)
                yield Label("uri")
                yield Input(placeholder="ssh://root@store1", id="uri", compact=True)
            yield Static(EXAMPLES, id="examples")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Add", id="add", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "name":
            self.query_one("#uri", Input).focus()
        else:
            self.add()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add":
            self.add()
        else:
            self.dismiss(None)

    def add(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        uri = self.query_one("#uri", Input).value.strip()
        if not name or any(c in name for c in ":/ ") or not name.isprintable():
            self.show_error("name: letters, digits, '-', '_' or '.'")
            return
        if name in self.taken:
            self.show_error(f"name: there is already a host {name!r}")
            return
        try:
            uri_kind(uri)
        except ValueError as err:
            self.show_error(f"uri: {err}")
            return
        self.dismiss((name, uri))
