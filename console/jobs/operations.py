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
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from backends import qemuimg
from backends.contract import InvalidRequest
from backends.model import ImageFormat, Pool, Progress
from backends.transport.scanner import TEMP_PREFIX
from console.inventory import Inventory


class Context(Protocol):
    """What the runner gives a running operation."""

    job_id: int
    inventory: Inventory

    def stage(self, index: int, label: str) -> None: ...
    def progress(self, progress: Progress) -> None: ...
    def should_cancel(self) -> bool: ...
    def remember(self, **resume: Any) -> None: ...
    @property
    def resume(self) -> dict[str, Any]: ...


def temp_name(job_id: int, name: str) -> str:
    """The temporary name of a job's output: recognisable, and tied to the job so a
    crashed job's leftover is found again."""
    return f"{TEMP_PREFIX}{job_id}-{name}"[:255]


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

    def commands(self, inventory: Inventory) -> list[list[str]]:
        """The commands it will run, for the confirmation (may re-probe from disk)."""
        return []

    def describe(self) -> str:
        return f"{self.kind} {self.volume}"

    @abstractmethod
    def run(self, ctx: Context) -> None:
        """Do the work. Raise ``StorageError`` (or ``Cancelled``) to stop."""

    def rollback(self, ctx: Context) -> None:
        """Remove partial output journaled under ``temp`` (in ``temp_pool``)."""
        temp = ctx.resume.get("temp")
        if temp:
            pool = ctx.inventory.pool(self.host, ctx.resume.get("temp_pool", self.pool))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(pool.path, temp))

    def _pool(self, inventory: Inventory, name: str | None = None) -> Pool:
        return inventory.pool(self.host, name or self.pool)


def _fmt(value: str) -> ImageFormat:
    try:
        return ImageFormat(value)
    except ValueError:
        raise InvalidRequest(f"unknown format {value!r}", hint="use raw or qcow2") from None


@dataclasses.dataclass(frozen=True)
class CreateVolume(Operation):
    kind: ClassVar[str] = "create"

    format: str = "qcow2"
    capacity: int = 0
    backing: str | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        return ("create", "publish")

    def space(self, inventory: Inventory) -> tuple[str, int]:
        # A sparse image takes its metadata only; qcow2 tables for 1 TiB are ~2 MiB.
        return (self.pool, 4 << 20)

    def commands(self, inventory: Inventory) -> list[list[str]]:
        pool = self._pool(inventory)
        backing = None
        if self.backing:
            backing = inventory.probe_volume(self.host, self.pool, self.backing)
        return [qemuimg.create(os.path.join(pool.path, temp_name(0, self.volume)),
                               _fmt(self.format), self.capacity,
                               backing=self.backing,
                               backing_format=backing.format if backing else None)]

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "create")
        ctx.inventory.create_volume(self.host, self.pool, self.volume, _fmt(self.format),
                                    self.capacity, backing=self.backing,
                                    progress=ctx.progress)


@dataclasses.dataclass(frozen=True)
class DeleteVolume(Operation):
    kind: ClassVar[str] = "delete"

    typed_name: str | None = None  # the name as typed to confirm a volume holding data

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "delete")

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        # delete_volume re-plans from disk: dependants refuse, data needs the typed name.
        ctx.stage(2, "delete")
        ctx.inventory.delete_volume(self.host, self.pool, self.volume,
                                    typed_name=self.typed_name)


@dataclasses.dataclass(frozen=True)
class ResizeVolume(Operation):
    kind: ClassVar[str] = "resize"

    capacity: int = 0
    shrink: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "resize")

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

    @property
    def stages(self) -> tuple[str, ...]:
        return ("check", "copy", "publish")

    def locked_volumes(self) -> list[tuple[str, str]]:
        return [(self.pool, self.volume), (self.dest_pool or self.pool, self.dest_name)]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        pool = self._pool(inventory)
        need = inventory.driver(pool).measure_copy(pool, self.volume,
                                                   _fmt(self.format) if self.format else None)
        return (self.dest_pool or self.pool, need)

    def describe(self) -> str:
        return f"copy {self.volume} to {self.dest_pool or self.pool}/{self.dest_name}"

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        pool = self._pool(inventory)
        dest = self._pool(inventory, self.dest_pool or self.pool)
        if (dest.name, self.dest_name) == (pool.name, self.volume):
            raise InvalidRequest("a volume cannot be copied onto itself", host=self.host,
                                 pool=self.pool, volume=self.volume)
        temp = temp_name(ctx.job_id, self.dest_name)
        ctx.remember(temp=temp, temp_pool=dest.name)  # journaled before the file exists
        ctx.stage(2, "copy")
        inventory.driver(pool).copy_volume(
            pool, self.volume, dest, self.dest_name,
            fmt=_fmt(self.format) if self.format else None, overwrite=self.overwrite,
            progress=ctx.progress, should_cancel=ctx.should_cancel, temp_name=temp)
        ctx.stage(3, "publish")
        inventory.refresh_quietly(dest)


OPERATIONS: dict[str, type[Operation]] = {
    op.kind: op for op in (CreateVolume, DeleteVolume, ResizeVolume, CopyVolume)}


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

