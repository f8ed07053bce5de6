"""The driver interface: one method per operation, each with its contract.

Modelled on libvirt's storage backends: a driver says what it can do through
``Capabilities`` and the caller (console) reports "not supported" itself for the rest,
and reads the same flags to decide what the UI offers. Every method may block: callers
run them off the event loop.

Errors are ``StorageError`` subclasses whose message names the host, pool and volume
and says what to do. Drivers never let an ``OSError`` or a parser exception escape.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.archive import SIDECAR_SUFFIX, ArchiveInfo, StreamResult
from backends.model import (
    Capacity,
    ImageFormat,
    Pool,
    PoolScan,
    Progress,
    TemporaryFile,
    Volume,
    ZeroCount,
)

if TYPE_CHECKING:  # not at run time: this module is shipped to hosts, qemuimg is not
    from backends.qemuimg import CheckResult

ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]  # True once the job is asked to stop; polled ~10 times/s
ByteProgress = Callable[[int, int], None]  # (bytes done, bytes in all) of a byte stream

PREALLOCATIONS = ("falloc", "full")  # besides None: sparse
WIPES = ("zero", "random")
CLONE_STRATEGIES = ("space", "performance")
RAW_SUFFIX = ".raw"  # a job's flattened (archive) or staged (restore) raw data, as a temp
ROOM = max(len(RAW_SUFFIX), len(SIDECAR_SUFFIX))  # bytes a temp name keeps for companions


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


class HostUnreachable(StorageError):
    """The host cannot be reached or refused us: connection refused or timed out,
    authentication failed, or the connection dropped in the middle of a request."""


class HostKeyUnknown(StorageError):
    """The host offered a key that no known_hosts file records. Nothing was run there;
    trusting it is the user's explicit decision (``key_type`` and ``fingerprint`` are
    what to show them)."""

    def __init__(self, what: str, *, key_type: str, fingerprint: str,
                 host: str | None = None, hint: str = "") -> None:
        self.key_type = key_type
        self.fingerprint = fingerprint
        super().__init__(what, host=host, hint=hint)


class HostKeyChanged(StorageError):
    """The host offered a key other than the one recorded for it: someone may be in
    the middle, or the host was reinstalled. Never trusted by a simple trust call."""

    def __init__(self, what: str, *, key_type: str, fingerprint: str,
                 recorded: tuple[str, ...], host: str | None = None, hint: str = "") -> None:
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.recorded = recorded  # fingerprints known_hosts records for the host
        super().__init__(what, host=host, hint=hint)


class ChecksumMismatch(StorageError):
    """Data read back is not what its recorded checksum (or size) says: a damaged or
    altered archive. Whatever was being written from it is removed."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


# (host, argv, exit status or -1 when stopped or not started, seconds): the audit log.
CommandObserver = Callable[[str, tuple[str, ...], int, float], None]


