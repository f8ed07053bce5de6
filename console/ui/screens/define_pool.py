"""Define a libvirt pool on a host: a form for dir, fs, netfs, logical and iscsi pools,
or raw XML for any other type.

The form is checked here with the command line's own rules and XML builder
(``backends.drivers.libvirt.poolxml``); libvirt validates the XML again against its
schema when the worker defines it. The new pool is persistent and, unless asked, neither
built nor started. libvirt's "defined" event brings it into the tree.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, TextArea

from backends.contract import StorageError
from backends.drivers.libvirt.poolxml import (
    FORM_TYPES,
    PoolForm,
    check_pool_xml,
    pool_form,
)
from console.inventory import Inventory
from console.ui.cells import printable
from console.ui.messages import OperationFailed
from console.ui.screens.dialog import DialogScreen

RAW_XML = "xml"
TYPE_CHOICES = [(kind, kind) for kind in FORM_TYPES] + [
    ("other type: raw XML", RAW_XML)]
FIELDS = ("target", "device", "source_host", "source_path", "vg")
# (label, placeholder) of each field a type shows; fields not listed are hidden.
LAYOUT: dict[str, dict[str, tuple[str, str]]] = {
    "dir": {"target": ("directory", "/var/lib/libvirt/images2")},
    "fs": {"device": ("device", "/dev/sdb1"), "target": ("mount on", "/srv/pool")},
    "netfs": {"source_host": ("server", "nfs1.example.org"),
              "source_path": ("export", "/exports/vms"), "target": ("mount on", "/srv/nfs")},
    "logical": {"vg": ("VG name", "the pool's name when empty"),
                "device": ("PV device", "/dev/sdc (only to build the VG)")},
    "iscsi": {"source_host": ("portal", "iscsi1.example.org"),
              "source_path": ("target IQN", "iqn.2024-01.org.example:store"),
              "target": ("LUNs in", "/dev/disk/by-path")},
}
XML_EXAMPLE = "<pool type='rbd'>\n  <name>ceph</name>\n  <source>…</source>\n</pool>"


class PoolDefined(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class DefinePoolScreen(DialogScreen[str | None]):
    """Dismissed with the new pool's name, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Define"),
    ]

    DEFAULT_CSS = """
    DefinePoolScreen {
        #fields { grid-size: 2; grid-columns: 11 1fr; height: auto; margin: 1 0 0 0; }
        #fields Select { width: 1fr; }
        #xml { height: 10; display: none; }
        #xml.-shown { display: block; }
        .-hidden { display: none; }
        #start { border: none; padding: 0; height: 1; background: $surface;
                 margin: 1 0 0 0; }
    }
    """

    def __init__(self, inventory: Inventory, host: str, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.host = host
        self.cursor_blink = cursor_blink
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Define a pool on {printable(self.host)}"
            with Grid(id="fields"):
                yield Label("type")
                yield Select(TYPE_CHOICES, value="dir", allow_blank=False, id="type",
                             compact=True)
                yield Label("name", id="l-name")
                yield Input(placeholder="e.g. images2", id="name", compact=True)
                for field in FIELDS:
                    yield Label(field, id=f"l-{field}")
                    yield Input(id=field, compact=True)
            yield TextArea(XML_EXAMPLE, id="xml", show_line_numbers=False)
            yield Checkbox("build and start it now (libvirt makes its directory or VG)",
                           id="start", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Define", id="define", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = self.cursor_blink
        self.query_one("#xml", TextArea).cursor_blink = self.cursor_blink
        self.show_type("dir")
        self.query_one("#name", Input).focus()

    @property
    def kind(self) -> str:
        return str(self.query_one("#type", Select).value)

    @on(Select.Changed, "#type")
    def type_changed(self, event: Select.Changed) -> None:
        self.show_type(str(event.value))

    def show_type(self, kind: str) -> None:
        layout = LAYOUT.get(kind, {})
        for field in FIELDS:
            shown = field in layout
            label = self.query_one(f"#l-{field}", Label)
            entry = self.query_one(f"#{field}", Input)
            label.set_class(not shown, "-hidden")
            entry.set_class(not shown, "-hidden")
            if shown:
                label.update(layout[field][0])
                entry.placeholder = layout[field][1]
        raw = kind == RAW_XML
        for node in (self.query_one("#l-name", Label), self.query_one("#name", Input)):
            node.set_class(raw, "-hidden")
        self.query_one("#xml", TextArea).set_class(raw, "-shown")
        self.show_error("")

    def definition(self) -> PoolForm | str:
        """The form (or raw XML) as filled in, checked; ``StorageError`` says what is
        wrong with it."""
        if self.kind == RAW_XML:
            xml = self.query_one("#xml", TextArea).text
            check_pool_xml(xml)
            return xml
        name = self.query_one("#name", Input).value.strip()
        fields = {field: self.query_one(f"#{field}", Input).value for field in FIELDS
                  if field in LAYOUT[self.kind]}
        form = pool_form(self.kind, name, fields)
        form.to_xml()  # the values' own checks (absolute paths, the name, the port)
        return form

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_submit()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "define":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        if self.busy:
            return
        try:
            definition = self.definition()
        except StorageError as err:
            self.show_error(printable(str(err)))
            return
        self.busy = True
        self.show_error("")
        self.query_one("#define", Button).disabled = True
        self.define(definition, self.query_one("#start", Checkbox).value)

    @work(thread=True, exclusive=True, group="define-pool")
    def define(self, definition: PoolForm | str, start: bool) -> None:
        from backends.drivers.libvirt.driver import LibvirtDriver

        try:
            driver = self.inventory.host_link(self.host).driver("libvirt")
            assert isinstance(driver, LibvirtDriver)
            pool = driver.define_pool(definition)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
            return
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
            return
        if start:
            try:
                driver.start_pool(pool.name, build=True)
            except StorageError as err:  # defined all the same: say so, and close
                self.post_message(OperationFailed(
                    f"defined, but not started: {err}. Close (esc) and start it from "
                    "the palette once the cause is fixed."))
                return
        self.post_message(PoolDefined(pool.name))

    @on(PoolDefined)
    def defined(self, message: PoolDefined) -> None:
        self.dismiss(message.name)

    @on(OperationFailed)
    def failed(self, message: OperationFailed) -> None:
        self.busy = False
        self.query_one("#define", Button).disabled = False
        self.show_error(printable(message.text))
