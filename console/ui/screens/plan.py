"""The plan a confirmation shows before a job is submitted: the commands the operation
will run and the space it will reserve, next to what the pool has free.

``read_plan`` may probe the disk (and run ``qemu-img measure``): ``PlanDialog`` calls it
in a thread worker. Its primary button first reads the plan and shows it, then submits
the job; any edit of the fields takes the plan back.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, LoadingIndicator, Static

from backends.contract import StorageError
from backends.model import Pool, Volume
from console.cache import VolumeRow
from console.jobs.journal import JobRecord
from console.jobs.operations import Operation
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.messages import JobSubmitted, OperationFailed
from console.ui.screens.dialog import DialogScreen
from console.units import format_size


@dataclass(frozen=True)
class Plan:
    op: Operation
    commands: tuple[tuple[str, ...], ...]
    pool: str  # where the space is reserved
    need: int
    available: int | None  # the pool's free bytes; None when it could not be read
    reserved: int  # by other jobs in that pool

    @property
    def fits(self) -> bool:
        return self.available is None or self.need <= self.available - self.reserved


class PlanReady(Message):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan


def read_plan(runner: Runner, op: Operation) -> Plan:
    """Ask ``op`` for its commands and space (blocking: probes, may run qemu-img)."""
    inventory = runner.inventory
    commands = tuple(tuple(argv) for argv in op.commands(inventory))
    pool_name, need = op.space(inventory)
    available: int | None = None
    try:
        pool = inventory.pool(op.host, pool_name)
        available = inventory.driver(pool).pool_capacity(pool).available
    except (KeyError, StorageError):
        pass
    reserved = runner.reservations.reserved(op.host, pool_name)
    return Plan(op, commands, pool_name, need, available, reserved)


def plan_text(plan: Plan, *, fallback: str = "",
              notes: Sequence[tuple[str, str]] = ()) -> Table:
    """What the plan does, for the dialog: ``runs``, ``space`` and ``notes`` rows, their
    text wrapping under itself."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    runs = "\n".join(printable(shlex.join(argv)) for argv in plan.commands) \
        or fallback or "no command"
    table.add_row("runs", runs)
    pool = printable(plan.pool)
    space = Text(f"reserves {format_size(plan.need)} in {pool}" if plan.need > 0
                 else f"reserves nothing in {pool}")
    if plan.available is not None:
        space.append(f" ({format_size(plan.available)} free")
        if plan.reserved:
            space.append(f", {format_size(plan.reserved)} reserved by other jobs")
        space.append(")")
    if not plan.fits:
        space.append("; it does not fit: the job would be refused", style="bold")
    table.add_row("space", space)
    for label, text in notes:
        table.add_row(label, text)
    return table


class PlanDialog(DialogScreen[JobRecord | None]):
    """A dialog whose primary button first asks for the plan, then submits it.

    Subclasses compose ``#plan``, ``#error``, ``#primary`` and a ``LoadingIndicator``,
    and implement ``operation`` (the op for the fields, or None after showing why) and
    ``check`` (blocking checks in the plan's worker). ``VolumePlanDialog`` acts on one
    volume; this base only on a pool (a restore makes its volume)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Plan / submit"),
    ]

    DEFAULT_CSS = """
    PlanDialog {
        #fields {
            grid-size: 2;
            grid-columns: 12 1fr;
            grid-rows: 1;
            grid-gutter: 0 1;
            height: auto;
            margin: 1 0 0 0;
        }
        #fields Label { color: $text-muted; }
        #what { height: auto; margin: 1 0 0 0; }
        #plan { height: auto; margin: 1 0 0 0; padding: 0 1; background: $panel;
                display: none; }
        #plan.-shown { display: block; }
        LoadingIndicator { height: 1; display: none; }
        LoadingIndicator.-shown { display: block; }
        Checkbox { border: none; padding: 0; height: 1; background: $surface; }
    }
    """

    VERB: ClassVar[str] = "Submit"

    def __init__(self, runner: Runner, pool: Pool, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.runner = runner
        self.pool = pool
        self.cursor_blink = cursor_blink
        self.plan: Plan | None = None
        self.busy = False

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = self.cursor_blink
        self.focus_first()

    def focus_first(self) -> None:
        """The first field, or the primary button in a dialog without fields."""
        fields = self.query(Input)
        if fields:
            first = fields.first()
            first.focus()
            first.cursor_position = len(first.value)
        else:
            self.query_one("#primary", Button).focus()

    def operation(self) -> Operation | None:
        raise NotImplementedError

    def check(self, op: Operation) -> None:
        """Blocking checks before the plan (in the worker); raise ``StorageError``."""

    def invalidate(self) -> None:
        """The fields changed: the plan shown is not theirs any more."""
        if self.plan is not None:
            self.plan = None
            self.query_one("#plan", Static).remove_class("-shown")
            self.query_one("#primary", Button).label = "Plan"

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def edited(self) -> None:
        self.invalidate()
        self.show_error("")

    @on(Input.Submitted)
    @on(Button.Pressed, "#primary")
    def action_submit(self) -> None:
        if self.busy:
            return
        self.show_error("")
        if self.plan is not None:
            self.set_busy(True)
            self.submit(self.plan)
            return
        op = self.operation()
        if op is None:
            return
        self.set_busy(True)
        self.make_plan(op)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        for widget in self.query("Input, Select, Checkbox, Button"):
            widget.disabled = busy
        self.query_one(LoadingIndicator).set_class(busy, "-shown")

    @work(thread=True, exclusive=True, group="plan")
    def make_plan(self, op: Operation) -> None:
        try:
            self.check(op)
            plan = read_plan(self.runner, op)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(PlanReady(plan))

    def fallback(self) -> str:
        return ""

    @on(PlanReady)
    def plan_ready(self, message: PlanReady) -> None:
        self.set_busy(False)
        self.plan = message.plan
        box = self.query_one("#plan", Static)
        box.update(plan_text(message.plan, fallback=self.fallback(), notes=self.notes()))
        box.add_class("-shown")
        primary = self.query_one("#primary", Button)
        primary.label = self.VERB
        primary.focus()

    def notes(self) -> list[tuple[str, str]]:
        """More rows for the plan: (label, text)."""
        return []

    @work(thread=True, exclusive=True, group="plan")
    def submit(self, plan: Plan) -> None:
        try:
            job = self.runner.submit(plan.op)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(JobSubmitted(job))

    @on(OperationFailed)
    def failed(self, message: OperationFailed) -> None:
        self.set_busy(False)
        self.invalidate()
        self.show_error(message.text)
        self.focus_first()

    @on(JobSubmitted)
    def submitted(self, message: JobSubmitted) -> None:
        self.dismiss(message.job)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self.busy:
            self.dismiss(None)


def volume_summary(volume: VolumeRow | Volume) -> str:
    """``name: format, capacity virtual, allocation allocated``: what a dialog is about."""
    return (f"{printable(volume.name)}: {volume.format}, {format_size(volume.capacity)} "
            f"virtual, {format_size(volume.allocation)} allocated")


class VolumePlanDialog(PlanDialog):
    """A plan dialog for an operation on one volume (the one selected)."""

    def __init__(self, runner: Runner, pool: Pool, volume: VolumeRow, *,
                 cursor_blink: bool = True) -> None:
        super().__init__(runner, pool, cursor_blink=cursor_blink)
        self.volume = volume

    def host_pools(self) -> list[Pool]:
        """The pools a result may go to: those of the volume's host."""
        return [p for p in self.runner.inventory.pools() if p.host == self.pool.host]
