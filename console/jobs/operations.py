"""Operations: each change to storage as a plan the runner can journal, run, resume and
roll back.

An operation is a frozen dataclass of plain parameters (it is stored in the journal as
JSON and rebuilt from it to resume), and says:
- its stages (shown as stage X of Y);
- which volumes it locks, and how much space it reserves in which pool;
- the commands it will run (shown in the confirmation before it is submitted);
- ``run``: the work, reporting progress and checking for cancel through the context;
- ``rollback``: what removes its partial output (temporary files it journaled).
Drivers do the I/O; operations decide what to ask of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from backends import archive, filesystems, qemuimg
from backends.archive import SIDECAR_SUFFIX
from backends.contract import (
    RAW_SUFFIX,
    ROOM,
    Driver,
    InvalidRequest,
    ProgressCallback,
    StorageError,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.dir.copies import copy_overlays
from backends.drivers.dir.names import MAX_NAME_BYTES, backing_reference
from backends.model import ImageFormat, Pool, Progress, Volume
from backends.transport.scanner import TEMP_PREFIX
from console.inventory import Inventory
from console.jobs.journal import JobRecord
from console.jobs.locks import host_transport, volume_lock
from console.units import format_size


class Context(Protocol):
    """What the runner gives a running operation."""

    job_id: int
    inventory: Inventory

    def stage(self, index: int, label: str) -> None: ...
    def progress(self, progress: Progress) -> None: ...
    def should_cancel(self) -> bool: ...
    def remember(self, **resume: Any) -> None: ...
    def reserve_staging(self, host: str, pool: str, need: int) -> None: ...
    def release_staging(self) -> None: ...
    @property
    def resume(self) -> dict[str, Any]: ...


def temp_name(job_id: int, name: str, *, room: int = 0) -> str:
    """The temporary name of a job's output: recognisable, and tied to the job so a
    crashed job's leftover is found again. ``room`` bytes are kept free for the suffixes
    of its companions (``.raw``, ``.json``)."""
    whole = os.fsencode(f"{TEMP_PREFIX}{job_id}-{name}")
    return os.fsdecode(whole[:MAX_NAME_BYTES - room])


def snapshot_name(volume: str, when: datetime.datetime | None = None) -> str:
    """The default name of a snapshot: ``disk.qcow2.snap-20240131-235959`` (UTC)."""
    stamp = (when or datetime.datetime.now(datetime.UTC)).strftime(".snap-%Y%m%d-%H%M%S")
    head = os.fsencode(volume)[:MAX_NAME_BYTES - len(stamp)]
    return os.fsdecode(head) + stamp


def _staged(ctx: Context, stages: dict[str, int]) -> ProgressCallback:
    """``ctx.progress`` that moves the job to the stage its driver's label names."""
    current = [0]

    def report(progress: Progress) -> None:
        index = stages.get(progress.label)
        if index is not None and index != current[0]:
            current[0] = index
            ctx.stage(index, progress.label)
        ctx.progress(progress)

    return report


