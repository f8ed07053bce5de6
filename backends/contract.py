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


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


class Transport(ABC):
    """How commands and bytes reach one host."""

    host: str
    read_only: bool = False

    @abstractmethod
    def run(
        self,
        argv: list[str],
        *,
        on_output: Callable[[bytes], None] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` (never a shell string). ``on_output`` gets stdout chunks live."""

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
    def publish(self, temp: str, final: str) -> None:
        """Give the finished file ``temp`` its ``final`` name, durably and atomically.

        fsync the file, link it to ``final`` (``FileExistsError`` if that name is taken:
        nothing is ever replaced), remove ``temp``, fsync the directory.
        """

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