class Process(ABC):
    """A command started by ``Transport.spawn``: its stdin and stdout as byte streams.

    ``read`` and ``write`` may be called from two threads at once (one each); ``kill``
    from any thread. Use it as a context manager: leaving it kills a command still
    running and records the command for the audit, once.
    """

    argv: tuple[str, ...]

    @abstractmethod
    def write(self, data: bytes) -> None:
        """All of ``data`` to the command's stdin, blocking while its pipe is full;
        ``BrokenPipeError`` once it stopped reading."""

    @abstractmethod
    def close_stdin(self) -> None:
        """End of input."""

    @abstractmethod
    def read(self, timeout: float | None = None) -> bytes | None:
        """The next bytes of its stdout (split anywhere), ``b""`` at the end, None when
        nothing came within ``timeout`` seconds."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it ended; ``CommandFailed`` after ``timeout`` seconds."""

    @abstractmethod
    def kill(self) -> None:
        """Stop it and what it started (its process group): SIGTERM, SIGKILL half a
        second later."""

    @property
    @abstractmethod
    def stderr(self) -> bytes:
        """What it wrote to stderr so far."""

    @abstractmethod
    def close(self) -> None:
        """Kill it if it still runs, release the pipes or channel, and tell the
        transport's observer (the audit) once."""

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    # The python that runs the console's agent on the host (``backends.transport.bundle``),
    # None when the host has none.
    agent_python: str | None = None

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Within it, the code running (and the contexts it copies with ``contextvars``
        into helper threads) reaches the host through one long-lived helper where the
        transport has one (``SshTransport``: one agent for a job, its locks held by it).
        Nothing for a transport without."""
        return contextlib.nullcontext()

    @abstractmethod
    def spawn(self, argv: list[str], *, audit_as: list[str] | None = None) -> Process:
        """Start ``argv`` (never a shell string) with its stdin and stdout as byte
        streams, for a long-lived stream between hosts. Refused in read-only mode unless
        ``argv`` only reads (``ReadOnlyViolation``); ``CommandFailed`` when it cannot be
        started. The audit records it when it is closed, as ``audit_as`` when given
        (what a shipped agent runs for us, e.g. its zstd), with its exit status (-1 when
        it was killed).
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

    @abstractmethod
    def zero_blocks(self, path: str, budget: int) -> tuple[int, int, int]:
        """(allocated, read, zero) bytes of the regular file ``path``: its allocated
        extents, the bytes of them read (at most ``budget``, samples spread over the
        extents past it), and how many of those were 4 KiB blocks of zeroes."""

    # -- for snapshots, wipes, archives (the jobs issue) -----------------------------

    @abstractmethod
    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat`` of ``path`` on the host (``FileNotFoundError`` when missing)."""

    @abstractmethod
    def link(self, existing: str, new: str) -> None:
        """A second name ``new`` for the file ``existing`` (a hard link: one inode), the
        directory fsynced; ``FileExistsError`` when ``new`` is taken."""

    @abstractmethod
    def make_read_only(self, path: str) -> None:
        """Clear the write bits of the regular file ``path`` (``chmod a-w``, never through
        a symlink), durably."""

    @abstractmethod
    def copy_attributes(self, source: str, target: str) -> None:
        """Give the regular file ``target`` the permission bits of ``source``, and its
        owner and group where this process may (a new disk standing in for an old one)."""

    @abstractmethod
    def write_new_file(self, path: str, data: bytes) -> None:
        """Create ``path`` (never an existing name) holding ``data``, fsynced."""

    @abstractmethod
    def wipe_file(self, path: str, pattern: str, *, progress: ByteProgress | None = None,
                  should_cancel: CancelCheck | None = None) -> int:
        """Overwrite every allocated extent of the regular file ``path`` with zeroes
        (``pattern`` "zero") or random bytes ("random"), in place, then fsync; holes are
        left alone (a 1 TiB sparse file with 1 MiB of data costs 1 MiB). Returns the
        bytes written. ``Cancelled`` leaves the file partly overwritten."""

    @abstractmethod
    def compress_file(self, source: str, out: str, argv: list[str], *,
                      progress: ByteProgress | None = None,
                      should_cancel: CancelCheck | None = None) -> StreamResult:
        """Stream the raw file ``source`` through ``argv`` (a compressor reading stdin and
        writing stdout) into the new file ``out``, hashing what is written
        (``backends.archive.compress``). ``CommandFailed`` when the command fails,
        ``Cancelled``, ``OSError`` for the files; ``out`` is the caller's to remove."""

    @abstractmethod
    def decompress_file(self, archive_path: str, out: str, argv: list[str], *, length: int,
                        existing: bool, expect: ArchiveInfo,
                        progress: ByteProgress | None = None,
                        should_cancel: CancelCheck | None = None) -> StreamResult:
        """Stream ``archive_path`` through ``argv`` into ``out``, checking the sizes and
        checksums ``expect`` records (``backends.archive.decompress``). A mismatch raises
        ``ChecksumMismatch``; ``CommandFailed`` when the command fails; ``Cancelled``."""

    @abstractmethod
    def sha256_file(self, path: str, *, progress: ByteProgress | None = None,
                    should_cancel: CancelCheck | None = None) -> tuple[str, int]:
        """(sha256 in hex, size) of the regular file ``path``. Reads only."""

    @abstractmethod
    def lock_file(self, path: str, holder: str) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive ``flock`` of the file ``path`` on the host (created, with
        its directory, if missing) while the context is open, with ``holder`` written
        in it; ``VolumeBusy`` naming the holder written there when somebody has it.

        The lock dies with whatever holds it on the host (a process, or a connection),
        so no lock outlives a console that died.
        """


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
    preallocate: bool = False  # create preallocated (falloc, full), zeroed on request
    snapshot: bool = False  # snapshot a disk: it stays writable, a snapshot holds the past
    clone: bool = False  # a new disk from a snapshot: an overlay, or a full copy
    wipe: bool = False  # overwrite a volume's data before deleting it
    archive: bool = False  # archive to a compressed file, restore from one


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
        preallocation: str | None = None,
        zero: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """Create a volume; on any failure or cancel nothing is left under ``name``, and
        the temporary file (``temp_name``, chosen and journaled by the caller, or made up)
        is removed.

        ``preallocation``: None makes a sparse volume; "falloc" reserves every block
        with fallocate() (no data written: the blocks are unwritten extents that read as
        zeroes, by POSIX's word); "full" writes zeroes over the whole volume. Not with a
        ``backing`` (qemu-img 7.2 refuses it without extended L2 entries).

        Every new volume reads as zeroes. ``zero`` makes those zeroes physical: the
        allocated blocks are written with zeroes, so the volume's extents hold zeroes on
        the device too (nothing of an earlier file lies under them) and thin storage below
        has really provided them. It needs ``preallocation`` (a sparse volume allocates
        nothing to zero) and turns "falloc" into "full"; "full" writes them already.

        Raises ``VolumeExists`` (nothing touched) or ``InvalidRequest`` for bad input.
        """
        raise NotSupported("creating volumes is not supported", pool=pool.name, host=pool.host)

    def measure_create(self, pool: Pool, fmt: ImageFormat, capacity: int, *,
                       preallocation: str | None = None) -> int:
        """Bytes a new volume takes in ``pool`` right after ``create_volume``: its
        metadata when sparse, everything (metadata included) when preallocated."""
        raise NotSupported("measuring new volumes is not supported", pool=pool.name,
                           host=pool.host)

    def holds_data(self, volume: Volume) -> bool:
        """Whether the volume's own data is non-empty (re-read from disk); when a driver
        cannot tell, the volume is treated as precious."""
        return True

    def delete_volume(
        self,
        pool: Pool,
        name: str,
        *,
        wipe: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        """Remove one volume. The caller has already refused deleting a base of others.

        Refused (``VolumeBusy``) while a running QEMU holds it. ``wipe`` ("zero" or
        "random") first overwrites the volume's allocated extents in place and fsyncs
        them, so its data is gone from the blocks it occupied, not only unlinked (on a
        copy-on-write file system or an SSD the old blocks may survive where the file no
        longer maps them); a file with other hard links is never wiped (their data would
        go too). A cancel during the wipe stops it: the volume is left partly overwritten
        and not deleted.
        """
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

    def measure_resize(self, pool: Pool, name: str, capacity: int) -> int:
        """Bytes growing the volume to ``capacity`` takes from ``pool`` at once, to
        reserve before it starts: a thick LV's new extents, a qcow2's larger L1 table;
        nothing for what stays sparse (allocated later, as the guest writes). 0 for a
        shrink or the same size. Reads only."""
        raise NotSupported("measuring resizes is not supported", pool=pool.name,
                           host=pool.host)

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
        strategy: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """Copy the data of volume ``name`` (its whole chain, flattened) into a new volume
        ``dest_name`` of ``dest_pool`` in format ``fmt`` (None: the source's).

        Sparse: what reads as zeroes stays unallocated. ``strategy`` "space": the same,
        except that a read-only snapshot copied within its pool as qcow2 becomes a qcow2
        overlay on it (no data copied; the copy depends on the snapshot). "performance":
        a full copy with every byte preallocated (raw or qcow2; not incremental).

        Written under a temporary name in ``dest_pool`` (``temp_name``, chosen and
        journaled by the caller, or made up) and published whole. An existing
        ``dest_name`` raises ``VolumeExists`` before any work and is never touched, unless
        ``overwrite``: then the complete new volume replaces it atomically at the end.

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

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None, *,
                     full: bool = False, base_depth: int = 0) -> int:
        """Bytes a full copy of the volume into ``fmt`` (None: its own) may write, to
        reserve before it starts; ``full``: preallocated, every byte. ``base_depth`` > 0:
        an incremental copy onto a copy of the image that many links down the chain,
        which writes at most what the images above it hold. Reads only."""
        raise NotSupported("measuring copies is not supported", pool=pool.name,
                           host=pool.host)

    def check_volume(self, pool: Pool, name: str, *, force_share: bool) -> CheckResult:
        """``qemu-img check`` of one volume's own metadata (never its backing).

        ``force_share`` reads an image a QEMU holds open (the result may be
        inconsistent). A check that could not run to the end comes back with status
        ``error`` and qemu-img's message; ``NotSupported`` when the format has none
        (raw: exit 63 is "not supported", not an error).
        """
        raise NotSupported("checking volumes is not supported", pool=pool.name,
                           host=pool.host, volume=name)

    def temporary_files(self, pool: Pool, names: Sequence[str]) -> list[TemporaryFile]:
        """Size, allocation and mtime of the pool's temporary files ``names`` (from
        ``PoolScan.temporaries``); a name gone since is left out."""
        raise NotSupported("listing temporary files is not supported", pool=pool.name,
                           host=pool.host)

    def count_zeroes(self, volume: Volume, budget: int) -> ZeroCount:
        """How much of the volume file's allocated space holds only zeroes, reading at
        most ``budget`` bytes (a sample spread over the file past it)."""
        raise NotSupported("counting zeroes is not supported", pool=volume.pool,
                           host=volume.host, volume=volume.name)

    def same_content(self, a: Volume, b_path: str, b_format: ImageFormat | str, *,
                     should_cancel: CancelCheck | None = None) -> bool:
        """Whether the guest sees the same bytes in ``a`` and in the image at ``b_path``
        (``qemu-img compare``: reads both, so it takes as long as reading them)."""
        raise NotSupported("comparing volumes is not supported", host=a.host, pool=a.pool,
                           volume=a.name)

    def volume_in_use(self, volume: Volume) -> bool:
        """Whether a running QEMU (or qemu-nbd, qemu-storage-daemon) has the volume open
        for writing, as its file lock says. Reads only."""
        raise NotSupported("telling whether a volume is in use is not supported",
                           host=volume.host, pool=volume.pool, volume=volume.name)

    def snapshot_volume(
        self,
        pool: Pool,
        name: str,
        snapshot: str,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """Take a snapshot of the disk ``name``: afterwards ``snapshot`` (a new name in the
        same pool) is an immutable volume holding the data as it was, read-only on disk,
        and ``name`` is still the writable disk, a new qcow2 overlay on ``snapshot``.
        Returns the snapshot.

        The current file becomes the snapshot: nothing is copied. A raw disk therefore
        becomes a qcow2 disk (its snapshot stays raw): whatever opens it must be told the
        new format. The steps: ``snapshot`` is made a hard link of the disk, the overlay
        is created under ``temp_name`` with the disk's permissions, fsynced and renamed
        over ``name`` (atomic), then ``snapshot`` is made read-only and the directory
        fsynced. At every moment the disk's name holds either the old disk, whole, or the
        new overlay; ``settle_snapshot`` finishes or undoes what a crash interrupted.

        Refused: a disk a running QEMU holds (``VolumeBusy``), a taken ``snapshot`` name
        (``VolumeExists``), a volume that is a snapshot already or unusable
        (``InvalidRequest``). The caller refuses disks others are based on (their
        backing would change under them). A cancel is honoured before the first step
        only: the steps are quick metadata changes. On failure the disk is as it was.
        """
        raise NotSupported("snapshots are not supported", pool=pool.name, host=pool.host)

    def settle_snapshot(self, pool: Pool, name: str, snapshot: str,
                        temp_name: str | None) -> bool:
        """After a snapshot was interrupted: when the disk ``name`` is already the overlay
        on ``snapshot``, finish it (the snapshot made read-only) and return True; else
        undo it (remove the temporary overlay, and ``snapshot`` if it is still a second
        name of the disk) and return False. Never removes a ``snapshot`` that is another
        file (one that was there before)."""
        raise NotSupported("snapshots are not supported", pool=pool.name, host=pool.host)

    def clone_volume(
        self,
        pool: Pool,
        name: str,
        dest_pool: Pool,
        dest_name: str,
        *,
        strategy: str = "space",
        fmt: ImageFormat | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """A new writable disk ``dest_name`` in ``dest_pool`` (same host) holding the data
        of the snapshot ``name``.

        ``strategy`` "space": a qcow2 overlay backed by the snapshot (the snapshot must be
        read-only on disk, or writes to it would change the clone); it records the
        snapshot by name in the same directory, by absolute path from another pool.
        "performance": a full, standalone copy (``copy_volume``; ``fmt`` None keeps the
        snapshot's format). Published whole like a copy; an existing ``dest_name`` is
        never touched (``VolumeExists``).
        """
        raise NotSupported("cloning volumes is not supported", pool=pool.name, host=pool.host)

    def archive_volume(
        self,
        pool: Pool,
        name: str,
        dest: str,
        *,
        level: int = 1,
        overwrite: bool = False,
        producer: str = "",
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> ArchiveInfo:
        """Write the volume's guest-visible data (its chain flattened, as raw) compressed
        with zstd (``level``, every core) to the absolute path ``dest`` on the host, and a
        JSON sidecar ``dest + ".json"`` recording the volume, its format and size, and
        the sha256 of the compressed file (zstd's frame checksum guards the content).
        Returns what the sidecar says.

        Free space at ``dest`` is checked up front against ``measure_archive``. Both
        files are written under temporary names in ``dest``'s directory (``temp_name``,
        ``temp_name + ".json"``, and for a volume that is not raw the flattened copy
        ``temp_name + ".raw"``: qemu-img cannot write raw to a pipe), then published: the
        sidecar first, the archive last. An existing ``dest`` or sidecar is refused
        (``VolumeExists``) unless ``overwrite``; a sidecar of ours with no archive beside
        it (what a crash between the two publications leaves) is replaced. Refused while
        a running QEMU holds the volume (the archive would be torn). On failure or cancel
        the temporary files are removed.
        """
        raise NotSupported("archiving volumes is not supported", pool=pool.name,
                           host=pool.host)

    def measure_archive(self, pool: Pool, name: str) -> int:
        """Bytes an archive of the volume may take at most at its destination, with its
        temporary files: the volume's data (the allocated bytes of its chain, at most its
        size; zstd never grows incompressible data by more than a fraction), twice when
        it is flattened first."""
        raise NotSupported("archiving volumes is not supported", pool=pool.name,
                           host=pool.host)

    def read_archive(self, path: str) -> ArchiveInfo:
        """The sidecar of the archive at ``path``; ``InvalidRequest`` when either file is
        missing or the sidecar is not one."""
        raise NotSupported("archives are not supported")

    def restore_volume(
        self,
        pool: Pool,
        archive: str,
        name: str,
        *,
        fmt: ImageFormat | None = None,
        into_existing: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        """Restore the archive at ``archive`` (with its sidecar) into volume ``name``.

        A new volume (``into_existing`` False): raw (``fmt`` None or raw, sparse) or qcow2
        (decompressed into ``temp_name + ".raw"``, then converted), written under
        ``temp_name`` and published whole; ``VolumeExists`` if the name is taken.

        An existing volume (``into_existing``): at least the archive's size
        (``InvalidRequest`` otherwise) and keeping its format, size and name; what lies
        past the archive's data reads as zeroes afterwards. A raw volume is written in
        place, after the archive file's checksum was verified whole (holes are punched
        where the data is zeroes and past its end: a preallocated volume loses its
        preallocation there). Any other format gets the data through ``temp_name +
        ".raw"``, decompressed and verified at the volume's full size, then written with
        ``qemu-img convert -n`` (qemu-img writes only the source's length, so the staged
        raw file carries the zeroes past the archive's end). Refused for a snapshot and
        while a running QEMU holds the volume; the caller refuses a base of others.

        The data's sha256 and size are checked against the sidecar on the way; a
        mismatch (``ChecksumMismatch``) or a damaged archive fails the restore and
        removes the temporary files. Only when a raw volume written in place fails half
        way does it keep what was written (the error says so).
        """
        raise NotSupported("restoring volumes is not supported", pool=pool.name,
                           host=pool.host)

    def measure_restore(self, pool: Pool, archive: str, name: str, *,
                        fmt: ImageFormat | None = None, into_existing: bool = False) -> int:
        """Bytes a restore may write into ``pool``, temporary files included."""
        raise NotSupported("restoring volumes is not supported", pool=pool.name,
                           host=pool.host)
