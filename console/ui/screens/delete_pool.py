"""Delete a libvirt pool's storage (libvirt's pool-delete): its directory, or its volume
group, and every volume in it. Nothing undoes that, so the pool's name must be typed.

The pool must be stopped first (libvirt refuses an active one); the driver also refuses
while a running domain uses a volume of it. libvirt keeps the definition unless
"also undefine it" is ticked. Read-only consoles never offer this, and the driver
refuses it below the UI too.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Static

from backends.contract import StorageError
from backends.model import Pool
from console.inventory import Inventory
from console.ui.cells import printable
from console.ui.messages import OperationFailed
from console.ui.screens.dialog import DialogScreen


class PoolDeleted(Message):
    pass


class DeletePoolScreen(DialogScreen[bool]):
    """Dismissed with True once the storage is deleted, False when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    DeletePoolScreen {
        #dialog { border: round $error; border-title-color: $error; }
        #what { height: auto; margin: 1 0 0 0; }
        #undefine { border: none; padding: 0; height: 1; background: $surface;
                    margin: 1 0 0 0; }
        #confirm { margin: 1 0 0 0; }
    }
    """

    def __init__(self, inventory: Inventory, pool: Pool, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.pool = pool
        self.cursor_blink = cursor_blink
        self.busy = False

    def compose(self) -> ComposeResult:
        pool = self.pool
        where = f"{printable(pool.pool_type or 'libvirt')} pool {printable(pool.name)} " \
                f"on host {printable(pool.host)}"
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Delete pool {printable(pool.name)}"
            yield Static(
                f"Delete the storage of the {where}: {printable(pool.path) or 'its source'} "
                "and every volume in it are destroyed, and nothing brings them back. "
                "libvirt keeps the pool's definition (stopped) unless it is undefined too.",
                id="what")
            yield Checkbox("also undefine it (libvirt forgets the pool)", id="undefine",
                           compact=True)
            yield Input(placeholder="type the pool's name to delete its storage",
                        id="confirm", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Delete", id="delete", variant="error", compact=True,
                             disabled=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        field = self.query_one("#confirm", Input)
        field.cursor_blink = self.cursor_blink
        field.focus()

    @on(Input.Changed, "#confirm")
    def typed(self, event: Input.Changed) -> None:
        self.query_one("#delete", Button).disabled = self.busy or \
            event.value != self.pool.name

    @on(Input.Submitted, "#confirm")
    def submitted(self) -> None:
        self.confirm()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "delete":
            self.confirm()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def confirm(self) -> None:
        if self.busy:
            return
        if self.query_one("#confirm", Input).value != self.pool.name:
            self.show_error(f"type {printable(self.pool.name)} exactly to delete its storage")
            return
        self.busy = True
        self.query_one("#delete", Button).disabled = True
        self.show_error("")
        self.delete(self.query_one("#undefine", Checkbox).value)

    @work(thread=True, exclusive=True, group="delete-pool")
    def delete(self, undefine: bool) -> None:
        from backends.drivers.libvirt.driver import LibvirtDriver

        name = self.pool.name
        try:
            driver = self.inventory.driver(self.pool)
            assert isinstance(driver, LibvirtDriver)
            driver.delete_pool(name)
            if undefine:
                driver.undefine_pool(name)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(
                f"host {self.pool.host!r}, pool {name!r}: {type(err).__name__}: {err}"))
        else:
            self.post_message(PoolDeleted())

    @on(PoolDeleted)
    def deleted(self) -> None:
        self.dismiss(True)

    @on(OperationFailed)
    def failed(self, message: OperationFailed) -> None:
        self.busy = False
        self.query_one("#delete", Button).disabled = \
            self.query_one("#confirm", Input).value != self.pool.name
        self.show_error(printable(message.text))
