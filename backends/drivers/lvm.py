"""LVM volume groups as pools, their logical volumes as volumes, over any transport.

Everything goes through ``transport.run`` with argv lists (``vgs``/``lvs`` reports in
JSON, ``lvcreate``/``lvresize``/``lvremove``), so the driver works the same locally and
over SSH. Device-mapper may be missing on a host (containers, the machines this project
is tested on): lvm2 still edits metadata there with ``--driverloaded n``, but nothing
can be activated, so what needs an active LV (snapshots, wipes, zeroing) is refused
with the reason. An LV is raw data: LVM records no format, and the transport's probes
open regular files only, so LV contents are never probed.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from backends.contract import (
    WIPES,
    CancelCheck,
    Cancelled,
    Capabilities,
    CommandFailed,
    CommandResult,
    Driver,
    InvalidRequest,
    NoSpace,
    NotSupported,
    PoolUnavailable,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.dir.guards import check_cancel
from backends.drivers.dir.names import size_text, where_of
from backends.model import (
    Capacity,
    Chain,
    ChainLink,
    ImageFormat,
    ImageInfo,
    Pool,
    PoolScan,
    Progress,
    Volume,
)

KIND = "lvm"
MAX_NAME = 127  # LVM's NAME_LEN less the terminating NUL
_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z")
# LVM refuses these for LVs: they name its own internal sub-volumes.
RESERVED_PREFIXES = ("snapshot", "pvmove")
RESERVED_PARTS = ("_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare",
                  "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin")
VG_FIELDS = ("vg_name", "vg_size", "vg_free", "vg_extent_size", "vg_extent_count",
             "vg_free_count", "lv_count", "vg_attr")
LV_FIELDS = ("lv_name", "lv_path", "lv_size", "lv_attr", "segtype", "origin",
             "origin_size", "pool_lv", "data_percent", "lv_active", "lv_device_open",
             "lv_time")
# lv_attr[0] of LVs that hold no guest data of their own: thin and VDO pools, pvmove.
NOT_VOLUMES = {"t": "thin pool", "d": "VDO pool", "p": "pvmove"}
_NO_DM = "device-mapper is not available on this host"
_NO_SPACE = ("insufficient free space", "insufficient suitable allocatable extents")


def validate_lv_name(name: str, *, pool: Pool) -> None:
    """Refuse names LVM would refuse, before running anything, saying why."""
    problem = _name_problem(name)
    if problem is None:
        if name.startswith(RESERVED_PREFIXES):
            problem = "LVM reserves names starting with 'snapshot' or 'pvmove'"
        else:
            part = next((p for p in RESERVED_PARTS if p in name), None)
            if part is not None:
                problem = f"LVM reserves names containing {part!r} for its sub-volumes"
    if problem is not None:
        raise InvalidRequest(problem, host=pool.host, pool=pool.name, volume=name,
                             hint="choose another name")


def validate_vg_name(pool: Pool) -> None:
    problem = _name_problem(pool.name)
    if problem is not None:
        raise InvalidRequest(f"not a volume group name: {problem}", host=pool.host,
                             pool=pool.name, hint="fix the pool in the config")


def _name_problem(name: str) -> str | None:
    if not name:
        return "the name is empty"
    if name in (".", ".."):
        return "a name cannot be '.' or '..'"
    if len(name) > MAX_NAME:
        return f"the name is longer than {MAX_NAME} characters"
    if not _NAME.match(name):
        return ("LVM names use only letters, digits and '+_.-', and do not start "
                "with '-'")
    return None


def round_to_extents(size: int, extent: int) -> int:
    """``size`` rounded up to whole extents (LVM allocates nothing smaller)."""
    return -(-size // extent) * extent


# -- argv builders (golden-tested) ---------------------------------------------------

def _lvm(command: str, device_mapper: bool) -> list[str]:
    # Without a kernel driver every command would first fail to talk to it; this tells
    # lvm2 not to try, and it then edits metadata only.
    return [command] if device_mapper else [command, "--driverloaded", "n"]


def _report(device_mapper: bool, command: str, fields: tuple[str, ...]) -> list[str]:
    return [*_lvm(command, device_mapper), "--reportformat", "json", "--units", "b",
            "--nosuffix", "-o", ",".join(fields)]


def vgs_argv(device_mapper: bool, vg: str | None = None) -> list[str]:
    return _report(device_mapper, "vgs", VG_FIELDS) + ([vg] if vg else [])


def lvs_argv(device_mapper: bool, vg: str) -> list[str]:
    return [*_report(device_mapper, "lvs", LV_FIELDS), vg]


def lvcreate_argv(device_mapper: bool, vg: str, name: str, size: int) -> list[str]:
    # -y answers lvcreate's "wipe the signature found?" prompt: a new LV must not look
    # like an old file system. Without device-mapper the LV cannot be activated, so
    # neither zeroed (-Zn) nor wiped: it holds whatever its extents held.
    flags = ["-y"] if device_mapper else ["-an", "-Zn", "-y"]
    return _lvm("lvcreate", device_mapper) + flags + ["-n", name, "-L", f"{size}b", vg]


def lvresize_argv(device_mapper: bool, vg: str, name: str, size: int, *,
                  shrink: bool) -> list[str]:
    # --force skips the "reduce, destroying data?" prompt: the caller asked to shrink.
    # Never -r: the file system inside is the growfs operation's business.
    force = ["--force"] if shrink else []
    return _lvm("lvresize", device_mapper) + force + ["-L", f"{size}b", f"{vg}/{name}"]


def lvremove_argv(device_mapper: bool, vg: str, name: str) -> list[str]:
    return [*_lvm("lvremove", device_mapper), "-y", f"{vg}/{name}"]


def lvsnapshot_argv(vg: str, origin: str, name: str, size: int | None) -> list[str]:
    """A read-only snapshot: thick with a COW area of ``size`` bytes, thin without."""
    cow = ["-L", f"{size}b"] if size is not None else []
    return ["lvcreate", "-s", "-p", "r", "-n", name, *cow, f"{vg}/{origin}"]


def lvactivate_argv(vg: str, name: str) -> list[str]:
    return ["lvchange", "-ay", f"{vg}/{name}"]


def shred_argv(path: str, pattern: str) -> list[str]:
    """One pass of zeroes or of random bytes over a block device."""
    passes = ["-n", "0", "-z"] if pattern == "zero" else ["-n", "1"]
    return ["shred", *passes, path]


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    # lvm2's warnings about the missing driver come first and say nothing of the error.
    lines = [line for line in lines if line and not line.startswith("WARNING:")]
    return lines[-1] if lines else ""


def _int(text: str) -> int:
    return int(text) if text else 0


def _time(text: str) -> float:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return 0.0


def _rows(result: CommandResult, kind: str) -> list[dict[str, str]]:
    data = json.loads(result.stdout)
    rows: list[dict[str, str]] = []
    for part in data.get("report", []):
        rows.extend(part.get(kind, []))
    return rows


def volume_from_row(pool: Pool, vg: str, row: dict[str, str]) -> Volume:
    """One ``lvs`` row as a raw volume; a snapshot's origin is its backing."""
    name, attr = row["lv_name"], row.get("lv_attr", "")
    path = row.get("lv_path") or f"/dev/{vg}/{name}"
    size = _int(row.get("lv_size", ""))
    origin = row.get("origin") or None
    snapshot = origin is not None
    # A thick snapshot's lv_size is its COW area; the guest sees the origin's size.
    capacity = _int(row.get("origin_size", "")) if snapshot else size
    capacity = capacity or size
    allocation = size
    percent = row.get("data_percent", "")
    if row.get("pool_lv") and percent:
        # A thin LV holds only what was written, as its pool's mapping says.
        allocation = int(size * float(percent) / 100)
    links = [ChainLink(path, "raw", capacity)]
    backing = None
    if origin is not None:
        backing = f"/dev/{vg}/{origin}"
        links.append(ChainLink(backing, "raw", capacity))
    return Volume(
        host=pool.host,
        pool=pool.name,
        name=name,
        path=path,
        format=ImageFormat.RAW,
        capacity=capacity,
        allocation=allocation,
        mtime=_time(row.get("lv_time", "")),  # LVM records creation, not modification
        info=ImageInfo(format=ImageFormat.RAW, virtual_size=capacity),
        chain=Chain(links=tuple(links)),
        backing=backing,
        backing_format="raw" if backing else None,
        # lv_attr[1] is the permission: "r" read-only, "R" read-only activation.
        readonly=snapshot or (len(attr) > 1 and attr[1] in "rR"),
        in_use=row.get("lv_device_open") == "open",
    )


