"""Create a volume: name, format, size (with units), optional backing volume, and where
the driver can, preallocation (none, falloc, full) and zeroing.

Bad input is reported inside the dialog and nothing typed is lost. Submitting checks
the name on disk and submits a create job (in a thread worker); the dialog closes once
the job is in the journal, and its progress shows in the jobs panel. A refusal (a name
taken, read-only mode) leaves the dialog open with its message.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Select, Static

from backends.contract import Capabilities, StorageError, VolumeExists, VolumeNotFound
from backends.model import ImageFormat, Pool
from console.inventory import Inventory
from console.jobs.journal import JobRecord
from console.jobs.operations import CreateVolume
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.messages import JobSubmitted, OperationFailed
from console.ui.screens.dialog import DialogScreen
from console.units import format_size, parse_size

MAX_BACKINGS = 1000  # a Select is no place for 100,000 names: the first ones by name
NONE = "none"
PREALLOCATIONS = ((f"{NONE}: sparse, space taken as it is written", NONE),
                  ("falloc: blocks reserved now, reading as zeroes", "falloc"),
                  ("full: zeroes written now", "full"))


class CreateVolumeScreen(DialogScreen[JobRecord | None]):
    """Dismissed with the submitted create job, or ``None`` when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Create"),
    ]

    DEFAULT_CSS = """
    CreateVolumeScreen {
        #fields {
            grid-size: 2;
            grid-columns: 9 1fr;
            grid-rows: 1;
            grid-gutter: 0 1;
            height: auto;
            margin: 1 0 0 0;
        }
        #fields Label { color: $text-muted; }
        #size-error { color: $error; height: auto; display: none; }
        #size-error.-shown { display: block; }
        #hint { color: $text-muted; height: auto; margin: 1 0 0 0; }
        LoadingIndicator { height: 1; display: none; }
        LoadingIndicator.-shown { display: block; }
        Checkbox { border: none; padding: 0; height: 1; background: $surface; }
    }
    """

    def __init__(self, inventory: Inventory, runner: Runner, pool: Pool,
                 capabilities: Capabilities, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.runner = runner
        self.pool = pool
        self.capabilities = capabilities
        self.cursor_blink = cursor_blink
        self.busy = False
        self.backing_count = 0

    def compose(self) -> ComposeResult:
        formats = [(str(f), str(f)) for f in self.capabilities.create_formats] \
            or [(str(ImageFormat.RAW), str(ImageFormat.RAW))]
        default = str(ImageFormat.QCOW2) if (str(ImageFormat.QCOW2), str(ImageFormat.QCOW2)) \
            in formats else formats[0][1]
        backings = self.backing_options()
        self.backing_count = len(backings)
        with Vertical(id="dialog") as dialog:
            dialog.border_title = (f"Create a volume in {printable(self.pool.host)} › "
                                   f"{printable(self.pool.name)}")
            with Grid(id="fields"):
                yield Label("name")
                yield Input(placeholder="e.g. vm1.qcow2", id="name", compact=True)
                yield Label("format")
                yield Select(formats, value=default, allow_blank=False, id="format",
                             compact=True)
                yield Label("size")
                yield Input(placeholder="e.g. 10G, 512M, 1.5T (binary units)", id="size",
                            compact=True)
                yield Label("backing")
                yield Select(backings, prompt="none", id="backing", compact=True,
                             disabled=not backings or not self.capabilities.backing)
                yield Label("prealloc")
                yield Select(PREALLOCATIONS, value=NONE, allow_blank=False,
                             id="preallocation", compact=True,
                             disabled=not self.capabilities.preallocate)
                yield Label("")
                yield Checkbox("zero: write the zeroes for real (falloc becomes full)",
                               id="zero", compact=True, disabled=True)
            yield Static("", id="size-error")
            yield Static(self.hint(len(backings)), id="hint")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Create", id="create", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def hint(self, backings: int) -> str:
        words = "A backing volume makes a qcow2 overlay; leave the size empty to use " \
                "the backing's."
        if backings >= MAX_BACKINGS:
            words += f" Backing choices: the first {MAX_BACKINGS} volumes by name."
        return words + " ctrl+s creates (a job: see the jobs panel), esc cancels."

    def backing_options(self) -> list[tuple[str, str]]:
        rows = self.inventory.cache.volume_page(self.pool.host, self.pool.name,
                                                limit=MAX_BACKINGS)
        return [(f"{printable(r.name)}  ({r.format}, {format_size(r.capacity)})", r.name)
                for r in rows if r.health != "broken"]

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = self.cursor_blink
        self.query_one("#name", Input).focus()
        self.format_changed()

    @on(Select.Changed, "#preallocation")
    def preallocation_changed(self) -> None:
        zero = self.query_one("#zero", Checkbox)
        zero.disabled = self.busy or self.preallocation() is None
        if zero.disabled:
            zero.value = False

    def preallocation(self) -> str | None:
        if not self.capabilities.preallocate:
            return None
        value = str(self.query_one("#preallocation", Select).value)
        return None if value == NONE else value

    @on(Select.Changed, "#format")
    def format_changed(self) -> None:
        qcow2 = self.query_one("#format", Select).value == str(ImageFormat.QCOW2)
        backing = self.query_one("#backing", Select)
        backing.disabled = self.busy or not (qcow2 and self.capabilities.backing
                                             and self.backing_count > 0)
        if backing.disabled:
            backing.clear()

    # -- submit -----------------------------------------------------------------------

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def action_submit(self) -> None:
        if self.busy:
            return
        self.show_error("", line="size-error")
        self.show_error("")
        name = self.query_one("#name", Input).value
        size_text = self.query_one("#size", Input).value
        fmt = ImageFormat(str(self.query_one("#format", Select).value))
        chosen = self.query_one("#backing", Select).value
        backing = chosen if isinstance(chosen, str) and fmt == ImageFormat.QCOW2 else None
        if not name.strip():
            self.show_error("name: enter a name for the new volume")
            self.query_one("#name", Input).focus()
            return
        capacity = 0
        if size_text.strip():
            try:
                capacity = parse_size(size_text)
            except ValueError as err:
                self.show_error(f"size: {err}", line="size-error")
                self.query_one("#size", Input).focus()
                return
            if capacity <= 0:
                self.show_error("size: must be larger than 0", line="size-error")
                self.query_one("#size", Input).focus()
                return
        elif backing is None:
            self.show_error("size: enter a size such as 10G (or choose a backing volume)",
                            line="size-error")
            self.query_one("#size", Input).focus()
            return
        preallocation = self.preallocation()
        if preallocation is not None and capacity == 0:
            self.show_error("size: a preallocated volume needs a size", line="size-error")
            self.query_one("#size", Input).focus()
            return
        self.set_busy(True)
        self.create(CreateVolume(self.pool.host, self.pool.name, name, format=str(fmt),
                                 capacity=capacity, backing=backing,
                                 preallocation=preallocation,
                                 zero=self.query_one("#zero", Checkbox).value))

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        for widget in self.query("Input, Select, Checkbox, Button"):
            widget.disabled = busy
        self.query_one(LoadingIndicator).set_class(busy, "-shown")
        if not busy:
            self.format_changed()
            self.query_one("#preallocation", Select).disabled = \
                not self.capabilities.preallocate
            self.preallocation_changed()

    @work(thread=True, exclusive=True, group="create")
    def create(self, op: CreateVolume) -> None:
        name = op.volume
        try:
            try:  # the job would fail on a taken name: say so while the dialog is open
                self.inventory.probe_volume(self.pool.host, self.pool.name, name)
            except VolumeNotFound:
                pass
            else:
                raise VolumeExists("a file with that name already exists", host=self.pool.host,
                                   pool=self.pool.name, volume=name,
                                   hint="choose another name")
            job = self.runner.submit(op)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(JobSubmitted(job))

    @on(OperationFailed)
    def failed(self, message: OperationFailed) -> None:
        self.set_busy(False)
        self.show_error(message.text)
        self.query_one("#name", Input).focus()

    @on(JobSubmitted)
    def submitted(self, message: JobSubmitted) -> None:
        self.dismiss(message.job)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self.busy:
            self.dismiss(None)
