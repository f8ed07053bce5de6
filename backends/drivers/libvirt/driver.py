"""The libvirt driver: the pools of one libvirt connection, of any type libvirt knows.

Everything goes through libvirt's API (never around it to the files), so the same code
serves a directory, an LVM volume group, an iSCSI target or an RBD pool, locally or on
a remote libvirtd. What libvirt does itself is not redone here: a failed volume build
is removed by libvirt (its backends' contract), wipes use its algorithms, resizes its
storage backend.

One connection is shared by every thread (libvirt's connections are thread-safe); only
opening it again after it dropped is serialised. Every call blocks: callers run them in
worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from backends import filesystems
from backends.contract import (
    CLONE_STRATEGIES,
    CancelCheck,
    Cancelled,
    Capabilities,
    Driver,
    HostUnreachable,
    InvalidRequest,
    NotSupported,
    PoolUnavailable,
    ProgressCallback,
    ReadOnlyViolation,
    StorageError,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.dir.temporaries import temporary_name
from backends.drivers.libvirt.domains import DiskUsers, collect_users
from backends.drivers.libvirt.errors import storage_error
from backends.drivers.libvirt.events import EventLoop
from backends.drivers.libvirt.poolxml import PoolForm, check_pool_xml, describe_pool
from backends.drivers.libvirt.volxml import (
    VolumeRecord,
    image_format,
    new_volume_xml,
    parse_volume,
)
from backends.model import (
    Capacity,
    Chain,
    ChainLink,
    ImageFormat,
    ImageInfo,
    LinkProblem,
    Pool,
    PoolScan,
    Progress,
    Volume,
)

log = logging.getLogger(__name__)

KIND = "libvirt"
# libvirt's wipe algorithms (virStorageVolWipeAlgorithm); all but zero run scrub(1).
LIBVIRT_WIPES = ("zero", "nnsa", "dod", "bsi", "gutmann", "schneier", "pfitzner7",
                 "pfitzner33", "random")
POOL_EVENTS = ("defined", "undefined", "started", "stopped", "created", "deleted")
REFRESHED = "refreshed"
POOL_STATES = ("inactive", "building", "running", "degraded", "inaccessible")
STREAM_CHUNK = 256 * 1024  # libvirt's stream messages carry at most 256 KiB
MAX_CHAIN = 64
HEAD_BYTES = 2048
MiB = 1 << 20

PoolEventCallback = Callable[[str, str, str], None]  # (host, pool name, event kind)
# Pools whose volumes are files: a copy's allocation grows as libvirt writes it. An LV
# is allocated whole when created, so its allocation tells nothing about a copy.
FILE_POOL_TYPES = ("dir", "fs", "netfs")
LVM_EXTENT = 4 << 20  # vgcreate's default: a logical pool's growth is rounded up to it
POLL_INTERVAL = 0.25  # seconds between looks at a libvirt call that reports nothing


class _CopyWatch:
    """Looks at a copy libvirt is building (``createXMLFrom``): the bytes written so far
    (the new volume's allocation, in file pools), and whether a cancel was asked."""

    def __init__(self, driver: LibvirtDriver, dest_lp: Any, dest_name: str, what: str,
                 total: int, *, measurable: bool, progress: ProgressCallback | None,
                 should_cancel: CancelCheck | None) -> None:
        self.driver = driver
        self.dest_lp = dest_lp
        self.dest_name = dest_name
        self.what = what
        self.total = total
        self.measurable = measurable
        self.progress = progress
        self.should_cancel = should_cancel
        self.done = 0
        self.cancelled = False

    def look(self) -> None:
        if not self.cancelled and self.should_cancel is not None and self.should_cancel():
            self.cancelled = True
        if self.measurable and self.progress is not None:
            try:
                allocation = int(self.dest_lp.storageVolLookupByName(self.dest_name)
                                 .info()[2])
            except self.driver.libvirt.libvirtError:
                allocation = 0  # not listed yet
            # Never backwards, and never "done" before libvirt says so.
            self.done = max(self.done, min(allocation, self.total - 1))
        self.report()

    def report(self) -> None:
        if self.progress is None:
            return
        if self.cancelled:
            label = (f"{self.what}: cancelling (libvirt cannot stop its copy: it is "
                     "removed when it ends)")
        elif self.measurable:
            label = self.what
        else:
            label = f"{self.what}: libvirt reports no progress for this pool type"
        total = self.total if self.measurable else 0
        self.progress(Progress(1, 1, self.done, total, label))


@dataclass(frozen=True)
class PoolInfo:
    """A libvirt pool's state beside its ``Pool``."""

    pool: Pool
    state: str  # one of POOL_STATES
    persistent: bool
    autostart: bool


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise NotSupported("libvirt-python is not installed",
                           hint="pip install libvirt-python") from None
    return libvirt


def _ignore_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; errors are raised and mapped."""


class LibvirtDriver(Driver):
    """The pools of one libvirt connection (``uri``), read-only when ``read_only``."""

    capabilities = Capabilities(
        create=True,
        delete=True,
        create_formats=(ImageFormat.RAW, ImageFormat.QCOW2),
        backing=True,
        resize=True,
        copy=True,
        copy_formats=(ImageFormat.RAW, ImageFormat.QCOW2),
        clone=True,
        wipe=True,
    )

    def __init__(self, uri: str, *, host: str = "", read_only: bool = False) -> None:
        self.uri = uri
        self.host = host or uri
        self.read_only = read_only
        self.poll_interval = POLL_INTERVAL
        self._lock = threading.Lock()
        self._conn: Any = None
        self._watch: PoolEventCallback | None = None
        self._watch_ids: list[int] = []
        self._generation = 0
        self.libvirt = _libvirt()
        self.libvirt.registerErrorHandler(_ignore_error, None)
        # Events and keepalives need the loop registered before the connection opens.
        EventLoop.ensure(self.libvirt)

    # -- the connection ----------------------------------------------------------------

    def connection(self) -> Any:
        """The open connection, opened (again) when it is not alive."""
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except self.libvirt.libvirtError:
                    pass
                for callback_id in self._watch_ids:
                    with contextlib.suppress(self.libvirt.libvirtError, AttributeError):
                        self._conn.storagePoolEventDeregisterAny(callback_id)
                self._watch_ids = []
                with contextlib.suppress(self.libvirt.libvirtError, AttributeError):
                    self._conn.close()
                self._conn = None
            opener = self.libvirt.openReadOnly if self.read_only else self.libvirt.open
            try:
                self._conn = opener(self.uri)
            except self.libvirt.libvirtError as err:
                raise HostUnreachable(
                    f"cannot connect to libvirt at {self.uri}: {err.get_error_message()}",
                    host=self.host, hint="is libvirtd running, and may this user use it?"
                ) from None
            if self._watch is not None:
                self._register_events(self._conn)
            return self._conn

    def close(self) -> None:
        """Stop watching and close the connection (the event loop keeps running)."""
        self.unwatch_pools()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(self.libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def _errors(self, what: str, pool: str | None = None,
                volume: str | None = None) -> Iterator[None]:
        try:
            yield
        except self.libvirt.libvirtError as err:
            raise storage_error(self.libvirt, err, what, host=self.host, pool=pool,
                                volume=volume) from None

    def _writable(self, what: str, pool: str | None = None, volume: str | None = None) -> None:
        if self.read_only:
            raise ReadOnlyViolation(f"{what} is refused: the console is read-only",
                                    host=self.host, pool=pool, volume=volume,
                                    hint="restart without --read-only to change storage")

    def _pool(self, name: str) -> Any:
        with self._errors("looking the pool up", pool=name):
            return self.connection().storagePoolLookupByName(name)

    def _active_pool(self, name: str) -> Any:
        lp = self._pool(name)
        with self._errors("asking the pool's state", pool=name):
            if not lp.isActive():
                raise PoolUnavailable("the pool is not started", host=self.host, pool=name,
                                      hint="start the pool first")
        return lp

    def _volume(self, lp: Any, pool: str, name: str) -> Any:
        if not name or "/" in name:
            raise InvalidRequest(f"{name!r} is not a volume name", host=self.host, pool=pool)
        try:
            return lp.storageVolLookupByName(name)
        except self.libvirt.libvirtError as err:
            raise storage_error(self.libvirt, err, "looking the volume up", host=self.host,
                                pool=pool, volume=name) from None

    def _exists(self, lp: Any, name: str) -> bool:
        try:
            lp.storageVolLookupByName(name)
        except self.libvirt.libvirtError:
            return False
        return True

    # -- pools ---------------------------------------------------------------------------

    def _pool_model(self, host_name: str, lp: Any) -> PoolInfo:
        desc = describe_pool(lp.XMLDesc(0))
        state, capacity, allocation, available = lp.info()[:4]
        active = bool(lp.isActive())
        pool = Pool(host=host_name, name=lp.name(), kind=KIND, path=desc.path,
                    capacity=Capacity(capacity, allocation, available) if active else None,
                    active=active, pool_type=desc.type)
        state_name = POOL_STATES[state] if 0 <= state < len(POOL_STATES) else str(state)
        return PoolInfo(pool, state_name, bool(lp.isPersistent()), bool(lp.autostart()))

    def discover_pools(self, host_name: str) -> list[Pool]:
        """Every pool libvirt reports, of any type, inactive ones included (``active``
        False, no capacity), sorted by name."""
        with self._errors("listing pools"):
            listed = self.connection().listAllStoragePools(0)
        pools = []
        for lp in listed:
            try:
                pools.append(self._pool_model(host_name, lp).pool)
            except self.libvirt.libvirtError:
                continue  # undefined between the listing and now
        return sorted(pools, key=lambda p: p.name)

    def pool_info(self, name: str) -> PoolInfo:
        lp = self._pool(name)
        with self._errors("reading the pool", pool=name):
            return self._pool_model(self.host, lp)

    def pool_xml(self, name: str, *, inactive: bool = False) -> str:
        """The pool's XML: live, or with ``inactive`` the persistent definition."""
        lp = self._pool(name)
        flags = self.libvirt.VIR_STORAGE_XML_INACTIVE if inactive else 0
        with self._errors("reading the pool's XML", pool=name):
            return str(lp.XMLDesc(flags))

    def define_pool(self, definition: PoolForm | str) -> Pool:
        """Define a persistent pool from a form or raw XML (checked here, then validated
        by libvirt against its schema). It is neither built nor started."""
        xml = definition if isinstance(definition, str) else definition.to_xml()
        name, _kind = check_pool_xml(xml)
        self._writable("defining a pool", pool=name)
        conn = self.connection()
        flags = getattr(self.libvirt, "VIR_STORAGE_POOL_DEFINE_VALIDATE", 0)
        with self._errors("defining the pool", pool=name):
            lp = conn.storagePoolDefineXML(xml, flags)
            return self._pool_model(self.host, lp).pool

    def build_pool(self, name: str, *, format_storage: str | None = None) -> None:
        """Make the pool's storage: its directory, or the volume group of a logical pool.

        ``format_storage`` (fs, disk and logical pools): None never formats anything;
        "if-empty" formats only where libvirt finds no file system or label already;
        "overwrite" formats whatever is there (destroys it).
        """
        self._writable("building a pool", pool=name)
        flags = {None: 0,
                 "if-empty": self.libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE,
                 "overwrite": self.libvirt.VIR_STORAGE_POOL_BUILD_OVERWRITE}.get(format_storage)
        if flags is None:
            raise InvalidRequest(f"unknown format_storage {format_storage!r}", host=self.host,
                                 pool=name, hint="None, 'if-empty' or 'overwrite'")
        lp = self._pool(name)
        with self._errors("building the pool", pool=name):
            lp.build(flags)

    def start_pool(self, name: str, *, build: bool = False) -> None:
        self._writable("starting a pool", pool=name)
        lp = self._pool(name)
        flags = self.libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if build else 0
        with self._errors("starting the pool", pool=name):
            lp.create(flags)

    def stop_pool(self, name: str) -> None:
        """Stop the pool (libvirt's destroy): its storage and volumes stay as they are."""
        self._writable("stopping a pool", pool=name)
        lp = self._pool(name)
        with self._errors("stopping the pool", pool=name):
            lp.destroy()

    def undefine_pool(self, name: str) -> None:
        """Forget the pool's definition; its storage stays. Stop it first."""
        self._writable("undefining a pool", pool=name)
        lp = self._pool(name)
        with self._errors("undefining the pool", pool=name):
            lp.undefine()

    def delete_pool(self, name: str) -> None:
        """Delete the pool's storage (the directory, the volume group): destructive.
        The pool must be stopped; refused while a running domain uses anything in it."""
        self._writable("deleting a pool's storage", pool=name)
        lp = self._pool(name)
        with self._errors("reading the pool", pool=name):
            target = describe_pool(lp.XMLDesc(0)).path
        users = self._disk_users()
        prefix = target.rstrip("/") + "/"
        busy = sorted({d for path, names in users.by_path.items() if path.startswith(prefix)
                       for d in names if d in users.running}
                      | {d for (p, _v), names in users.by_volume.items() if p == name
                         for d in names if d in users.running})
        if busy:
            raise VolumeBusy(f"running domain {', '.join(busy)} uses volumes of the pool",
                             host=self.host, pool=name, hint="shut the domain down first")
        with self._errors("deleting the pool's storage", pool=name):
            lp.delete(0)

    def set_autostart(self, name: str, on: bool) -> None:
        self._writable("changing autostart", pool=name)
        lp = self._pool(name)
        with self._errors("changing autostart", pool=name):
            lp.setAutostart(1 if on else 0)

    def refresh_pool(self, name: str) -> None:
        """Have libvirt read the pool's storage again (files added behind its back)."""
        lp = self._active_pool(name)
        with self._errors("refreshing the pool", pool=name):
            lp.refresh(0)

    # -- events -------------------------------------------------------------------------

    def watch_pools(self, callback: PoolEventCallback) -> None:
        """Call ``callback(host, pool name, kind)`` on every pool's lifecycle event
        (``POOL_EVENTS``) and refresh (``REFRESHED``), from the event thread. Kept over
        reconnects; one callback per driver (a second replaces the first). The callback
        runs on libvirt's event thread: it must return quickly and not call libvirt
        (post a message or queue a rescan for a worker instead)."""
        self.unwatch_pools()
        conn = self.connection()
        with self._lock:
            self._watch = callback
            self._register_events(conn)

    def unwatch_pools(self) -> None:
        with self._lock:
            self._watch = None
            ids, self._watch_ids = self._watch_ids, []
            conn = self._conn
        for callback_id in ids:
            with contextlib.suppress(self.libvirt.libvirtError, AttributeError):
                conn.storagePoolEventDeregisterAny(callback_id)

    def _register_events(self, conn: Any) -> None:
        # A dropped connection's registrations may outlive it (they hold a reference to
        # it): events carry the generation they were registered in, and old ones are
        # ignored.
        self._generation += 1
        lv = self.libvirt
        self._watch_ids = [
            conn.storagePoolEventRegisterAny(None, lv.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                                             self._on_lifecycle, self._generation),
            conn.storagePoolEventRegisterAny(None, lv.VIR_STORAGE_POOL_EVENT_ID_REFRESH,
                                             self._on_refresh, self._generation),
        ]

    def _deliver(self, generation: object, pool_name: str, kind: str) -> None:
        callback = self._watch
        if callback is None or generation != self._generation:
            return
        try:
            callback(self.host, pool_name, kind)
        except Exception:  # the event thread must survive a faulty callback
            log.exception("pool event callback failed for %s %s", pool_name, kind)

    def _on_lifecycle(self, _conn: Any, lp: Any, event: int, _detail: int,
                      generation: object) -> None:
        kind = POOL_EVENTS[event] if 0 <= event < len(POOL_EVENTS) else str(event)
        self._deliver(generation, lp.name(), kind)

    def _on_refresh(self, _conn: Any, lp: Any, generation: object) -> None:
        self._deliver(generation, lp.name(), REFRESHED)

    # -- volumes: listing ------------------------------------------------------------------

    def _disk_users(self) -> DiskUsers:
        """Every domain's disks (the live XML of running ones), read now."""
        conn = self.connection()
        with self._errors("listing domains"):
            try:
                domains = conn.listAllDomains(0)
            except self.libvirt.libvirtError as err:
                if err.get_error_code() in (self.libvirt.VIR_ERR_NO_SUPPORT,):
                    return DiskUsers()  # a storage-only connection knows no domains
                raise
        found = []
        for dom in domains:
            try:
                found.append((dom.name(), bool(dom.isActive()), dom.XMLDesc(0)))
            except self.libvirt.libvirtError:
                continue  # undefined meanwhile
        return collect_users(found)

    def _chain(self, record: VolumeRecord, fmt: ImageFormat,
               known: dict[str, VolumeRecord]) -> Chain:
        links = [ChainLink(record.path, str(fmt), record.capacity)]
        seen = {record.path}
        current = record
        while current.backing_path:
            path = current.backing_path
            if path in seen:
                return Chain(tuple(links), LinkProblem.LOOP, path)
            if not current.backing_format:
                return Chain(tuple(links), LinkProblem.UNDECLARED_FORMAT, path)
            if len(links) >= MAX_CHAIN:
                return Chain(tuple(links), LinkProblem.TOO_DEEP, path)
            nxt = known.get(path) or self._record_by_path(path)
            if nxt is None:
                return Chain(tuple(links), LinkProblem.ESCAPE, path,
                             "not a volume of any libvirt pool: not followed")
            seen.add(path)
            links.append(ChainLink(path, current.backing_format, nxt.capacity))
            current = nxt
        return Chain(tuple(links))

    def _record_by_path(self, path: str) -> VolumeRecord | None:
        try:
            return parse_volume(self.connection().storageVolLookupByPath(path).XMLDesc(0))
        except (self.libvirt.libvirtError, ET.ParseError):
            return None

    def _volume_model(self, pool: Pool, record: VolumeRecord, users: DiskUsers,
                      known: dict[str, VolumeRecord]) -> Volume:
        fmt = image_format(record.format)
        problems: tuple[str, ...] = ()
        if fmt is None:
            problems = (f"libvirt reports format {record.format!r}: read as raw",)
            fmt = ImageFormat.RAW
        info = ImageInfo(format=fmt, virtual_size=record.capacity,
                         backing_file=record.backing_path,
                         backing_format=record.backing_format, problems=problems)
        running = users.running_users(pool.name, record.name, record.path)
        return Volume(
            host=pool.host, pool=pool.name, name=record.name, path=record.path, format=fmt,
            capacity=record.capacity, allocation=record.allocation, mtime=record.mtime,
            info=info, chain=self._chain(record, fmt, known), backing=record.backing_path,
            backing_format=record.backing_format, readonly=record.readonly,
            in_use=bool(running), used_by=users.users(pool.name, record.name, record.path),
            used_by_running=running,
        )

    def scan_pool(self, pool: Pool) -> PoolScan:
        """The volumes libvirt lists for the pool (as of its last refresh: call
        ``refresh_pool`` first to see files added behind libvirt's back)."""
        lp = self._active_pool(pool.name)
        with self._errors("listing volumes", pool=pool.name):
            listed = lp.listAllVolumes(0)
            pool_now = self._pool_model(pool.host, lp).pool
        records: list[VolumeRecord] = []
        errors: list[Volume] = []
        for vol in listed:
            try:
                records.append(parse_volume(vol.XMLDesc(0)))
            except (self.libvirt.libvirtError, ET.ParseError) as err:
                name = vol.name()
                errors.append(Volume(
                    host=pool.host, pool=pool.name, name=name, path=vol.path(),
                    format=ImageFormat.RAW, capacity=0, allocation=0, mtime=0.0,
                    info=ImageInfo(ImageFormat.RAW, 0), chain=Chain(()), error=str(err)))
        users = self._disk_users()
        known = {r.path: r for r in records}
        volumes = [self._volume_model(pool, r, users, known) for r in records] + errors
        volumes.sort(key=lambda v: v.name)
        capacity = pool_now.capacity or Capacity(0, 0, 0)
        committed = Capacity(capacity.capacity, capacity.allocation, capacity.available,
                             sum(v.capacity for v in volumes))
        return PoolScan(pool=Pool(pool.host, pool.name, KIND, pool_now.path, committed,
                                  active=True, pool_type=pool_now.pool_type),
                        volumes=tuple(volumes))

    def probe_volume(self, pool: Pool, name: str) -> Volume:
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, name)
        with self._errors("reading the volume", pool=pool.name, volume=name):
            record = parse_volume(vol.XMLDesc(0))
        return self._volume_model(pool, record, self._disk_users(), {})

    def pool_capacity(self, pool: Pool) -> Capacity:
        lp = self._active_pool(pool.name)
        with self._errors("reading the pool's space", pool=pool.name):
            _state, capacity, allocation, available = lp.info()[:4]
        return Capacity(capacity, allocation, available)

    def volume_in_use(self, volume: Volume) -> bool:
        users = self._disk_users()
        return bool(users.running_users(volume.pool, volume.name, volume.path))

    def _refuse_running(self, volume: Volume, what: str) -> None:
        if volume.used_by_running:
            raise VolumeBusy(
                f"running domain {', '.join(volume.used_by_running)} uses it: not {what}",
                host=volume.host, pool=volume.pool, volume=volume.name,
                hint="shut the domain down (or detach the disk) first")

    # -- volumes: changes ------------------------------------------------------------------

    def _check_cancel(self, should_cancel: CancelCheck | None, pool: str, name: str,
                      what: str) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"{what} cancelled", host=self.host, pool=pool, volume=name)

    def _remove_new(self, lp: Any, name: str) -> None:
        """Remove what a failed build left under ``name`` (libvirt usually has already)."""
        with contextlib.suppress(self.libvirt.libvirtError):
            lp.storageVolLookupByName(name).delete(0)

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
        """libvirt builds the volume under its final name (it has no rename), and removes
        it when the build fails; ``temp_name`` is not used."""
        self._writable("creating a volume", pool=pool.name, volume=name)
        where: dict[str, Any] = {"host": pool.host, "pool": pool.name, "volume": name}
        if fmt not in self.capabilities.create_formats:
            raise InvalidRequest(f"libvirt volumes are created raw or qcow2, not {fmt}",
                                 **where)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise InvalidRequest("the size must be larger than 0", **where)
        if preallocation is not None or zero:
            raise NotSupported("preallocated volumes are not made through libvirt", **where,
                               hint="create it sparse")
        backing_path = backing_format = None
        if backing is not None:
            if fmt != ImageFormat.QCOW2:
                raise InvalidRequest("only a qcow2 volume can have a backing volume", **where)
            backing_path, backing_format = backing.path, str(backing.format)
        lp = self._active_pool(pool.name)
        if self._exists(lp, name):
            raise VolumeExists("the name is taken", **where, hint="nothing was touched")
        self._check_cancel(should_cancel, pool.name, name, "create")
        if progress:
            progress(Progress(1, 1, 0, capacity, "create"))
        xml = new_volume_xml(name, fmt, capacity, backing_path=backing_path,
                             backing_format=backing_format)
        try:
            with self._errors("creating the volume", pool=pool.name, volume=name):
                lp.createXML(xml, 0)
        except StorageError as err:
            if not isinstance(err, VolumeExists):
                self._remove_new(lp, name)
            raise
        if progress:
            progress(Progress(1, 1, capacity, capacity, "create"))
        return self.probe_volume(pool, name)

    def measure_create(self, pool: Pool, fmt: ImageFormat, capacity: int, *,
                       preallocation: str | None = None) -> int:
        """A sparse volume's metadata, at most: nothing for raw; for qcow2 its header,
        refcount and L1 tables (8 bytes of L1 per 512 MiB), rounded up generously."""
        if preallocation is not None:
            raise NotSupported("preallocated volumes are not made through libvirt",
                               host=pool.host, pool=pool.name, hint="create it sparse")
        if fmt == ImageFormat.RAW:
            return 0
        return MiB + (capacity // (512 * MiB) + 1) * 8 * 2

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None, *,
                     full: bool = False, base_depth: int = 0) -> int:
        """At most the source's virtual size, plus qcow2 metadata when the copy is qcow2
        (libvirt gives no sparse measure of a copy before it runs; that is also what a
        ``full`` copy takes). No incremental copies here (``copy_volume``)."""
        source = self.probe_volume(pool, name)
        target = fmt or source.format
        return source.capacity + self.measure_create(pool, target, source.capacity)

    def wipe_volume(self, pool: Pool, name: str, algorithm: str = "zero", *,
                    progress: ProgressCallback | None = None,
                    should_cancel: CancelCheck | None = None) -> Volume:
        """Overwrite the volume's data with one of libvirt's algorithms (``LIBVIRT_WIPES``;
        all but "zero" need scrub(1) on the host). Runs to its end once started: libvirt
        cannot interrupt a wipe, and reports no progress. ``progress`` hears so
        (``Progress.cancellable`` False, no total) just before the wipe starts, and
        ``should_cancel`` is asked one last time after that."""
        self._writable("wiping a volume", pool=pool.name, volume=name)
        volume = self.probe_volume(pool, name)
        self._wipe(pool, volume, algorithm, progress, should_cancel)
        return self.probe_volume(pool, name)

    def _wipe(self, pool: Pool, volume: Volume, algorithm: str,
              progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        if algorithm not in LIBVIRT_WIPES:
            raise InvalidRequest(f"unknown wipe algorithm {algorithm!r}", host=pool.host,
                                 pool=pool.name, volume=volume.name,
                                 hint=f"one of {', '.join(LIBVIRT_WIPES)}")
        self._refuse_running(volume, "wiped")
        self._check_cancel(should_cancel, pool.name, volume.name, "wipe")
        code = getattr(self.libvirt, f"VIR_STORAGE_VOL_WIPE_ALG_{algorithm.upper()}")
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, volume.name)
        if progress:
            # libvirt reports nothing while it wipes (no job info, and the allocation of
            # an overwritten file does not move) and cannot stop: said, then refused.
            progress(Progress(1, 1, 0, 0, f"wipe ({algorithm}): libvirt reports no "
                              "progress and cannot stop it once started",
                              cancellable=False))
        try:
            # The last look: a cancel asked before the mark above is honoured here.
            self._check_cancel(should_cancel, pool.name, volume.name, "wipe")
            with self._errors(f"wiping the volume ({algorithm})", pool=pool.name,
                              volume=volume.name):
                vol.wipePattern(code, 0)
        except BaseException:
            if progress:  # cancellable again, for what the caller does next
                progress(Progress(1, 1, 0, 0, f"wipe ({algorithm}) not done"))
            raise
        if progress:
            progress(Progress(1, 1, volume.capacity, volume.capacity, f"wipe ({algorithm})"))

    def delete_volume(
        self,
        pool: Pool,
        name: str,
        *,
        wipe: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        """``wipe`` is any of ``LIBVIRT_WIPES``. The wipe itself cannot be cancelled
        (``wipe_volume``); a cancel asked before it starts, or after it ended and before
        the delete, is honoured: in the latter case the volume is wiped and not deleted."""
        self._writable("deleting a volume", pool=pool.name, volume=name)
        volume = self.probe_volume(pool, name)
        self._refuse_running(volume, "deleted")
        if wipe is not None:
            self._wipe(pool, volume, wipe, progress, should_cancel)
        self._check_cancel(should_cancel, pool.name, name, "delete")
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, name)
        with self._errors("deleting the volume", pool=pool.name, volume=name):
            vol.delete(0)

    def measure_resize(self, pool: Pool, name: str, capacity: int) -> int:
        """A ``logical`` pool's LV takes its growth (libvirt's lvresize: rounded up to
        extents, which libvirt does not say, so one 4 MiB extent more is counted); a
        file grows sparse (libvirt resizes without ``ALLOCATE``): 0, as for other types,
        whose growth libvirt does not allocate either."""
        volume = self.probe_volume(pool, name)
        if capacity <= volume.capacity or pool.pool_type != "logical":
            return 0
        if volume.allocation < volume.capacity:  # a thin LV: its pool's, not the VG's
            return 0
        return capacity - volume.capacity + LVM_EXTENT

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
        """Through libvirt's backend (qemu-img resize for files, lvresize for LVs).
        Refused while a running domain uses the volume: grow it through the domain
        (``virsh blockresize``) instead."""
        self._writable("resizing a volume", pool=pool.name, volume=name)
        where: dict[str, Any] = {"host": pool.host, "pool": pool.name, "volume": name}
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise InvalidRequest("the new size must be larger than 0", **where)
        volume = self.probe_volume(pool, name)
        if capacity == volume.capacity:
            return volume
        smaller = capacity < volume.capacity
        if smaller and not shrink:
            raise InvalidRequest(
                f"{capacity} bytes is smaller than its size {volume.capacity}, and "
                "shrinking cuts off data", **where,
                hint="shrink it explicitly (--shrink) if that is what you want")
        self._refuse_running(volume, "shrunk" if smaller else "resized")
        if smaller and volume.format == ImageFormat.RAW:
            fs = filesystems.ext_filesystem(self._head_reader(pool, name))
            if fs is not None and fs.size > capacity:
                raise InvalidRequest(
                    f"its {fs.kind} file system takes {fs.size} bytes: shrinking to "
                    f"{capacity} would cut it", **where,
                    hint="shrink the file system first (resize2fs); nothing was changed")
        self._check_cancel(should_cancel, pool.name, name, "resize")
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, name)
        if progress:
            progress(Progress(1, 1, 0, capacity, "resize"))
        flags = self.libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if smaller else 0
        with self._errors("resizing the volume", pool=pool.name, volume=name):
            vol.resize(capacity, flags)
        if progress:
            progress(Progress(1, 1, capacity, capacity, "resize"))
        return self.probe_volume(pool, name)

    def _head_reader(self, pool: Pool, name: str) -> Callable[[int, int], bytes]:
        """The first sectors of a raw volume (its guest's first bytes), read once."""
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, name)
        stream = self.connection().newStream(0)
        head = b""
        with self._errors("reading the volume's first sectors", pool=pool.name, volume=name):
            try:
                vol.download(stream, 0, HEAD_BYTES, 0)
                while len(head) < HEAD_BYTES:
                    chunk = stream.recv(HEAD_BYTES - len(head))
                    if not isinstance(chunk, bytes) or not chunk:
                        break
                    head += chunk
                stream.finish()
            except self.libvirt.libvirtError:
                with contextlib.suppress(self.libvirt.libvirtError):
                    stream.abort()
                raise
        return lambda offset, length: head[offset:offset + length]

    def _copy_from(self, source_pool: Pool, name: str, dest_pool: Pool, dest_name: str,
                   fmt: ImageFormat | None, progress: ProgressCallback | None,
                   should_cancel: CancelCheck | None, what: str) -> Volume:
        self._writable(what, pool=dest_pool.name, volume=dest_name)
        where: dict[str, Any] = {"host": dest_pool.host, "pool": dest_pool.name,
                                 "volume": dest_name}
        source = self.probe_volume(source_pool, name)
        target_fmt = fmt or source.format
        if target_fmt not in self.capabilities.copy_formats:
            raise InvalidRequest(f"libvirt copies into raw or qcow2, not {target_fmt}",
                                 **where)
        dest_lp = self._active_pool(dest_pool.name)
        if self._exists(dest_lp, dest_name):
            raise VolumeExists("the name is taken", **where, hint="nothing was touched")
        self._check_cancel(should_cancel, dest_pool.name, dest_name, what)
        source_vol = self._volume(self._active_pool(source_pool.name), source_pool.name, name)
        # Bytes to write: libvirt skips runs of zeroes, so the source's allocation.
        total = source.allocation or source.capacity
        watch = _CopyWatch(self, dest_lp, dest_name, what, total,
                           measurable=dest_pool.pool_type in FILE_POOL_TYPES,
                           progress=progress, should_cancel=should_cancel)
        watch.report()
        xml = new_volume_xml(dest_name, target_fmt, source.capacity)
        try:
            with self._errors(what, pool=dest_pool.name, volume=dest_name):
                self._while_running(lambda: dest_lp.createXMLFrom(xml, source_vol, 0),
                                    watch.look)
        except StorageError as err:
            if not isinstance(err, VolumeExists):
                self._remove_new(dest_lp, dest_name)
            raise
        if watch.cancelled or (should_cancel is not None and should_cancel()):
            # libvirt has no abort for createXMLFrom (and refuses to delete a volume
            # still being built): the copy ran to its end and is removed now.
            self._remove_new(dest_lp, dest_name)
            if self._exists(dest_lp, dest_name):
                raise StorageError(f"{what} cancelled, but the copy could not be removed",
                                   host=self.host, pool=dest_pool.name, volume=dest_name,
                                   hint="delete the volume by hand")
            raise Cancelled(f"{what} cancelled: libvirt's copy ran to its end and was "
                            "removed", host=self.host, pool=dest_pool.name, volume=dest_name)
        if progress:
            progress(Progress(1, 1, total, total, what))
        return self.probe_volume(dest_pool, dest_name)

    def _while_running(self, call: Callable[[], object], look: Callable[[], None]) -> None:
        """``call()`` (a blocking libvirt call with no progress of its own) in a thread of
        its own, ``look()`` on this one every ``poll_interval`` seconds until it returns;
        its error is raised here. ``look`` may not stop it: it only watches."""
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as err:  # handed to the caller's thread
                failed.append(err)

        thread = threading.Thread(target=run, name="libvirt-call", daemon=True)
        thread.start()
        try:
            while True:
                thread.join(self.poll_interval)
                if not thread.is_alive():
                    break
                look()
        finally:
            thread.join()  # even when look() failed: never leave the call behind
        if failed:
            raise failed[0]

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
        """A full copy through libvirt (createXMLFrom) into a pool of the same
        connection, built under its final name and removed by libvirt if the copy fails.
        Progress is the new volume's allocation (file pools) against the source's, read
        every ``poll_interval`` seconds. libvirt cannot stop the copy: a cancel waits for
        it to end, then removes it (nothing is left under ``dest_name``).
        Neither ``overwrite`` nor incremental copies: libvirt cannot replace a volume
        atomically or build an overlay while copying. ``strategy`` "performance" is
        refused: libvirt's copy does not preallocate."""
        if strategy == "performance":
            raise NotSupported("libvirt's copy cannot preallocate", host=dest_pool.host,
                               pool=dest_pool.name, volume=dest_name,
                               hint="copy with strategy space, or into a directory pool")
        if overwrite or backing is not None:
            raise NotSupported("libvirt copies only into a new, standalone volume",
                               host=dest_pool.host, pool=dest_pool.name, volume=dest_name,
                               hint="delete the old volume first, or copy without --base")
        return self._copy_from(pool, name, dest_pool, dest_name, fmt, progress,
                               should_cancel, "copy")

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
        """"performance": a full copy (createXMLFrom); "space": a qcow2 overlay on the
        snapshot ``name`` (which must be read-only on disk)."""
        if strategy not in CLONE_STRATEGIES:
            raise InvalidRequest(f"unknown clone strategy {strategy!r}", host=pool.host,
                                 pool=pool.name, volume=name,
                                 hint=f"one of {', '.join(CLONE_STRATEGIES)}")
        if strategy == "performance":
            return self._copy_from(pool, name, dest_pool, dest_name, fmt, progress,
                                   should_cancel, "clone")
        source = self.probe_volume(pool, name)
        if not source.readonly:
            raise InvalidRequest("a space clone needs a read-only snapshot: writes to a "
                                 "writable volume would change the clone", host=pool.host,
                                 pool=pool.name, volume=name,
                                 hint="use the performance strategy, or snapshot first")
        return self.create_volume(dest_pool, dest_name, ImageFormat.QCOW2, source.capacity,
                                  backing=source, progress=progress,
                                  should_cancel=should_cancel)

    # -- streams ---------------------------------------------------------------------------

    def upload_volume(
        self,
        pool: Pool,
        name: str,
        source: str,
        *,
        create: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Volume:
        """Write the local file ``source`` into the volume from its first byte, through a
        virStream (the bytes of the file as they are: a qcow2 file makes a qcow2 volume).

        ``create``: make ``name`` first, a raw volume of the file's size; on failure or
        cancel it is deleted again. Into an existing volume ("upload over") the volume is
        overwritten in place: refused while a running domain uses it, and a failure or
        cancel leaves it partly written (libvirt has no way to publish it whole).
        """
        self._writable("uploading into a volume", pool=pool.name, volume=name)
        where: dict[str, Any] = {"host": pool.host, "pool": pool.name, "volume": name}
        try:
            size = os.stat(source).st_size
            handle = open(source, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as err:
            raise InvalidRequest(f"cannot read {source}: {err.strerror}", **where) from None
        created = False
        try:
            lp = self._active_pool(pool.name)
        except BaseException:
            handle.close()
            raise
        try:
            if create:
                if size <= 0:
                    raise InvalidRequest(f"{source} is empty", **where)
                self.create_volume(pool, name, ImageFormat.RAW, size,
                                   should_cancel=should_cancel)
                created = True
            else:
                volume = self.probe_volume(pool, name)
                self._refuse_running(volume, "overwritten")
            vol = self._volume(lp, pool.name, name)
            self._send(vol, handle, size, pool.name, name, progress, should_cancel)
        except BaseException:
            if created:
                self._remove_new(lp, name)
            raise
        finally:
            handle.close()
        with contextlib.suppress(StorageError):
            self.refresh_pool(pool.name)
        return self.probe_volume(pool, name)

    def _send(self, vol: Any, handle: Any, size: int, pool: str, name: str,
              progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        stream = self.connection().newStream(0)
        done = 0
        try:
            with self._errors("uploading", pool=pool, volume=name):
                vol.upload(stream, 0, size, 0)
                while done < size:
                    self._check_cancel(should_cancel, pool, name, "upload")
                    chunk = handle.read(STREAM_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(bytes(view))
                        view = view[sent:]
                    done += len(chunk)
                    if progress:
                        progress(Progress(1, 1, done, size, "upload"))
                stream.finish()
        except BaseException:
            with contextlib.suppress(self.libvirt.libvirtError):
                stream.abort()
            raise

    def download_volume(
        self,
        pool: Pool,
        name: str,
        dest: str,
        *,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> int:
        """Copy the volume's bytes (the file as it is, whatever its format) into the local
        file ``dest``, through a virStream. Written beside ``dest`` under a temporary
        name and published whole (fsync, then link, or rename with ``overwrite``); on
        failure or cancel the temporary file is removed. Returns the bytes written."""
        where: dict[str, Any] = {"host": pool.host, "pool": pool.name, "volume": name}
        if not overwrite and os.path.lexists(dest):
            raise VolumeExists(f"{dest} exists", **where, hint="nothing was touched")
        lp = self._active_pool(pool.name)
        vol = self._volume(lp, pool.name, name)
        with self._errors("reading the volume", pool=pool.name, volume=name):
            root = ET.fromstring(vol.XMLDesc(0))
        total = int(root.findtext("physical") or root.findtext("capacity") or 0)
        directory, base = os.path.split(os.path.abspath(dest))
        temp = os.path.join(directory, temporary_name(base))
        stream = self.connection().newStream(0)
        done = 0
        try:
            with open(temp, "xb") as out, self._errors("downloading", pool=pool.name,
                                                         volume=name):
                vol.download(stream, 0, 0, 0)
                while True:
                    self._check_cancel(should_cancel, pool.name, name, "download")
                    chunk = stream.recv(STREAM_CHUNK)
                    if not isinstance(chunk, bytes):
                        raise VolumeNotFound("the stream broke off", **where)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(Progress(1, 1, done, max(total, done), "download"))
                stream.finish()
                out.flush()
                os.fsync(out.fileno())
            if overwrite:
                os.replace(temp, dest)
            else:
                os.link(temp, dest)
                os.unlink(temp)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException as err:
            with contextlib.suppress(self.libvirt.libvirtError):
                stream.abort()
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(err, FileExistsError):
                raise VolumeExists(f"{dest} exists", **where,
                                   hint="nothing was touched") from None
            if isinstance(err, OSError):
                raise InvalidRequest(f"cannot write {dest}: {err.strerror}", **where) from None
            raise
        return done