@dataclasses.dataclass(frozen=True)
class Operation(ABC):
    kind: ClassVar[str]
    mutating: ClassVar[bool] = True

    host: str
    pool: str
    volume: str

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    @abstractmethod
    def stages(self) -> tuple[str, ...]:
        """Labels of the stages, in order."""

    def locked_volumes(self) -> list[tuple[str, str]]:
        """(pool, volume) pairs on ``host`` this job holds while it runs."""
        return [(self.pool, self.volume)]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        """(pool, bytes) this job may write and reserves before it starts."""
        return (self.pool, 0)

    def host_locks(self) -> list[tuple[str, str, str]]:
        """(host, pool, volume) of every lock the runner takes: ``locked_volumes`` on
        ``host``, unless the operation spans hosts."""
        return [(self.host, pool, volume) for pool, volume in self.locked_volumes()]

    def reservation(self, inventory: Inventory) -> tuple[str, str, int]:
        """(host, pool, bytes) the runner reserves: ``space`` on ``host``, unless the
        operation writes on another host."""
        return (self.host, *self.space(inventory))

    def commands(self, inventory: Inventory) -> list[list[str]]:
        """The commands it will run, for the confirmation (may re-probe from disk).

        Steps the console does itself, without running a program, are shown as the shell
        command that does the same (``ln``, ``mv -T``, ``chmod a-w``, ``unlink``), or, for
        the wipe no command does alike, as ``overwrite --with=zero|random`` (it writes
        over the file's allocated extents only, then fsyncs).
        """
        return []

    def describe(self) -> str:
        """``copy a.raw → b.qcow2 in backup``: what it does, in a few words (job lists,
        progress lines, refusals)."""
        return f"{self.kind} {self.volume}"

    def results(self) -> list[tuple[str, str, str]]:
        """(host, pool, volume) of each volume it leaves written, checked after it is
        done (``auto_fix``); none by default (a delete, an archive, a fix)."""
        return []

    def _elsewhere(self, pool: str) -> str:
        """`` in backup`` when ``pool`` is not the operation's own pool."""
        return f" in {pool_label(pool)}" if pool and pool != self.pool else ""

    @abstractmethod
    def run(self, ctx: Context) -> None:
        """Do the work. Raise ``StorageError`` (or ``Cancelled``) to stop."""

    def rollback(self, ctx: Context) -> None:
        """Remove partial output journaled under ``temp`` (in ``temp_pool``) and
        ``temp_paths`` (absolute paths, e.g. outside every pool)."""
        paths = [str(p) for p in ctx.resume.get("temp_paths") or ()]
        temp = ctx.resume.get("temp")
        pool = ctx.inventory.pool(self.host, ctx.resume.get("temp_pool", self.pool))
        if temp:
            paths.append(os.path.join(pool.path, temp))
        # Removed on the job's host (over SSH for a remote one), never on this machine.
        transport = host_transport(ctx.inventory.driver(pool), self.host)
        for path in paths:
            if not os.path.basename(path).startswith(TEMP_PREFIX):
                continue  # only ever a job's temporary file
            try:
                with contextlib.suppress(FileNotFoundError):
                    transport.remove_file(path)
            except StorageError as err:
                raise _as_os_error(err) from None

    def _pool(self, inventory: Inventory, name: str | None = None) -> Pool:
        return inventory.pool(self.host, name or self.pool)

    def _driver(self, inventory: Inventory, name: str | None = None) -> tuple[Pool, Driver]:
        pool = self._pool(inventory, name)
        return pool, inventory.driver(pool)

    def _refuse_dependants(self, inventory: Inventory, volume: Volume, what: str) -> None:
        """Refuse to change a volume others are based on: their data would change."""
        based = inventory.dependants(self.host, volume.path)
        if based:
            names = ", ".join(sorted(os.path.basename(v.path) for _, v in based)[:5])
            raise VolumeBusy(f"{len(based)} volume(s) are based on it ({names}): it is not "
                             f"{what}, their data would change", host=self.host,
                             pool=self.pool, volume=self.volume,
                             hint="delete or flatten those first")


def _fmt(value: str) -> ImageFormat:
    try:
        return ImageFormat(value)
    except ValueError:
        raise InvalidRequest(f"unknown format {value!r}", hint="use raw or qcow2") from None


def _as_os_error(err: StorageError) -> OSError:
    """What a rollback raises: the runner reports an ``OSError`` as "its partial output
    could not be removed" and still finishes the job."""
    return OSError(errno.EIO, str(err))


