"""Resize a volume: the new size (or +size), a shrink checkbox, then the plan.

The first Enter checks the input and reads the plan from disk in a worker (the
``qemu-img resize`` it will run, the space it reserves); the dialog shows it and its
button turns into "Resize". The second Enter submits the job; any edit asks for a new
plan first. Progress shows in the jobs panel once the dialog has closed.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Static

from backends.contract import InvalidRequest
from console.jobs.operations import Operation, ResizeVolume
from console.ui.cells import printable
from console.ui.screens.plan import VolumePlanDialog, volume_summary
from console.units import format_size, parse_size

NOTES = ("refused while a running QEMU has the volume open; a shrink never cuts an "
         "ext2/3/4 file system that starts the image")


class ResizeVolumeScreen(VolumePlanDialog):
    """Dismissed with the submitted job, or ``None`` when cancelled."""

    VERB = "Resize"

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Resize {printable(v.name)}"
            yield Static(volume_summary(v), id="what")
            with Grid(id="fields"):
                yield Label("new size")
                yield Input(placeholder="e.g. 30G, or +10G to grow by 10G", id="size",
                            compact=True)
                yield Label("")
                yield Checkbox("shrink: allow a smaller size (cuts off the end)",
                               id="shrink", compact=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def operation(self) -> ResizeVolume | None:
        text = self.query_one("#size", Input).value.strip()
        relative = text.startswith("+")
        try:
            size = parse_size(text[1:] if relative else text)
        except ValueError as err:
            self.show_error(f"size: {err}")
            return None
        if size <= 0:
            self.show_error("size: must be larger than 0")
            return None
        capacity = self.volume.capacity + size if relative else size
        shrink = self.query_one("#shrink", Checkbox).value
        return ResizeVolume(self.pool.host, self.pool.name, self.volume.name,
                            capacity=capacity, shrink=shrink)

    def check(self, op: Operation) -> None:
        assert isinstance(op, ResizeVolume)
        where = {"host": op.host, "pool": op.pool, "volume": op.volume}
        current = self.runner.inventory.probe_volume(op.host, op.pool, op.volume).capacity
        if op.capacity == current:
            raise InvalidRequest(f"it is {format_size(current)} already", **where)
        if op.capacity < current and not op.shrink:
            raise InvalidRequest(
                f"{format_size(op.capacity)} is smaller than its {format_size(current)}",
                **where, hint="tick shrink if you mean to cut off its end")

    def notes(self) -> list[tuple[str, str]]:
        plan = self.plan
        rows = []
        if plan is not None and isinstance(plan.op, ResizeVolume):
            rows.append(("to", f"{format_size(plan.op.capacity)} ({plan.op.capacity} bytes)"
                               f", from {format_size(self.volume.capacity)}"))
        return [*rows, ("note", NOTES)]
