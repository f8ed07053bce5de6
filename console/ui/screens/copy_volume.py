"""Copy a volume to a pool of the same host, or to a directory pool of another host:
destination pool, name, format, strategy, overwrite. A copy to another host is a
transfer job (sparse, zstd on the wire), which keeps the source's format.

As with resize, the first Enter reads the plan (the space the copy reserves, measured
with ``qemu-img measure`` in a worker) and the second submits the job.
"""

from __future__ import annotations

import os

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Select, Static

from backends.contract import InvalidRequest, VolumeExists, VolumeNotFound
from backends.model import ImageFormat, Pool
from console.cache import VolumeRow
from console.jobs.operations import CopyVolume, Operation
from console.jobs.runner import Runner
from console.jobs.transfer import TransferVolume
from console.ui.cells import printable
from console.ui.screens.plan import VolumePlanDialog, volume_summary

KEEP = "keep"
FORMATS: tuple[str, ...] = (KEEP, str(ImageFormat.RAW), str(ImageFormat.QCOW2))
SPARSE = "sparse"  # no strategy: a sparse standalone copy
STRATEGIES: tuple[tuple[str, str], ...] = (
    ("sparse copy", SPARSE),
    ("space (an overlay on a snapshot in its pool)", "space"),
    ("performance (preallocated)", "performance"))


def copy_name(name: str) -> str:
    """``web01.qcow2`` → ``web01-copy.qcow2``: a default that never names the source."""
    stem, ext = os.path.splitext(name)
    return f"{stem or name}-copy{ext if stem else ''}"


class CopyVolumeScreen(VolumePlanDialog):
    """Dismissed with the submitted job, or ``None`` when cancelled."""

    VERB = "Copy"

    def __init__(self, runner: Runner, pool: Pool, volume: VolumeRow, *,
                 cursor_blink: bool = True) -> None:
        super().__init__(runner, pool, volume, cursor_blink=cursor_blink)
        self.pools = self.host_pools()
        if pool.kind == "dir":  # other hosts' directory pools: a transfer between hosts
            self.pools += [p for p in runner.inventory.pools()
                           if p.host != pool.host and p.kind == "dir"]

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Copy {printable(v.name)}"
            yield Static(f"{volume_summary(v)}; the copy holds "
                         "its whole chain (flattened)", id="what")
            with Grid(id="fields"):
                yield Label("to pool")
                yield Select([(printable(p.name if p.host == self.pool.host
                                         else f"{p.host}:{p.name}"), (p.host, p.name))
                              for p in self.pools],
                             value=(self.pool.host, self.pool.name), allow_blank=False,
                             id="dest-pool", compact=True)
                yield Label("name")
                yield Input(copy_name(v.name), id="name", compact=True)
                yield Label("format")
                yield Select([(f"keep ({v.format})" if f == KEEP else f, f) for f in FORMATS],
                             value=KEEP, allow_blank=False, id="format", compact=True)
                yield Label("strategy")
                yield Select(STRATEGIES, value=SPARSE, allow_blank=False, id="strategy",
                             compact=True)
                yield Label("")
                yield Checkbox("overwrite an existing volume of that name", id="overwrite",
                               compact=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        self.edited()
        if event.select.id == "dest-pool":
            # The default name follows the pool (a copy elsewhere keeps the name), unless
            # a name was typed.
            field = self.query_one("#name", Input)
            same = event.value == (self.pool.host, self.pool.name)
            if field.value in (self.volume.name, copy_name(self.volume.name)):
                field.value = copy_name(self.volume.name) if same else self.volume.name

    def operation(self) -> Operation | None:
        name = self.query_one("#name", Input).value
        if not name.strip():
            self.show_error("name: enter a name for the copy")
            return None
        dest_host, dest_pool = self.query_one("#dest-pool", Select).value  # type: ignore[misc]
        fmt = str(self.query_one("#format", Select).value)
        strategy = str(self.query_one("#strategy", Select).value)
        overwrite = self.query_one("#overwrite", Checkbox).value
        if dest_host != self.pool.host:
            if strategy != SPARSE:
                self.show_error("a copy to another host is sparse: preallocate it on "
                                "that host")
                return None
            return TransferVolume(self.pool.host, self.pool.name, self.volume.name,
                                  dest_host=dest_host, dest_pool=dest_pool, dest_name=name,
                                  overwrite=overwrite,
                                  format=None if fmt == KEEP else fmt)
        return CopyVolume(self.pool.host, self.pool.name, self.volume.name,
                          dest_pool=dest_pool, dest_name=name,
                          format=None if fmt == KEEP else fmt,
                          overwrite=self.query_one("#overwrite", Checkbox).value,
                          strategy=None if strategy == SPARSE else strategy)

    def check(self, op: Operation) -> None:
        assert isinstance(op, CopyVolume | TransferVolume)
        dest_host = op.dest_host if isinstance(op, TransferVolume) else op.host
        where = {"host": dest_host, "pool": op.dest_pool, "volume": op.dest_name}
        if (dest_host, op.dest_pool, op.dest_name) == (op.host, op.pool, op.volume):
            raise InvalidRequest("a volume cannot be copied onto itself", **where)
        inventory = self.runner.inventory
        inventory.probe_volume(op.host, op.pool, op.volume)  # the source is still there
        try:
            inventory.probe_volume(dest_host, op.dest_pool, op.dest_name)
        except VolumeNotFound:
            return
        if not op.overwrite:
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name, or tick overwrite to replace it")

    def fallback(self) -> str:
        source = self.volume.format
        plan = self.plan
        if plan is not None and isinstance(plan.op, TransferVolume):
            return (f"the image file sent sparse to {plan.op.dest_host} (zstd on the wire "
                    "when both hosts have it) into a temporary file, renamed once whole")
        target = plan.op.format if plan is not None and isinstance(plan.op, CopyVolume) \
            and plan.op.format else source
        return (f"qemu-img convert -f {source} -O {target} into a temporary file in the "
                "pool, renamed to the name once whole")

    def notes(self) -> list[tuple[str, str]]:
        plan = self.plan
        if plan is not None and isinstance(plan.op, TransferVolume):
            op = plan.op
            return [("to", f"host {op.dest_host}, pool {op.dest_pool}: "
                           f"{printable(op.dest_name)}"),
                    ("note", "sent sparse (only allocated ranges; holes stay holes), "
                             "zstd on the wire when both hosts have it, checked on "
                             "arrival; refused while a running QEMU writes the source")]
        strategy = plan.op.strategy if plan is not None and isinstance(plan.op, CopyVolume) \
            else None
        how = {"performance": "performance: every byte preallocated (falloc), so the guest "
                              "never waits for allocation",
               "space": "space: holes stay holes; a snapshot copied within its pool (as "
                        "qcow2) becomes an overlay on it, which then depends on it"}.get(
            strategy or "", "sparse: holes stay holes")
        return [("note", f"{how}; refused while a running QEMU writes the source; an "
                         "existing name is replaced only with overwrite, once the copy is "
                         "whole")]
