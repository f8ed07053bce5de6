"""The storage model: frozen dataclasses shared by every layer.

Drivers produce these; the console caches, assesses and shows them. Nothing here does
I/O. Paths are ``str`` decoded with ``os.fsdecode`` (surrogateescape), so a file name
that is not UTF-8 survives the round trip back to the file system unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ImageFormat(StrEnum):
    """Image formats the probe recognises; ``UNKNOWN`` is read as raw, never guessed."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VDI = "vdi"
    VPC = "vpc"
    VHDX = "vhdx"
    LUKS = "luks"
    ISO = "iso"


class HealthState(StrEnum):
    OPTIMIZED = "optimized"
    DEGRADED = "degraded"
    BROKEN = "broken"


class LinkProblem(StrEnum):
    """Why a backing chain stops before its natural end."""

    MISSING = "missing"  # the backing file does not exist
    LOOP = "loop"  # the chain comes back to an image already in it
    ESCAPE = "escape"  # the backing lies outside the host's allowed roots
    NOT_REGULAR = "not-regular"  # a FIFO, socket, device or directory: never opened
    UNDECLARED_FORMAT = "undeclared-format"  # no backing format: never probed
    UNREADABLE = "unreadable"  # exists but cannot be read or parsed
    TOO_DEEP = "too-deep"  # longer than the hard limit on links followed


@dataclass(frozen=True)
class Host:
    """A machine the console reaches. ``uri`` is ``local`` for this one."""

    name: str
    uri: str = "local"


@dataclass(frozen=True)
class Capacity:
    """Space of a pool in bytes: ``committed`` is the sum of its volumes' capacities."""

    capacity: int
    allocation: int
    available: int
    committed: int = 0


@dataclass(frozen=True)
class Pool:
    """A place volumes live and free space comes from."""

    host: str
    name: str
    kind: str  # driver name: "dir", later "libvirt", "lvm"
    path: str
    capacity: Capacity | None = None
    active: bool = True  # a libvirt pool can be defined but stopped: no volumes to list
    pool_type: str = ""  # libvirt's pool type (dir, fs, logical, iscsi, ...); "" elsewhere


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image says, as parsed by ``backends.probe``.

    ``virtual_size`` is the guest-visible size (``qemu-img info``'s virtual-size).
    ``problems`` lists human-readable reasons the header is unusable or suspect; a
    non-empty ``problems`` with ``truncated`` or ``invalid`` means the fields may be 0.
    """

    format: ImageFormat
    virtual_size: int
    cluster_size: int | None = None
    version: int | None = None  # qcow2 2 or 3, vmdk/vdi/vhdx header version
    backing_file: str | None = None  # exactly as written in the header
    backing_format: str | None = None  # from the qcow2 backing-format extension
    data_file: str | None = None  # qcow2 external data file name: never opened
    dirty: bool = False
    corrupt: bool = False
    compression: str | None = None  # qcow2 compression type when not zlib
    extended_l2: bool = False
    unknown_incompatible: int = 0  # bits of a qcow2 incompatible_features we do not know
    encrypted: bool = False
    invalid: bool = False  # a magic matched but the header does not hold together
    truncated: bool = False  # the file ends inside the header
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainLink:
    """One image of a backing chain, leaf first."""

    path: str
    format: str
    capacity: int = 0


@dataclass(frozen=True)
class Chain:
    """A volume and its backing volumes, leaf first, with why it stops if it stops early.

    ``problem_path`` is the backing reference that could not be followed (as resolved,
    or as written when it cannot be resolved); it is reported, never opened.
    """

    links: tuple[ChainLink, ...]
    problem: LinkProblem | None = None
    problem_path: str | None = None
    problem_detail: str = ""

    @property
    def depth(self) -> int:
        """Number of images in the chain, the volume itself included."""
        return len(self.links)


@dataclass(frozen=True)
class Health:
    state: HealthState
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """One disk image as discovered on disk, before the console assesses it.

    ``backing`` is the resolved backing path (or the name as written, when it cannot be
    resolved); ``chain`` holds what following it safely found.
    """

    host: str
    pool: str
    name: str
    path: str
    format: ImageFormat
    capacity: int
    allocation: int
    mtime: float
    info: ImageInfo
    chain: Chain
    backing: str | None = None
    backing_format: str | None = None
    readonly: bool = False  # read-only on disk: shown as a snapshot
    error: str | None = None  # the file could not be read at all
    in_use: bool = False  # a running QEMU holds it for writing (its file lock)
    used_by: tuple[str, ...] = ()  # libvirt domains whose disks (or their chains) name it
    used_by_running: tuple[str, ...] = ()  # those of ``used_by`` that are running

    @property
    def chain_depth(self) -> int:
        return self.chain.depth


@dataclass(frozen=True)
class Progress:
    """How far an operation is: stage X of Y, and bytes (``total`` 0 when unknown)."""

    stage: int = 1
    stages: int = 1
    done: int = 0
    total: int = 0
    label: str = ""
    # False while a call that cannot be interrupted runs (a libvirt wipe): a cancel is
    # then refused with ``label`` as the reason, not accepted and ignored.
    cancellable: bool = True

    @property
    def percent(self) -> float:
        """Percent of the current stage, or -1 when the total is unknown."""
        return -1.0 if self.total <= 0 else min(100.0, 100.0 * self.done / self.total)


@dataclass(frozen=True)
class PoolScan:
    """The result of listing one pool: its capacity and every volume, in one piece."""

    pool: Pool
    volumes: tuple[Volume, ...] = field(default_factory=tuple)
    skipped: tuple[str, ...] = ()  # entries that are not volumes (dirs, FIFOs, ...)
    temporaries: tuple[str, ...] = ()  # names of job outputs in flight (``TEMP_PREFIX``)


@dataclass(frozen=True)
class TemporaryFile:
    """A job's output under its temporary name, in a pool's directory."""

    name: str
    size: int
    allocation: int
    mtime: float


@dataclass(frozen=True)
class ZeroCount:
    """Zeroes in a file's allocated extents: ``read`` of its ``allocated`` bytes were
    read (a sample when the budget was smaller), ``zero`` of those in 4 KiB blocks of
    zeroes only."""

    allocated: int
    read: int
    zero: int

    @property
    def fraction(self) -> float:
        return self.zero / self.read if self.read else 0.0

    @property
    def estimated_zero(self) -> int:
        """Zero bytes over the whole allocation, extrapolated from what was read."""
        return self.zero if self.read >= self.allocated else int(self.allocated * self.fraction)