class LvmDriver(Driver):
    """The volume groups of one host, through ``transport``.

    ``device_mapper``: whether the host's kernel has device-mapper; None finds out on
    first use (``lvs --version`` names the kernel driver's version only when it works).
    """

    def __init__(self, transport: Transport, *, device_mapper: bool | None = None) -> None:
        self.transport = transport
        self._device_mapper = device_mapper

    # -- what this host can do -----------------------------------------------------

    @property
    def device_mapper(self) -> bool:
        if self._device_mapper is None:
            result = self._read(["lvs", "--version"], host=self.transport.host)
            self._device_mapper = (result.returncode == 0
                                   and b"Driver version:" in result.stdout)
        return self._device_mapper

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # host-dependent
        dm = self.device_mapper
        return Capabilities(create=True, delete=True, create_formats=(ImageFormat.RAW,),
                            resize=True, preallocate=dm, snapshot=dm, wipe=dm)

    # -- discovery ------------------------------------------------------------------

    def discover_pools(self, host_name: str) -> list[Pool]:
        """Every volume group the host sees, as a pool with its capacity."""
        result = self._read(vgs_argv(self.device_mapper), host=host_name)
        if result.returncode != 0:
            raise PoolUnavailable(f"vgs failed: {_last_line(result.stderr)}",
                                  host=host_name)
        return [Pool(host=host_name, name=row["vg_name"], kind=KIND,
                     path=f"/dev/{row['vg_name']}", capacity=_capacity(row))
                for row in self._parse(result, "vg", host=host_name)]

    def scan_pool(self, pool: Pool) -> PoolScan:
        vg = self._vg(pool)
        rows = self._lvs(pool)
        volumes, skipped = [], []
        for row in rows:
            kind = _not_volume(row)
            if kind is not None:
                skipped.append(f"{row['lv_name']} ({kind})")
            else:
                volumes.append(volume_from_row(pool, pool.name, row))
        capacity = _capacity(vg, committed=sum(v.capacity for v in volumes))
        return PoolScan(pool=Pool(pool.host, pool.name, KIND, pool.path, capacity),
                        volumes=tuple(volumes), skipped=tuple(skipped))

    def probe_volume(self, pool: Pool, name: str) -> Volume:
        validate_lv_name(name, pool=pool)
        return self._volume_in(pool, name, self._lvs(pool))

    def _volume_in(self, pool: Pool, name: str, rows: list[dict[str, str]]) -> Volume:
        """The volume ``name`` among ``rows`` (one ``lvs`` listing of the pool)."""
        for row in rows:
            if row["lv_name"] == name:
                kind = _not_volume(row)
                if kind is not None:
                    raise InvalidRequest(f"{name} is a {kind}, not a volume",
                                         host=pool.host, pool=pool.name, volume=name)
                return volume_from_row(pool, pool.name, row)
        raise VolumeNotFound("the logical volume does not exist", host=pool.host,
                             pool=pool.name, volume=name, hint="refresh the pool")

    def pool_capacity(self, pool: Pool) -> Capacity:
        return _capacity(self._vg(pool))

    def volume_in_use(self, volume: Volume) -> bool:
        """Whether the LV's device is open (a VM, a mount, a qemu-nbd): LVM's open count."""
        pool = Pool(volume.host, volume.pool, KIND, f"/dev/{volume.pool}")
        return self.probe_volume(pool, volume.name).in_use

    def extent_size(self, pool: Pool) -> int:
        return _int(self._vg(pool)["vg_extent_size"])

    def describe_create(self, pool: Pool, capacity: int) -> str:
        """What ``create_volume`` will really make, for the confirmation and the job log."""
        extent = self.extent_size(pool)
        size = round_to_extents(capacity, extent)
        text = f"a raw LV of {size_text(size)}: {size // extent} extents of {size_text(extent)}"
        if size != capacity:
            text += f", rounded up from {size_text(capacity)}"
        if not self.device_mapper:
            text += f"; inactive and not zeroed ({_NO_DM}): it holds what its extents held"
        return text

    # -- operations -------------------------------------------------------------------

    def measure_create(self, pool: Pool, fmt: ImageFormat, capacity: int, *,
                       preallocation: str | None = None) -> int:
        """A thick LV takes all of its size, rounded up to whole extents."""
        return round_to_extents(capacity, self.extent_size(pool))

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
        """A thick raw LV of ``capacity`` rounded up to whole extents (lvcreate is one
        metadata change: no temporary name). ``zero`` and "full" preallocation write
        zeroes over it, which needs it active: refused without device-mapper."""
        where = where_of(pool, name)
        validate_lv_name(name, pool=pool)
        if fmt != ImageFormat.RAW:
            raise InvalidRequest(f"an LV holds raw data, not {fmt}", **where,
                                 hint="create it raw")
        if backing is not None:
            raise NotSupported("LVs are not created on a backing volume", **where,
                               hint="take a snapshot instead")
        if capacity <= 0:
            raise InvalidRequest("the size must be positive", **where)
        fill = zero or preallocation == "full"
        if fill and not self.device_mapper:
            raise NotSupported(f"writing zeroes over a new LV needs it active: {_NO_DM}",
                               **where, hint="create it without zeroing")
        vg = self._vg(pool)
        extent = _int(vg["vg_extent_size"])
        size = round_to_extents(capacity, extent)
        if any(row["lv_name"] == name for row in self._lvs(pool)):
            raise VolumeExists("a logical volume of that name exists", **where,
                               hint="choose another name; nothing was changed")
        free = _int(vg["vg_free"])
        if size > free:
            raise NoSpace(f"{size_text(size)} needed ({size // extent} extents), "
                          f"{size_text(free)} free in the volume group", **where,
                          hint="free space in the VG, extend it, or ask for less")
        check_cancel(should_cancel, where, "create")
        result = self._run(lvcreate_argv(self.device_mapper, pool.name, name, size), where)
        if result.returncode != 0:
            raise _failure(result, "lvcreate", where)
        if fill:
            try:
                self._shred(pool, name, "zero", where, progress, should_cancel)
            except StorageError:
                self._run(lvremove_argv(True, pool.name, name), where)
                raise
        return self.probe_volume(pool, name)

    def delete_volume(
        self,
        pool: Pool,
        name: str,
        *,
        wipe: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        where = where_of(pool, name)
        validate_lv_name(name, pool=pool)
        rows = self._lvs(pool)  # one listing for the volume and its snapshots
        volume = self._volume_in(pool, name, rows)
        if volume.in_use:
            raise VolumeBusy("the LV is open (a VM, a mount or qemu-nbd holds it)", **where,
                             hint="stop what uses it first")
        snapshots = [row["lv_name"] for row in rows if row.get("origin") == name]
        if snapshots:
            # lvremove -y would take the snapshots with it.
            raise VolumeBusy(f"snapshots depend on it: {', '.join(snapshots)}", **where,
                             hint="delete its snapshots first")
        if wipe is not None:
            if wipe not in WIPES:
                raise InvalidRequest(f"a wipe is one of {', '.join(WIPES)}", **where)
            if not self.device_mapper:
                raise NotSupported(f"wiping needs the LV active: {_NO_DM}; nothing was "
                                   "deleted", **where, hint="delete without wiping, or "
                                   "wipe it on a host with device-mapper")
            self._shred(pool, name, wipe, where, progress, should_cancel)
        else:
            check_cancel(should_cancel, where, "delete")
        result = self._run(lvremove_argv(self.device_mapper, pool.name, name), where)
        if result.returncode != 0:
            raise _failure(result, "lvremove", where)

    def measure_resize(self, pool: Pool, name: str, capacity: int) -> int:
        """A thick LV's growth in whole extents; a thin LV's comes from its thin pool
        as the guest writes (nothing from the VG now)."""
        rows = self._lvs(pool)
        volume = self._volume_in(pool, name, rows)
        if any(row["lv_name"] == name and row.get("pool_lv") for row in rows):
            return 0
        size = round_to_extents(capacity, self.extent_size(pool))
        return max(size - volume.capacity, 0)

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
        """Resize to ``capacity`` rounded up to whole extents; never the file system."""
        where = where_of(pool, name)
        volume = self.probe_volume(pool, name)
        if volume.readonly:
            raise InvalidRequest("a snapshot or read-only LV is not resized", **where)
        if capacity <= 0:
            raise InvalidRequest("the size must be positive", **where)
        size = round_to_extents(capacity, self.extent_size(pool))
        if size == volume.capacity:
            return volume
        smaller = size < volume.capacity
        if smaller and not shrink:
            raise InvalidRequest(
                f"{size_text(size)} is smaller than the LV ({size_text(volume.capacity)}):"
                " shrinking destroys the data past the new end", **where,
                hint="ask for a shrink explicitly")
        if smaller and volume.in_use:
            raise VolumeBusy("the LV is open: it is not shrunk", **where,
                             hint="stop what uses it first")
        check_cancel(should_cancel, where, "resize")
        argv = lvresize_argv(self.device_mapper, pool.name, name, size, shrink=smaller)
        result = self._run(argv, where)
        if result.returncode != 0:
            raise _failure(result, "lvresize", where)
        return self.probe_volume(pool, name)

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
        """An LVM snapshot ``snapshot`` of ``name``, read-only: one lvcreate, so nothing
        is left half done. Unlike a file snapshot the disk stays the origin and the
        snapshot depends on it (its backing). A thick snapshot gets a COW area the size
        of the origin, so it can never overflow; a thin one takes space as it diverges."""
        where = where_of(pool, snapshot)
        validate_lv_name(snapshot, pool=pool)
        if not self.device_mapper:
            raise NotSupported(f"LVM snapshots need device-mapper: {_NO_DM}", **where)
        validate_lv_name(name, pool=pool)
        rows = self._lvs(pool)  # one listing for the origin and the name's availability
        origin = self._volume_in(pool, name, rows)
        if origin.readonly:
            raise InvalidRequest(f"{name} is a snapshot or read-only already", **where)
        if any(row["lv_name"] == snapshot for row in rows):
            raise VolumeExists("a logical volume of that name exists", **where,
                               hint="choose another name; nothing was changed")
        thin = any(row["lv_name"] == name and row.get("pool_lv") for row in rows)
        cow = None
        if not thin:
            vg = self._vg(pool)
            cow = round_to_extents(origin.capacity, _int(vg["vg_extent_size"]))
            if cow > _int(vg["vg_free"]):
                raise NoSpace(f"the snapshot's COW area needs {size_text(cow)}, "
                              f"{size_text(_int(vg['vg_free']))} free", **where,
                              hint="free space in the VG or extend it")
        check_cancel(should_cancel, where, "snapshot")
        result = self._run(lvsnapshot_argv(pool.name, name, snapshot, cow), where)
        if result.returncode != 0:
            raise _failure(result, "lvcreate -s", where)
        return self.probe_volume(pool, snapshot)

    def settle_snapshot(self, pool: Pool, name: str, snapshot: str,
                        temp_name: str | None) -> bool:
        """An LVM snapshot is made by one command: it either exists or does not."""
        return any(row["lv_name"] == snapshot and row.get("origin") == name
                   for row in self._lvs(pool))

    # -- helpers ----------------------------------------------------------------------

    def _shred(self, pool: Pool, name: str, pattern: str, where: dict[str, str],
               progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        volume = self.probe_volume(pool, name)
        result = self._run(lvactivate_argv(pool.name, name), where)
        if result.returncode != 0:
            raise _failure(result, "lvchange -ay", where)
        if progress is not None:
            progress(Progress(1, 1, 0, volume.capacity, f"wipe ({pattern})"))
        result = self._run(shred_argv(volume.path, pattern), where,
                           should_cancel=should_cancel)
        if result.returncode != 0:
            raise _failure(result, "shred", where)
        if progress is not None:
            progress(Progress(1, 1, volume.capacity, volume.capacity, f"wipe ({pattern})"))

    def _vg(self, pool: Pool) -> dict[str, str]:
        validate_vg_name(pool)
        result = self._read(vgs_argv(self.device_mapper, pool.name), host=pool.host,
                            pool=pool.name)
        rows = self._parse(result, "vg", host=pool.host, pool=pool.name) \
            if result.returncode == 0 else []
        if not rows:
            raise PoolUnavailable(
                f"volume group {pool.name} not found ({_last_line(result.stderr)})"
                if result.returncode else f"volume group {pool.name} not found",
                host=pool.host, pool=pool.name,
                hint="check its PVs are attached, or remove the pool from the config")
        return rows[0]

    def _lvs(self, pool: Pool) -> list[dict[str, str]]:
        validate_vg_name(pool)
        result = self._read(lvs_argv(self.device_mapper, pool.name), host=pool.host,
                            pool=pool.name)
        if result.returncode != 0:
            raise PoolUnavailable(f"lvs failed: {_last_line(result.stderr)}",
                                  host=pool.host, pool=pool.name,
                                  hint="check the volume group exists")
        return self._parse(result, "lv", host=pool.host, pool=pool.name)

    def _read(self, argv: list[str], **where: Any) -> CommandResult:
        try:
            return self.transport.run(argv)
        except CommandFailed as err:
            raise PoolUnavailable(f"cannot list volume groups: {err.what}", **where,
                                  hint="is lvm2 installed on the host?") from None

    def _parse(self, result: CommandResult, kind: str, **where: Any) -> list[dict[str, str]]:
        try:
            return _rows(result, kind)
        except (ValueError, AttributeError, TypeError):
            raise PoolUnavailable(f"{result.argv[0]} printed no JSON report", **where,
                                  hint="lvm2 2.02.158 or newer is needed") from None

    def _run(self, argv: list[str], where: dict[str, str],
             should_cancel: CancelCheck | None = None) -> CommandResult:
        try:
            return self.transport.run(argv, should_cancel=should_cancel)
        except Cancelled:
            raise Cancelled(f"{argv[0]} was cancelled", **where) from None


def _not_volume(row: dict[str, str]) -> str | None:
    """What the LV is when it holds no guest data of its own (a pool), else None."""
    kind = NOT_VOLUMES.get(row.get("lv_attr", "-")[:1])
    if kind is None and row.get("segtype", "") in ("thin-pool", "cache-pool"):
        kind = row["segtype"].replace("-", " ")
    return kind


def _capacity(vg: dict[str, str], committed: int = 0) -> Capacity:
    size, free = _int(vg["vg_size"]), _int(vg["vg_free"])
    return Capacity(capacity=size, allocation=size - free, available=free,
                    committed=committed)


def _failure(result: CommandResult, what: str, where: dict[str, str]) -> StorageError:
    """The error a failed lvm2 command stands for."""
    line = _last_line(result.stderr) or f"exited with status {result.returncode}"
    text = result.stderr.decode(errors="replace").lower()
    if any(marker in text for marker in _NO_SPACE):
        return NoSpace(f"{what}: not enough free extents in the volume group ({line})",
                       **where, hint="free space in the VG, extend it, or ask for less")
    if "already exists" in text:
        return VolumeExists(f"{what}: {line}", **where, hint="choose another name")
    if "volume group" in text and "not found" in text:
        return PoolUnavailable(f"{what}: {line}", **where,
                               hint="check its PVs are attached, or refresh the pools")
    if "not found" in text or "failed to find" in text:
        return VolumeNotFound(f"{what}: {line}", **where, hint="refresh the pool")
    if "in use" in text or ("open" in text and "can't remove" in text):
        return VolumeBusy(f"{what}: {line}", **where, hint="stop what uses it first")
    return CommandFailed(f"{what} failed: {line}", **where)