@dataclasses.dataclass(frozen=True)
class CreateVolume(Operation):
    """A new volume: sparse, or preallocated (``falloc``: blocks reserved, reading as
    zeroes; ``full``: zeroes written). ``zero`` writes the zeroes of a preallocated volume
    for real (``falloc`` becomes ``full``); see ``Driver.create_volume``."""

    kind: ClassVar[str] = "create"

    format: str = "qcow2"
    capacity: int = 0
    backing: str | None = None
    preallocation: str | None = None  # None (sparse), "falloc" or "full"
    zero: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return ("create", "publish")

    def describe(self) -> str:
        what = (f"{self.format}, {format_size(self.capacity)}" if self.capacity
                else f"{self.format} on {self.backing}")
        return f"create {self.volume} ({what})"

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume)]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        if not self.preallocation or self.capacity <= 0:
            # A sparse image takes its metadata only; qcow2 tables for 1 TiB are ~2 MiB.
            return (self.pool, 4 << 20)
        pool, driver = self._driver(inventory)
        return (self.pool, driver.measure_create(pool, _fmt(self.format), self.capacity,
                                                 preallocation=self.preallocation))

    def commands(self, inventory: Inventory) -> list[list[str]]:
        pool = self._pool(inventory)
        backing = None
        if self.backing:
            backing = inventory.probe_volume(self.host, self.pool, self.backing)
        preallocation = "full" if self.zero and self.preallocation else self.preallocation
        return [qemuimg.create(os.path.join(pool.path, temp_name(0, self.volume)),
                               _fmt(self.format), self.capacity,
                               backing=self.backing,
                               backing_format=backing.format if backing else None,
                               preallocation=preallocation)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "create")
        temp = temp_name(ctx.job_id, self.volume)
        ctx.remember(temp=temp, temp_pool=self.pool)  # journaled before the file exists
        ctx.inventory.create_volume(self.host, self.pool, self.volume, _fmt(self.format),
                                    self.capacity, backing=self.backing,
                                    preallocation=self.preallocation, zero=self.zero,
                                    progress=_staged(ctx, {"create": 1, "publish": 2}),
                                    should_cancel=ctx.should_cancel, temp_name=temp)


@dataclasses.dataclass(frozen=True)
class DeleteVolume(Operation):
    """Delete a volume; ``with_dependants`` deletes every volume based on it too, in the
    same plan, leaves first (else a volume others are based on is refused); ``wipe``
    ("zero" or "random") overwrites each one's allocated extents before unlinking it.
    Refused when any of them is in use by a running QEMU."""

    kind: ClassVar[str] = "delete"

    typed_name: str | None = None  # the name as typed to confirm a volume holding data
    wipe: str | None = None  # None, "zero" or "random"
    with_dependants: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "delete")

    def describe(self) -> str:
        extra = " and what is based on it" if self.with_dependants else ""
        return f"delete {self.volume}{extra}" + (f" (wipe: {self.wipe})" if self.wipe else "")

    def commands(self, inventory: Inventory) -> list[list[str]]:
        plan = inventory.plan_delete(self.host, self.pool, self.volume,
                                     with_dependants=self.with_dependants)
        argvs: list[list[str]] = []
        for volume in plan.order:
            if self.wipe:
                argvs.append(["overwrite", f"--with={self.wipe}", "--", volume.path])
            argvs.append(["unlink", "--", volume.path])
        return argvs

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        # Re-planned from disk: dependants refuse (unless deleted too), data needs the
        # typed name, a volume a QEMU holds refuses the whole plan before anything goes.
        plan = inventory.plan_delete(self.host, self.pool, self.volume,
                                     with_dependants=self.with_dependants)
        inventory.check_delete(plan, self.typed_name)
        with contextlib.ExitStack() as locks:
            for volume in plan.order[:-1]:  # the volume itself: the runner holds its lock
                pool = self._pool(inventory, volume.pool)
                locks.enter_context(volume_lock(inventory.driver(pool), pool, volume.name,
                                                f"job {ctx.job_id}"))
            ctx.stage(2, "delete")
            inventory.carry_out_delete(plan, wipe=self.wipe, progress=ctx.progress,
                                       should_cancel=ctx.should_cancel)


