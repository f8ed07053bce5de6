"""Archive a volume to a compressed file, restore a volume from one, and grow the file
system inside a raw volume.

The plan pattern of resize and copy: the first Enter (or ctrl+s) reads the plan in a
worker (the commands, the space), the second submits the job.
"""

from __future__ import annotations

import os

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Select, Static

from backends.archive import SIDECAR_SUFFIX
from backends.contract import VolumeExists, VolumeNotFound
from backends.model import ImageFormat, Pool
from console.config import archive_dir
from console.jobs.operations import ArchiveVolume, GrowFilesystem, Operation, RestoreVolume
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.screens.plan import PlanDialog, VolumePlanDialog, volume_summary
from console.units import format_size

ARCHIVE_SUFFIX = ".zst"
LEVELS = range(1, 20)  # zstd's, without --ultra


def restore_name(archive: str) -> str:
    """``/backup/web01.qcow2.zst`` → ``web01.qcow2``."""
    base = os.path.basename(archive)
    return base.removesuffix(ARCHIVE_SUFFIX) if base != ARCHIVE_SUFFIX else ""


class ArchiveVolumeScreen(VolumePlanDialog):
    """Dismissed with the submitted archive job, or ``None`` when cancelled."""

    VERB = "Archive"

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Archive {printable(v.name)}"
            yield Static(f"{volume_summary(v)}; the archive "
                         "holds its data flattened, as raw, compressed with zstd", id="what")
            with Grid(id="fields"):
                yield Label("to file")
                yield Input(os.path.join(archive_dir(), v.name + ARCHIVE_SUFFIX),
                            id="dest", compact=True)
                yield Label("level")
                yield Input("1", placeholder="1 (fast) .. 19 (small)", id="level",
                            compact=True)
                yield Label("")
                yield Checkbox("overwrite an existing archive of that name", id="overwrite",
                               compact=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def operation(self) -> Operation | None:
        dest = self.query_one("#dest", Input).value.strip()
        if not os.path.isabs(dest) or dest.endswith("/"):
            self.show_error("to file: an absolute path of a file on the host, e.g. "
                            "/backup/vm1.qcow2.zst")
            return None
        try:
            level = int(self.query_one("#level", Input).value)
        except ValueError:
            level = 0
        if level not in LEVELS:
            self.show_error("level: a whole number from 1 (fast) to 19 (small)")
            return None
        return ArchiveVolume(self.pool.host, self.pool.name, self.volume.name, dest=dest,
                             level=level, overwrite=self.query_one("#overwrite",
                                                                   Checkbox).value)

    def check(self, op: Operation) -> None:
        assert isinstance(op, ArchiveVolume)
        self.runner.inventory.probe_volume(op.host, op.pool, op.volume)  # still there

    def notes(self) -> list[tuple[str, str]]:
        return [("writes", f"its sidecar <archive>{SIDECAR_SUFFIX} (name, format, size, "
                           "sha256 checksums), then the archive; an existing archive is "
                           "replaced only with overwrite"),
                ("note", "refused while a running QEMU writes the volume")]


class RestoreVolumeScreen(PlanDialog):
    """Restore an archive into this pool: a new volume, or an existing one (at least as
    large, keeping its format). Dismissed with the job, or ``None``."""

    VERB = "Restore"

    def __init__(self, runner: Runner, pool: Pool, *, archive: str = "",
                 cursor_blink: bool = True) -> None:
        super().__init__(runner, pool, cursor_blink=cursor_blink)
        self.archive = archive or self.pool.path.rstrip("/") + "/"
        self.auto_name = restore_name(archive) if archive else ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = (f"Restore into {printable(self.pool.host)} › "
                                   f"{printable(self.pool.name)}")
            yield Static("An archive made by storage-console (its sidecar "
                         f"<archive>{SIDECAR_SUFFIX} beside it): checksums are verified "
                         "before and while it is written", id="what")
            with Grid(id="fields"):
                yield Label("archive")
                yield Input(self.archive, id="archive", compact=True)
                yield Label("name")
                yield Input(self.auto_name, placeholder="the volume to make", id="name",
                            compact=True)
                yield Label("format")
                yield Select([(str(f), str(f)) for f in (ImageFormat.RAW, ImageFormat.QCOW2)],
                             value=str(ImageFormat.RAW), allow_blank=False, id="format",
                             compact=True)
                yield Label("")
                yield Checkbox("into an existing volume (overwrites it, keeps its format)",
                               id="into-existing", compact=True)
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Changed, "#archive")
    def archive_changed(self, event: Input.Changed) -> None:
        field = self.query_one("#name", Input)
        if field.value == self.auto_name:  # the name follows the archive until typed
            self.auto_name = restore_name(event.value)
            field.value = self.auto_name

    @on(Select.Changed)
    def select_changed(self) -> None:
        self.edited()

    @on(Checkbox.Changed, "#into-existing")
    def into_changed(self, event: Checkbox.Changed) -> None:
        self.query_one("#format", Select).disabled = event.value

    def set_busy(self, busy: bool) -> None:
        super().set_busy(busy)
        if not busy:
            self.query_one("#format", Select).disabled = \
                self.query_one("#into-existing", Checkbox).value

    def operation(self) -> Operation | None:
        path = self.query_one("#archive", Input).value.strip()
        if not os.path.isabs(path) or path.endswith("/"):
            self.show_error("archive: the absolute path of an archive file on the host")
            return None
        name = self.query_one("#name", Input).value
        if not name.strip():
            self.show_error("name: enter the name of the volume to restore into")
            return None
        into = self.query_one("#into-existing", Checkbox).value
        fmt = str(self.query_one("#format", Select).value)
        return RestoreVolume(self.pool.host, self.pool.name, name, archive=path,
                             format=None if into else fmt, into_existing=into)

    def check(self, op: Operation) -> None:
        assert isinstance(op, RestoreVolume)
        where = {"host": op.host, "pool": op.pool, "volume": op.volume}
        try:
            self.runner.inventory.probe_volume(op.host, op.pool, op.volume)
        except VolumeNotFound:
            if op.into_existing:
                raise
            return
        if not op.into_existing:
            raise VolumeExists("a volume with that name already exists", **where,
                               hint="choose another name, or tick into an existing volume")

    def notes(self) -> list[tuple[str, str]]:
        return [("note", "refused for a volume in use by a running QEMU, or one others are "
                         "based on")]


class GrowFilesystemScreen(VolumePlanDialog):
    """A confirmation with the plan, read as soon as it opens: Enter grows."""

    VERB = "Grow"

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Grow the file system in {printable(v.name)}"
            yield Static(f"{printable(v.name)}: {v.format}, {format_size(v.capacity)} "
                         "virtual. Grows the ext2/3/4 file system that starts the image to "
                         "fill it (after resizing the volume).", id="what")
            yield Static("", id="plan")
            yield LoadingIndicator()
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Plan", id="primary", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.action_submit()  # no fields: the plan right away

    def operation(self) -> Operation | None:
        return GrowFilesystem(self.pool.host, self.pool.name, self.volume.name)

    def check(self, op: Operation) -> None:
        self.runner.inventory.probe_volume(op.host, op.pool, op.volume)

    def notes(self) -> list[tuple[str, str]]:
        return [("note", "e2fsck checks it first, and nothing grows if it finds errors; "
                         "refused while a running QEMU holds the volume")]
