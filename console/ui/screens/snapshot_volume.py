"""Snapshot a disk, and clone a new disk from a snapshot.

Both follow the plan pattern of resize and copy: the first Enter (or ctrl+s) reads the
plan in a worker (the commands, the space), the second submits the job.
"""

from __future__ import annotations

import os

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Input, Label, LoadingIndicator, Select, Static

from backends.contract import VolumeBusy, VolumeExists, VolumeNotFound
from backends.model import ImageFormat, Pool
from console.cache import VolumeRow
from console.jobs.operations import CloneVolume, Operation, SnapshotVolume, snapshot_name
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.screens.plan import VolumePlanDialog, volume_summary

KEEP = "keep"
STRATEGIES = (("space: a qcow2 overlay on the snapshot", "space"),
              ("performance: a full standalone copy", "performance"))


def clone_name(name: str) -> str:
    """``web01.qcow2.snap-20240131-235959`` → ``web01-clone.qcow2``."""
    head = name.split(".snap-", 1)[0] or name
    stem, ext = os.path.splitext(head)
    return f"{stem or head}-clone{ext if stem else ''}"


class SnapshotVolumeScreen(VolumePlanDialog):
    """Dismissed with the submitted snapshot job, or ``None`` when cancelled."""

    VERB = "Snapshot"

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Snapshot {printable(v.name)}"
            yield Static(f"{volume_summary(v)}. The disk keeps its name and stays writable; the "
                         "snapshot holds its data as it is now, read-only on disk.",
                         id="what")
            with Grid(id="fields"):
                yield Label("snapshot")
                yield Input(placeholder=f"default: {printable(snapshot_name(v.name))}"[:60],
                            id="name", compact=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def operation(self) -> Operation | None:
        typed = self.query_one("#name", Input).value
        if typed and (typed.strip() != typed or "/" in typed or typed in (".", "..")):
            self.show_error("snapshot: a file name, without / or surrounding spaces")
            return None
        # Named now, so the plan and the job agree on it.
        return SnapshotVolume(self.pool.host, self.pool.name, self.volume.name,
                              name=typed or snapshot_name(self.volume.name))

    def check(self, op: Operation) -> None:
        assert isinstance(op, SnapshotVolume) and op.name is not None
        inventory = self.runner.inventory
        disk = inventory.probe_volume(op.host, op.pool, op.volume)
        where = {"host": op.host, "pool": op.pool, "volume": op.volume}
        try:
            inventory.probe_volume(op.host, op.pool, op.name)
        except VolumeNotFound:
            pass
        else:
            raise VolumeExists(f"the snapshot's name {op.name!r} is taken", **where,
                               hint="choose another name")
        based = inventory.dependants(op.host, disk.path)
        if based:
            names = ", ".join(sorted(os.path.basename(v.path) for _, v in based)[:5])
            raise VolumeBusy(f"{len(based)} volume(s) are based on it ({names})", **where,
                             hint="snapshot a disk no other volume is based on")

    def notes(self) -> list[tuple[str, str]]:
        if self.volume.format == str(ImageFormat.RAW):
            return [("note", "a raw disk's snapshot is the raw file itself: the disk becomes "
                             "a qcow2 overlay on it, and whatever opens the disk must be "
                             "told its format is qcow2 now")]
        return [("note", "the disk becomes a new qcow2 overlay on the snapshot; refused "
                         "while a running QEMU holds the disk")]


class CloneVolumeScreen(VolumePlanDialog):
    """A new disk from the snapshot ``volume``; dismissed with the job or ``None``."""

    VERB = "Clone"

    def __init__(self, runner: Runner, pool: Pool, volume: VolumeRow, *,
                 cursor_blink: bool = True) -> None:
        super().__init__(runner, pool, volume, cursor_blink=cursor_blink)
        self.pools = self.host_pools()

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Clone {printable(v.name)}"
            yield Static(f"{volume_summary(v)}; a snapshot: read-only on disk", id="what")
            with Grid(id="fields"):
                yield Label("to pool")
                yield Select([(printable(p.name), p.name) for p in self.pools],
                             value=self.pool.name, allow_blank=False, id="dest-pool",
                             compact=True)
                yield Label("name")
                yield Input(clone_name(v.name), id="name", compact=True)
                yield Label("strategy")
                yield Select(STRATEGIES, value="space", allow_blank=False, id="strategy",
                             compact=True)
                yield Label("format")
                yield Select([(f"keep ({v.format})" if f == KEEP else f, f)
                              for f in (KEEP, str(ImageFormat.RAW), str(ImageFormat.QCOW2))],
                             value=KEEP, allow_blank=False, id="format", compact=True,
                             disabled=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        self.edited()
        if event.select.id == "strategy":  # an overlay is qcow2 by nature
            self.query_one("#format", Select).disabled = event.value != "performance"

    def set_busy(self, busy: bool) -> None:
        super().set_busy(busy)
        if not busy:
            self.query_one("#format", Select).disabled = \
                self.query_one("#strategy", Select).value != "performance"

    def operation(self) -> Operation | None:
        name = self.query_one("#name", Input).value
        if not name.strip():
            self.show_error("name: enter a name for the new disk")
            return None
        strategy = str(self.query_one("#strategy", Select).value)
        fmt = str(self.query_one("#format", Select).value)
        return CloneVolume(self.pool.host, self.pool.name, self.volume.name,
                           dest_pool=str(self.query_one("#dest-pool", Select).value),
                           dest_name=name, strategy=strategy,
                           format=None if fmt == KEEP or strategy == "space" else fmt)

    def check(self, op: Operation) -> None:
        assert isinstance(op, CloneVolume)
        inventory = self.runner.inventory
        inventory.probe_volume(op.host, op.pool, op.volume)  # the snapshot is still there
        try:
            inventory.probe_volume(op.host, op.dest_pool, op.dest_name)
        except VolumeNotFound:
            return
        raise VolumeExists("a file with that name already exists", host=op.host,
                           pool=op.dest_pool, volume=op.dest_name, hint="choose another name")

    def notes(self) -> list[tuple[str, str]]:
        plan = self.plan
        if plan is not None and isinstance(plan.op, CloneVolume) \
                and plan.op.strategy == "performance":
            return [("note", "a standalone copy of the snapshot's whole chain: it takes as "
                             "long as a copy, and needs nothing else afterwards")]
        return [("note", "instant and small; the new disk needs the snapshot for as long "
                         "as it lives (the snapshot cannot be deleted before it)")]