@dataclasses.dataclass(frozen=True)
class ResizeVolume(Operation):
    kind: ClassVar[str] = "resize"

    capacity: int = 0
    shrink: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "resize")

    def describe(self) -> str:
        return f"resize {self.volume} to {format_size(self.capacity)}"

    def space(self, inventory: Inventory) -> tuple[str, int]:
        # A thick LV's growth is taken from its VG at once: reserved like a copy's, so
        # two jobs never count the same free extents (a sparse file's growth takes 0).
        pool, driver = self._driver(inventory)
        return (self.pool, driver.measure_resize(pool, self.volume, self.capacity))

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        volume = inventory.probe_volume(self.host, self.pool, self.volume)
        return [qemuimg.resize(volume.path, volume.format, self.capacity,
                               shrink=self.shrink)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        pool = self._pool(ctx.inventory)
        driver = ctx.inventory.driver(pool)
        ctx.stage(2, "resize")
        driver.resize_volume(pool, self.volume, self.capacity, shrink=self.shrink,
                             progress=ctx.progress, should_cancel=ctx.should_cancel)
        ctx.inventory.refresh_quietly(pool)


@dataclasses.dataclass(frozen=True)
class CopyVolume(Operation):
    kind: ClassVar[str] = "copy"

    dest_pool: str = ""
    dest_name: str = ""
    format: str | None = None  # None: keep the source's format
    overwrite: bool = False
    # Incremental: a volume of the destination pool identical to one of the source's
    # bases; only the difference is written, and the copy is an overlay on it.
    base: str | None = None
    # Check that identity with qemu-img compare first (reads both). Off only for a base
    # the user knows (it was copied from that very image): a wrong base corrupts silently.
    verify_base: bool = True
    # None: a sparse standalone copy. "space": the same, or an overlay on a snapshot in
    # its own pool (``copy_overlays``). "performance": preallocated (falloc).
    strategy: str | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        if self.base and self.verify_base:
            return ("check", "verify base", "copy", "publish")
        return ("check", "copy", "publish")

    def _base_link(self, source: Volume, base: Volume) -> int:
        """How many links down the source's chain ``base`` stands for: the link with the
        same name, else the only one with the same size."""
        links = source.chain.links[1:]
        named = [i for i, link in enumerate(links, 1)
                 if os.path.basename(link.path) == base.name]
        sized = [i for i, link in enumerate(links, 1) if link.capacity == base.capacity]
        found = named or (sized if len(sized) == 1 else [])
        if not found:
            raise InvalidRequest(
                f"cannot tell which of {source.name!r}'s {len(links)} base(s) "
                f"{base.name!r} stands for (no base of that name, and "
                f"{len(sized)} of that size)", host=self.host, pool=self.pool,
                volume=self.volume, hint="name the base as the source's chain names it")
        return found[0]

    def locked_volumes(self) -> list[tuple[str, str]]:
        return [(self.pool, self.volume), (self.dest_pool or self.pool, self.dest_name)]

    def _overlays(self, inventory: Inventory, source: Volume) -> bool:
        return copy_overlays(source, self._pool(inventory),
                             self._pool(inventory, self.dest_pool or self.pool),
                             strategy=self.strategy,
                             fmt=_fmt(self.format) if self.format else None,
                             incremental=bool(self.base))

    def space(self, inventory: Inventory) -> tuple[str, int]:
        pool, driver = self._driver(inventory)
        dest = self.dest_pool or self.pool
        if self.base:  # what the images above the base hold, not the whole disk
            source = driver.probe_volume(pool, self.volume)
            base = inventory.driver(self._pool(inventory, dest)).probe_volume(
                self._pool(inventory, dest), self.base)
            return (dest, driver.measure_copy(pool, self.volume,
                                              base_depth=self._base_link(source, base)))
        if self.strategy == "space":
            source = driver.probe_volume(pool, self.volume)
            if self._overlays(inventory, source):
                return (dest, driver.measure_create(pool, ImageFormat.QCOW2, source.capacity))
        need = driver.measure_copy(pool, self.volume,
                                   _fmt(self.format) if self.format else None,
                                   full=self.strategy == "performance")
        return (dest, need)

    def describe(self) -> str:
        how = f" ({self.strategy})" if self.strategy else ""
        return f"copy {self.volume} → {self.dest_name}{self._elsewhere(self.dest_pool)}{how}"

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.dest_pool or self.pool, self.dest_name)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        source = inventory.probe_volume(self.host, self.pool, self.volume)
        dest = self._pool(inventory, self.dest_pool or self.pool)
        out = _fmt(self.format) if self.format else source.format
        # The job's number names the temporary file; "0" stands for it in the plan.
        temp = os.path.join(dest.path, temp_name(0, self.dest_name))
        if self._overlays(inventory, source):
            return [qemuimg.overlay(temp, source.capacity,
                                    backing_reference(source, dest.path), source.format)]
        return [qemuimg.convert(source.path, source.format, temp, out,
                                preallocation="falloc" if self.strategy == "performance"
                                else None, out_of_order=True)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool = self._pool(inventory)
        dest = self._pool(inventory, self.dest_pool or self.pool)
        if (dest.name, self.dest_name) == (pool.name, self.volume):
            raise InvalidRequest("a volume cannot be copied onto itself", host=self.host,
                                 pool=self.pool, volume=self.volume)
        driver = inventory.driver(pool)
        base, depth, step = None, 1, 2
        if self.base:
            source = driver.probe_volume(pool, self.volume)
            base = inventory.driver(dest).probe_volume(dest, self.base)
            depth = self._base_link(source, base)
            if self.verify_base:
                ctx.stage(step, "verify base")
                step += 1
                link = source.chain.links[depth]
                if not driver.same_content(base, link.path, link.format,
                                           should_cancel=ctx.should_cancel):
                    raise InvalidRequest(
                        f"{self.base!r} is not identical to {link.path}", host=self.host,
                        pool=dest.name, volume=self.base,
                        hint="make a full copy, or copy the base first")
        temp = temp_name(ctx.job_id, self.dest_name)
        ctx.remember(temp=temp, temp_pool=dest.name)  # journaled before the file exists
        ctx.stage(step, "copy")
        driver.copy_volume(
            pool, self.volume, dest, self.dest_name,
            fmt=_fmt(self.format) if self.format else None, overwrite=self.overwrite,
            backing=base, base_depth=depth, strategy=self.strategy, progress=ctx.progress,
            should_cancel=ctx.should_cancel, temp_name=temp)
        ctx.stage(step + 1, "publish")
        inventory.refresh_quietly(dest)


@dataclasses.dataclass(frozen=True)
class GrowFilesystem(Operation):
    """Grow the ext2/3/4 file system at offset 0 of a raw volume to fill it."""

    kind: ClassVar[str] = "growfs"

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "growfs")

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        volume = inventory.probe_volume(self.host, self.pool, self.volume)
        return [filesystems.e2fsck(volume.path), filesystems.resize2fs(volume.path)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        pool, driver = self._driver(ctx.inventory)
        ctx.stage(2, "growfs")
        driver.growfs_volume(pool, self.volume, progress=ctx.progress,
                             should_cancel=ctx.should_cancel)
        ctx.inventory.refresh_quietly(pool)


@dataclasses.dataclass(frozen=True)
class SnapshotVolume(Operation):
    """The disk keeps its name and stays writable; the snapshot ``name`` (default
    ``<disk>.snap-<UTC time>``) holds the data as it was, read-only on disk.

    The disk's current file becomes the snapshot and the disk a new qcow2 overlay on it:
    a raw disk becomes a qcow2 disk (what opens it must be told so). Refused while a
    running QEMU holds the disk, and for a disk others are based on. Crash-safe: see
    ``Driver.snapshot_volume``; a rollback after the disk was switched to its overlay
    finishes the snapshot instead of undoing it (undoing would drop what was written to
    the disk since).
    """

    kind: ClassVar[str] = "snapshot"

    name: str | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "snapshot")

    def locked_volumes(self) -> list[tuple[str, str]]:
        return [(self.pool, self.volume), *([(self.pool, self.name)] if self.name else [])]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        pool, driver = self._driver(inventory)
        disk = driver.probe_volume(pool, self.volume)
        return (self.pool, driver.measure_create(pool, ImageFormat.QCOW2, disk.capacity))

    def describe(self) -> str:
        return f"snapshot {self.volume}" + (f" as {self.name}" if self.name else "")

    def results(self) -> list[tuple[str, str, str]]:
        # The disk, not the snapshot: a snapshot is immutable, even its header.
        return [(self.host, self.pool, self.volume)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        pool, driver = self._driver(inventory)
        disk = driver.probe_volume(pool, self.volume)
        snap = self.name or snapshot_name(self.volume)
        snap_path = os.path.join(pool.path, snap)
        temp = os.path.join(pool.path, temp_name(0, self.volume))
        # The overlay records the snapshot by name (they share the directory).
        reference = snap if ":" not in snap else snap_path
        return [["ln", "--", disk.path, snap_path],
                qemuimg.overlay(temp, max(disk.capacity, 512), reference, disk.format),
                ["mv", "-T", "--", temp, disk.path],
                ["chmod", "a-w", "--", snap_path]]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool, driver = self._driver(inventory)
        snap = str(ctx.resume.get("snapshot") or self.name or snapshot_name(self.volume))
        disk = driver.probe_volume(pool, self.volume)
        if ctx.resume.get("snapshot") and disk.info.backing_file in (
                snap, os.path.join(pool.path, snap)):
            return  # a resumed job whose rollback found the snapshot taken and finished it
        self._refuse_dependants(inventory, disk, "snapshotted")
        try:
            driver.probe_volume(pool, snap)
        except VolumeNotFound:
            pass
        else:
            raise VolumeExists(f"the snapshot's name {snap!r} is taken", host=self.host,
                               pool=self.pool, volume=self.volume,
                               hint="choose another name; nothing was changed")
        temp = temp_name(ctx.job_id, self.volume)
        # Journaled before anything is linked or created: a rollback finds both.
        ctx.remember(snapshot=snap, temp=temp, temp_pool=self.pool)
        ctx.stage(2, "snapshot")
        driver.snapshot_volume(pool, self.volume, snap, progress=ctx.progress,
                               should_cancel=ctx.should_cancel, temp_name=temp)
        inventory.refresh_quietly(pool)

    def rollback(self, ctx: Context) -> None:
        snap = ctx.resume.get("snapshot")
        if not snap:
            super().rollback(ctx)
            return
        pool, driver = self._driver(ctx.inventory)
        try:
            driver.settle_snapshot(pool, self.volume, str(snap), ctx.resume.get("temp"))
        except StorageError as err:
            raise _as_os_error(err) from None


@dataclasses.dataclass(frozen=True)
class CloneVolume(Operation):
    """A new disk ``dest_name`` from the snapshot ``volume``: ``strategy`` "space" is a
    qcow2 overlay on the snapshot (by name in the same pool, by absolute path from
    another), "performance" a full standalone copy (``format`` None: the snapshot's)."""

    kind: ClassVar[str] = "clone"

    dest_pool: str = ""
    dest_name: str = ""
    strategy: str = "space"
    format: str | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "clone", "publish")

    def locked_volumes(self) -> list[tuple[str, str]]:
        return [(self.pool, self.volume), (self.dest_pool or self.pool, self.dest_name)]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        pool, driver = self._driver(inventory)
        fmt = _fmt(self.format) if self.format else None
        if self.strategy == "performance":
            return (self.dest_pool or self.pool, driver.measure_copy(pool, self.volume, fmt))
        snap = driver.probe_volume(pool, self.volume)
        return (self.dest_pool or self.pool,
                driver.measure_create(pool, ImageFormat.QCOW2, snap.capacity))

    def describe(self) -> str:
        return (f"clone {self.volume} → {self.dest_name}{self._elsewhere(self.dest_pool)} "
                f"({self.strategy})")

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.dest_pool or self.pool, self.dest_name)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        pool, driver = self._driver(inventory)
        dest = self._pool(inventory, self.dest_pool or self.pool)
        snap = driver.probe_volume(pool, self.volume)
        temp = os.path.join(dest.path, temp_name(0, self.dest_name))
        if self.strategy == "performance":
            fmt = _fmt(self.format) if self.format else snap.format
            return [qemuimg.convert(snap.path, snap.format, temp, fmt)]
        return [qemuimg.overlay(temp, max(snap.capacity, 512),
                                backing_reference(snap, dest.path), snap.format)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool, driver = self._driver(inventory)
        dest = self._pool(inventory, self.dest_pool or self.pool)
        temp = temp_name(ctx.job_id, self.dest_name)
        ctx.remember(temp=temp, temp_pool=dest.name)  # journaled before the file exists
        ctx.stage(2, "clone")
        driver.clone_volume(pool, self.volume, dest, self.dest_name, strategy=self.strategy,
                            fmt=_fmt(self.format) if self.format else None,
                            progress=ctx.progress, should_cancel=ctx.should_cancel,
                            temp_name=temp)
        ctx.stage(3, "publish")
        inventory.refresh_quietly(dest)


ARCHIVE_TEMP_SUFFIXES = ("", SIDECAR_SUFFIX, RAW_SUFFIX)


@dataclasses.dataclass(frozen=True)
class ArchiveVolume(Operation):
    """A zstd-compressed copy of the volume's data (flattened, as raw) at ``dest``, any
    absolute file path on the host, with its sidecar ``dest.json`` (checksums of the raw
    data and of the archive; see ``Driver.archive_volume``). An existing ``dest`` is
    refused unless ``overwrite``.

    Space: when ``dest``'s directory is a pool of the host, the worst case (the volume's
    allocated bytes, and as much again for a flattened copy) is reserved there; else no
    reservation can be taken, and the driver checks free space with statvfs up front.
    The checksums go to the journal too (``resume["archive"]``).
    """

    kind: ClassVar[str] = "archive"

    dest: str = ""
    level: int = 1
    overwrite: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "flatten", "compress", "publish")

    def space(self, inventory: Inventory) -> tuple[str, int]:
        target = self._dest_pool(inventory)
        if target is None:
            return (self.pool, 0)
        pool, driver = self._driver(inventory)
        return (target.name, driver.measure_archive(pool, self.volume))

    def describe(self) -> str:
        return f"archive {self.volume} → {self.dest}"

    def commands(self, inventory: Inventory) -> list[list[str]]:
        volume = inventory.probe_volume(self.host, self.pool, self.volume)
        argvs: list[list[str]] = []
        if qemuimg.qemu_format(volume.format) != "raw":
            flat = os.path.join(os.path.dirname(self.dest),
                                temp_name(0, os.path.basename(self.dest), room=ROOM)
                                + RAW_SUFFIX)
            argvs.append(qemuimg.convert(volume.path, volume.format, flat, "raw"))
        argvs.append(archive.compress_argv(self.level))
        return argvs

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool, driver = self._driver(inventory)
        directory = os.path.dirname(self.dest)
        temp = temp_name(ctx.job_id, os.path.basename(self.dest), room=ROOM)
        # Journaled before any of them exists: a rollback removes them wherever they are.
        ctx.remember(temp_paths=[os.path.join(directory, temp) + suffix
                                 for suffix in ARCHIVE_TEMP_SUFFIXES])
        info = driver.archive_volume(
            pool, self.volume, self.dest, level=self.level, overwrite=self.overwrite,
            progress=_staged(ctx, {"flatten": 2, "compress": 3}),
            should_cancel=ctx.should_cancel, temp_name=temp)
        ctx.stage(4, "publish")
        ctx.remember(archive={"path": self.dest, "sidecar": self.dest + SIDECAR_SUFFIX,
                              "raw_sha256": info.raw_sha256,
                              "archive_sha256": info.archive_sha256,
                              "archive_size": info.archive_size,
                              "virtual_size": info.virtual_size})
        target = self._dest_pool(inventory)
        if target is not None:
            inventory.refresh_quietly(target)

    def _dest_pool(self, inventory: Inventory) -> Pool | None:
        """The pool of the host whose directory is ``dest``'s, if one is."""
        directory = os.path.realpath(os.path.dirname(self.dest))
        for pool in inventory.config.host(self.host).pools:
            if os.path.realpath(pool.path) == directory:
                return pool
        return None


