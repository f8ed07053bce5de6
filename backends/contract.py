"""The driver interface: one method per operation, each with its contract.

Modelled on libvirt's storage backends: a driver says what it can do through
``Capabilities`` and the caller (console) reports "not supported" itself for the rest,
and reads the same flags to decide what the UI offers. Every method may block: callers
run them off the event loop.

Errors are ``StorageError`` subclasses whose message names the host, pool and volume
and says what to do. Drivers never let an ``OSError`` or a parser exception escape.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.model import Capacity, ImageFormat, Pool, PoolScan, Progress, Volume

ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]  # True once the job is asked to stop; polled ~10 times/s


class StorageError(Exception):
    """An error a user can act on; ``str()`` is one line naming where and what to do."""

    def __init__(
        self,
        what: str,
        *,
        host: str | None = None,
        pool: str | None = None,
        volume: str | None = None,
        hint: str = "",
    ) -> None:
        self.what = what
        self.host = host
        self.pool = pool
        self.volume = volume
        self.hint = hint
        super().__init__(self.message)

    @property
    def where(self) -> str:
        parts = [f"{label} {value!r}" for label, value in (
            ("host", self.host), ("pool", self.pool), ("volume", self.volume)
        ) if value is not None]
        return ", ".join(parts)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.hint})" if self.hint else text


class NotSupported(StorageError):
    """The driver (or this pool) cannot do that operation."""


class InvalidRequest(StorageError):
    """Bad input: a name, size or format that cannot be used. Nothing was changed."""


class VolumeExists(StorageError):
    """The target name is taken; nothing was touched."""


class VolumeNotFound(StorageError):
    """The volume is not on disk (any more)."""


class PoolUnavailable(StorageError):
    """The pool cannot be listed: missing directory, permission, host gone."""


class VolumeBusy(StorageError):
    """Refused because of what depends on the volume or holds it."""


class ReadOnlyViolation(StorageError):
    """A mutating operation was asked for in read-only mode."""


class CommandFailed(StorageError):
    """A command run on the host exited non-zero."""


class Cancelled(StorageError):
    """The operation was asked to stop (``should_cancel``) and stopped; what the method's
    contract says it cleans up on failure is cleaned up."""


class NoSpace(StorageError):
    """The pool's file system filled up (or a quota was hit) while writing."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


# (host, argv, exit status or -1 when stopped or not started, seconds): the audit log.
CommandObserver = Callable[[str, tuple[str, ...], int, float], None]