@dataclasses.dataclass(frozen=True)
class RestoreVolume(Operation):
    """Restore the archive at ``archive`` (its sidecar beside it) into ``volume``: a new
    volume (``format`` raw or qcow2; None: raw), or, ``into_existing``, an existing one at
    least as large, keeping its format (the rest reads as zeroes). Checksums and sizes
    are verified against the sidecar; see ``Driver.restore_volume``. Refused for a
    volume in use, or one others are based on."""

    kind: ClassVar[str] = "restore"

    archive: str = ""
    format: str | None = None
    into_existing: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        if self.into_existing:
            return ("check", "verify", "decompress", "write")
        if self.format not in (None, str(ImageFormat.RAW)):  # never raises: journaled as is
            return ("check", "decompress", "convert", "publish")
        return ("check", "decompress", "publish")

    def space(self, inventory: Inventory) -> tuple[str, int]:
        pool, driver = self._driver(inventory)
        return (self.pool, driver.measure_restore(
            pool, self.archive, self.volume, fmt=_fmt(self.format) if self.format else None,
            into_existing=self.into_existing))

    def describe(self) -> str:
        into = "into" if self.into_existing else "as"
        return f"restore {os.path.basename(self.archive)} {into} {self.volume}"

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        pool = self._pool(inventory)
        staged = os.path.join(pool.path, temp_name(0, self.volume, room=ROOM) + RAW_SUFFIX)
        argvs = [archive.decompress_argv()]
        if self.into_existing:
            volume = inventory.probe_volume(self.host, self.pool, self.volume)
            if qemuimg.qemu_format(volume.format) != "raw":
                argvs.append(qemuimg.convert(staged, "raw", volume.path, volume.format,
                                             existing=True))
        elif self.format and _fmt(self.format) != ImageFormat.RAW:
            temp = os.path.join(pool.path, temp_name(0, self.volume, room=ROOM))
            argvs.append(qemuimg.convert(staged, "raw", temp, _fmt(self.format)))
        return argvs

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool, driver = self._driver(inventory)
        if self.into_existing:
            volume = driver.probe_volume(pool, self.volume)
            self._refuse_dependants(inventory, volume, "overwritten")
        temp = temp_name(ctx.job_id, self.volume, room=ROOM)
        ctx.remember(temp=temp, temp_pool=self.pool,
                     temp_paths=[os.path.join(pool.path, temp + RAW_SUFFIX)])
        labels = {label: index + 1 for index, label in enumerate(self.stages)}
        driver.restore_volume(pool, self.archive, self.volume,
                              fmt=_fmt(self.format) if self.format else None,
                              into_existing=self.into_existing,
                              progress=_staged(ctx, labels), should_cancel=ctx.should_cancel,
                              temp_name=temp)
        if not self.into_existing:
            ctx.stage(len(self.stages), "publish")
        inventory.refresh_quietly(pool)


OPERATIONS: dict[str, type[Operation]] = {
    op.kind: op for op in (CreateVolume, DeleteVolume, ResizeVolume, CopyVolume,
                           GrowFilesystem, SnapshotVolume, CloneVolume, ArchiveVolume,
                           RestoreVolume)}

# Operations kept in modules of their own, which build on this one.
from console.jobs.transfer import TransferVolume  # noqa: E402

OPERATIONS[TransferVolume.kind] = TransferVolume

# RunFix registers itself (so console.jobs.fixing can be imported first).
import console.jobs.fixing  # noqa: E402, F401


def operation_from(kind: str, params: dict[str, Any]) -> Operation:
    """Rebuild an operation from the journal."""
    try:
        cls = OPERATIONS[kind]
    except KeyError:
        raise InvalidRequest(f"unknown job kind {kind!r} in the journal") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise InvalidRequest(f"the journal's job parameters for {kind!r} do not fit: {err}",
                             hint="roll the job back or remove it") from None


def pool_label(pool: str) -> str:
    """An ad-hoc pool is named by its path: its last component is enough in a line."""
    return os.path.basename(pool.rstrip("/")) or pool


def describe_job(job: JobRecord) -> str:
    """What a journaled job does, as its operation describes itself (the job lists of the
    console and the command line); ``kind volume`` for a row that no longer fits."""
    try:
        return operation_from(job.kind, job.params).describe()
    except InvalidRequest:
        return f"{job.kind} {job.volume}"