class Transport(ABC):
    """How commands and bytes reach one host.

    ``observer``, when set, hears of every command ``run`` starts, whatever its fate:
    the console's audit log records them all.
    """

    host: str
    read_only: bool = False
    observer: CommandObserver | None = None

    @abstractmethod
    def run(
        self,
        argv: list[str],
        *,
        on_output: Callable[[bytes], None] | None = None,
        timeout: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> CommandResult:
        """Run ``argv`` (never a shell string) to its end; a non-zero exit is returned,
        not raised.

        ``on_output`` gets stdout chunks as they come (split anywhere). ``should_cancel``
        is polled about every 100 ms while the command runs; once it returns True the
        command is terminated (SIGTERM, SIGKILL half a second later) and ``Cancelled``
        raised, all well within a second. Raises ``CommandFailed`` when the command
        cannot be started or outlives ``timeout`` seconds (it is killed).
        """

    @abstractmethod
    def scan_directory(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        """List ``path`` and probe every regular file in it in one round trip.

        Returns the entries of ``backends.transport.scanner.scan_directory``.
        """

    @abstractmethod
    def probe_path(self, path: str, declared: str | None) -> dict[str, Any]:
        """Probe one file by path as ``scanner.probe_path`` does (a backing file)."""

    @abstractmethod
    def probe_volume(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        """One volume with its chain, as ``scanner.probe_volume`` reports it."""

    @abstractmethod
    def statvfs(self, path: str) -> os.statvfs_result:
        """Space of the file system holding ``path``."""

    @abstractmethod
    def make_directory(self, path: str) -> None:
        """Create ``path`` and its parents if missing."""

    @abstractmethod
    def remove_file(self, path: str) -> None:
        """Remove one regular file (never a directory)."""

    @abstractmethod
    def publish(self, temp: str, final: str, *, replace: bool = False) -> None:
        """Give the finished file ``temp`` its ``final`` name, durably and atomically.

        fsync the file, link it to ``final`` (``FileExistsError`` if that name is taken:
        nothing is ever replaced), remove ``temp``, fsync the directory. With ``replace``
        (an explicit overwrite) ``temp`` is renamed over ``final`` instead: the old file
        stays whole until the new one, complete, takes its name.
        """

    @abstractmethod
    def read_bytes(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` of the regular file ``path`` (opened
        without following a symlink or blocking on a FIFO; ``OSError`` otherwise)."""

    @abstractmethod
    def qemu_write_locked(self, path: str) -> bool:
        """Whether a process holds QEMU's "write" permission lock on ``path``: a QEMU,
        qemu-nbd or qemu-storage-daemon that has the image open for writing. Only looks
        (``F_GETLK``), never takes a lock."""

    @abstractmethod
    def has_data(self, path: str) -> bool:
        """Whether the regular file ``path`` holds any non-zero byte in its allocated extents."""


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do; the UI offers only these, and never in read-only mode."""

    create: bool = False
    delete: bool = False
    create_formats: tuple[ImageFormat, ...] = ()
    backing: bool = False  # create on a backing volume
    resize: bool = False  # grow; shrink with an explicit flag
    copy: bool = False  # copy and convert, incrementally onto a base too
    copy_formats: tuple[ImageFormat, ...] = ()
    growfs: bool = False  # grow the ext2/3/4 file system inside a raw image


class Driver(ABC):
    """One pool type. A driver instance serves the pools of one host."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def scan_pool(self, pool: Pool) -> PoolScan:
        """List every volume of ``pool`` with its header facts and chain, and its capacity.

        Never opens anything that is not a regular file, never follows a backing
        reference that is undeclared, missing, looping or outside the allowed roots.
        Raises ``PoolUnavailable`` when the pool itself cannot be listed; a volume that
        cannot be read is returned with ``error`` set, not raised.
        """

    @abstractmethod
    def probe_volume(self, pool: Pool, name: str) -> Volume:
        """Re-derive one volume from disk (before acting on it). ``VolumeNotFound`` if gone."""

    @abstractmethod
    def pool_capacity(self, pool: Pool) -> Capacity:
        """Capacity, allocation and available bytes of the pool (committed left 0)."""

    def create_volume(
        self,
        pool: Pool,
        name: str,
        fmt: ImageFormat,
        capacity: int,
        *,
        backing: Volume | None = None,
        progress: ProgressCallback | None = None,
    ) -> Volume:
        """Create a volume; on any failure nothing is left under ``name``.

        Raises ``VolumeExists`` (nothing touched) or ``InvalidRequest`` for bad input.
        """
        raise NotSupported("creating volumes is not supported", pool=pool.name, host=pool.host)

    def holds_data(self, volume: Volume) -> bool:
        """Whether the volume's own data is non-empty (re-read from disk); when a driver
        cannot tell, the volume is treated as precious."""
        return True

    def delete_volume(self, pool: Pool, name: str) -> None:
        """Remove one volume. The caller has already refused deleting a base of others."""
        raise NotSupported("deleting volumes is not supported", pool=pool.name, host=pool.host)

    # -- the operations of jobs ----------------------------------------------------
    # Each re-probes its inputs on disk before acting, checks ``should_cancel`` (see
    # ``Transport.run``) and raises ``Cancelled`` when asked to stop, and reports
    # progress as stage 1 of 1 in bytes (the job numbers its own stages).

    def resize_volume(
        self,
        pool: Pool,
        name: str,
        capacity: int,
        *,
        shrink: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Volume:
        """Set the volume's virtual size to ``capacity`` bytes, in place.

        Growing works for any format the driver can resize; shrinking only with
        ``shrink=True``, and never below the end of an ext2/3/4 file system that starts
        at offset 0 of the volume (``InvalidRequest`` naming the file system's size).
        ``capacity`` equal to the current size does nothing (a resumed job finishes).

        Not published whole: the volume is changed under its own name, so the caller
        holds the volume's lock, and refuses shrinking a volume others are based on.
        A cancel is honoured only before the resize starts: a resize is a metadata
        change that is never interrupted half-way. On failure the volume is as it was.
        """
        raise NotSupported("resizing volumes is not supported", pool=pool.name, host=pool.host)

    def copy_volume(
        self,
        pool: Pool,
        name: str,
        dest_pool: Pool,
        dest_name: str,
        *,
        fmt: ImageFormat | None = None,
        overwrite: bool = False,
        backing: Volume | None = None,
        base_depth: int = 1,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """Copy the data of volume ``name`` (its whole chain, flattened) into a new volume
        ``dest_name`` of ``dest_pool`` in format ``fmt`` (None: the source's).

        Sparse: what reads as zeroes stays unallocated. Written under a temporary name
        in ``dest_pool`` (``temp_name``, chosen and journaled by the caller, or made up)
        and published whole. An existing ``dest_name`` raises ``VolumeExists`` before any
        work and is never touched, unless ``overwrite``: then the complete new volume
        replaces it atomically at the end.

        ``backing``: an incremental copy; the new volume (qcow2) is an overlay on
        ``backing`` and holds only what differs from it. ``backing`` must hold the same
        data as the image ``base_depth`` links down the source's chain (1: its backing
        file), which the caller has established (it copied it, or compared checksums).

        On any failure or cancel the temporary file is removed and ``dest_name`` is as it
        was. Raises ``NoSpace`` when the pool fills up.
        """
        raise NotSupported("copying volumes is not supported", pool=pool.name, host=pool.host)

    def growfs_volume(
        self,
        pool: Pool,
        name: str,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Volume:
        """Grow the ext2/3/4 file system that starts at offset 0 of a raw volume to fill
        the volume (check, then resize). ``NotSupported`` for anything else, with why.

        In place, like ``resize_volume``: the caller holds the volume's lock. Refused
        (``VolumeBusy``) while a QEMU or a mount holds the image. A cancel is honoured
        between the steps only: a file system check or resize is never interrupted.
        """
        raise NotSupported("growing file systems is not supported", pool=pool.name,
                           host=pool.host)

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None) -> int:
        """Bytes a full copy of the volume into ``fmt`` (None: its own) may write, to
        reserve before it starts. Reads only."""
        raise NotSupported("measuring copies is not supported", pool=pool.name,
                           host=pool.host)

    def volume_in_use(self, volume: Volume) -> bool:
        """Whether a running QEMU (or qemu-nbd, qemu-storage-daemon) has the volume open
        for writing, as its file lock says. Reads only."""
        raise NotSupported("telling whether a volume is in use is not supported",
                           host=volume.host, pool=volume.pool, volume=volume.name)
