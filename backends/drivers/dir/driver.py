"""A directory of image files is a pool; its regular files are its volumes.

Works over any ``Transport``: the listing and probing happen in the transport's
scanner (in-process locally, one round trip remotely), and this module turns its plain
records into model objects.

Operations that make a new file (create, copy, clone, restore, and an archive outside
the pool) write it under a temporary name (``TEMP_PREFIX``) and publish it whole; resize,
growfs, a wipe and a restore into an existing volume change a volume in place, under the
job's lock; a snapshot renames a new overlay over the disk, atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from backends import archive, filesystems, qemuimg
from backends.archive import ArchiveInfo
from backends.contract import (
    CLONE_STRATEGIES,
    PREALLOCATIONS,
    RAW_SUFFIX,
    ROOM,
    WIPES,
    CancelCheck,
    Cancelled,
    Capabilities,
    ChecksumMismatch,
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
    TemporaryFile,
    Volume,
    ZeroCount,
)
from backends.transport.scanner import TEMP_PREFIX

MAX_NAME_BYTES = 255
# Formats qemu-img writes without a secret or an extent list to trust.
COPY_FORMATS = (ImageFormat.RAW, ImageFormat.QCOW2, ImageFormat.VMDK, ImageFormat.VDI,
                ImageFormat.VPC, ImageFormat.VHDX)
COPY_STRATEGIES = CLONE_STRATEGIES  # space: the least space; performance: preallocated
PREALLOCATED_FORMATS = (ImageFormat.RAW, ImageFormat.QCOW2)  # falloc works for both
HEAD_BYTES = 2048  # sector 0 (a boot signature) and the ext superblock at 1024
SIDECAR_MAX = 1 << 20
_LOCK_ERROR = re.compile(r'Failed to get (?:shared )?"[a-z-]+" lock')
_NO_SPACE = ("No space left on device", "Disk quota exceeded")


def validate_name(name: str, *, pool: Pool) -> None:
    """Refuse names that are not one plain file name in the pool's directory."""
    problem = None
    if not name:
        problem = "the name is empty"
    elif name in (".", "..") or "/" in name or "\0" in name:
        problem = "a volume name cannot be '.', '..' or contain '/' or NUL"
    elif name.startswith(TEMP_PREFIX):
        problem = f"names starting with {TEMP_PREFIX!r} are reserved for jobs in progress"
    elif len(os.fsencode(name)) > MAX_NAME_BYTES:
        problem = f"the name is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise InvalidRequest(problem, host=pool.host, pool=pool.name, volume=name,
                             hint="choose another name")


def temporary_name(name: str) -> str:
    """A fresh temporary name for a job's output that becomes ``name``."""
    return os.fsdecode(os.fsencode(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}")
                       [:MAX_NAME_BYTES])


def backing_reference(backing: Volume, directory: str) -> str:
    """How an image in ``directory`` records ``backing``: by name when they share the
    directory (the pair can move together), else by absolute path. A name with a ":"
    would be read by qemu as a protocol ("nbd:x"), so it is recorded by path too."""
    return _reference(backing.path, backing.name, directory)


def _reference(path: str, name: str, directory: str) -> str:
    same_dir = os.path.normpath(os.path.dirname(path)) == os.path.normpath(directory)
    return name if same_dir and ":" not in name else path


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def size_text(size: int) -> str:
    """``67108864 bytes (64.0 MiB)``: exact for the record, readable for a person."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size} bytes ({size / (1 << shift):.1f} {unit})"
    return f"{size} bytes"


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def copy_overlays(source: Volume, pool: Pool, dest_pool: Pool, *, strategy: str | None,
                  fmt: ImageFormat | None, incremental: bool) -> bool:
    """Whether a copy is made as a qcow2 overlay on its source: asked for the least
    space, of an immutable snapshot (an overlay on a writable disk would change under
    it) in the same pool (pools stay independent), as qcow2, not incremental."""
    return (strategy == "space" and not incremental and source.readonly
            and source.format != ImageFormat.ISO and source.capacity % 512 == 0
            and (pool.host, pool.name) == (dest_pool.host, dest_pool.name)
            and fmt in (None, ImageFormat.QCOW2))


class CopyProgress:
    """Turns ``qemu-img -p`` output into ``Progress`` in bytes of the source's size,
    reporting only when the percentage goes up."""

    def __init__(self, callback: ProgressCallback | None, total: int, label: str) -> None:
        self.callback = callback
        self.total = total
        self.label = label
        self.parser = qemuimg.ProgressParser()
        self.last = -1.0

    def feed(self, chunk: bytes) -> None:
        percent = self.parser.feed(chunk)
        if percent is not None and percent > self.last:
            self._report(percent)

    def finish(self) -> None:
        if self.last < 100.0:
            self._report(100.0)

    def _report(self, percent: float) -> None:
        self.last = percent
        if self.callback is not None:
            done = self.total if percent >= 100.0 else int(self.total * percent / 100.0)
            self.callback(Progress(1, 1, done, self.total, self.label))


def capacity_from_statvfs(vfs: dict[str, int]) -> Capacity:
    frsize = vfs["frsize"]
    total = vfs["blocks"] * frsize
    return Capacity(capacity=total, allocation=total - vfs["bfree"] * frsize,
                    available=vfs["bavail"] * frsize)


# Enum lookups by value go through EnumMeta.__call__: a dict is ~10x cheaper per volume.
_FORMATS = {str(f): f for f in ImageFormat}
_LINK_PROBLEMS = {str(p): p for p in LinkProblem}


def image_info(record: dict[str, Any] | None, size: int) -> ImageInfo:
    if record is None:
        return ImageInfo(format=ImageFormat.RAW, virtual_size=size)
    fields = dict(record)
    fields["format"] = _FORMATS[fields["format"]]
    fields["problems"] = tuple(fields.get("problems") or ())
    return ImageInfo(**fields)


def chain_from(record: dict[str, Any], leaf_path: str, info: ImageInfo) -> Chain:
    links = [ChainLink(leaf_path, str(info.format), info.virtual_size)]
    links += [ChainLink(link["path"], link["format"], link["capacity"])
              for link in record.get("links", ())]
    problem = record.get("problem")
    return Chain(
        links=tuple(links),
        problem=_LINK_PROBLEMS[problem] if problem else None,
        problem_path=record.get("problem_path"),
        problem_detail=record.get("problem_detail", ""),
    )


def volume_from_entry(pool: Pool, entry: dict[str, Any]) -> Volume:
    size = int(entry.get("size", 0))
    info = image_info(entry.get("info"), size)
    chain = chain_from(entry.get("chain") or {}, entry["path"], info)
    backing: str | None = None
    if info.backing_file:
        backing = chain.links[1].path if chain.depth > 1 else (
            (entry.get("chain") or {}).get("backing") or info.backing_file)
    return Volume(
        host=pool.host,
        pool=pool.name,
        name=entry["name"],
        path=entry["path"],
        format=info.format,
        capacity=info.virtual_size,
        allocation=int(entry.get("allocation", 0)),
        mtime=float(entry.get("mtime", 0.0)),
        info=info,
        chain=chain,
        backing=backing,
        backing_format=info.backing_format,
        readonly=bool(entry.get("readonly", False)),
        error=entry.get("error"),
        in_use=bool(entry.get("in_use", False)),
    )


class DirDriver(Driver):
    """Directory pools over one transport; ``roots`` bound where backings may lie."""

    capabilities = Capabilities(
        create=True,
        delete=True,
        create_formats=(ImageFormat.RAW, ImageFormat.QCOW2),
        backing=True,
        resize=True,
        copy=True,
        copy_formats=COPY_FORMATS,
        growfs=True,
        preallocate=True,
        snapshot=True,
        clone=True,
        wipe=True,
        archive=True,
    )

    def __init__(self, transport: Transport, roots: tuple[str, ...] = ()) -> None:
        self.transport = transport
        self.roots = roots

    def _roots(self, pool: Pool) -> tuple[str, ...]:
        return self.roots or (pool.path,)

    def scan_pool(self, pool: Pool) -> PoolScan:
        try:
            listing = self.transport.scan_directory(pool.path, self._roots(pool))
        except FileNotFoundError:
            raise PoolUnavailable(
                f"directory {pool.path} does not exist", host=pool.host, pool=pool.name,
                hint="create it or remove the pool from the config") from None
        except NotADirectoryError:
            raise PoolUnavailable(f"{pool.path} is not a directory", host=pool.host,
                                  pool=pool.name) from None
        except PermissionError:
            raise PoolUnavailable(f"permission denied listing {pool.path}", host=pool.host,
                                  pool=pool.name, hint="run as a user who can read it") from None
        except OSError as err:
            raise PoolUnavailable(f"cannot list {pool.path}: {err.strerror}",
                                  host=pool.host, pool=pool.name) from None
        volumes = []
        skipped = []
        temporaries = []
        for entry in listing["entries"]:
            if entry["kind"] == "file":
                volumes.append(volume_from_entry(pool, entry))
            else:
                skipped.append(f"{entry['name']} ({entry['kind']})")
                if entry["kind"] == "temporary":
                    temporaries.append(entry["name"])
        capacity = capacity_from_statvfs(listing["statvfs"])
        committed = sum(v.capacity for v in volumes)
        capacity = Capacity(capacity.capacity, capacity.allocation, capacity.available,
                            committed)
        return PoolScan(
            pool=Pool(pool.host, pool.name, pool.kind, pool.path, capacity),
            volumes=tuple(volumes),
            skipped=tuple(skipped),
            temporaries=tuple(temporaries),
        )

    def probe_volume(self, pool: Pool, name: str) -> Volume:
        validate_name(name, pool=pool)
        path = os.path.join(pool.path, name)
        entry = self.transport.probe_volume(path, self._roots(pool))
        if entry["kind"] == "missing":
            raise VolumeNotFound("the volume is not on disk", host=pool.host, pool=pool.name,
                                 volume=name, hint="refresh the pool")
        if entry["kind"] != "file":
            raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume",
                                 host=pool.host, pool=pool.name, volume=name)
        entry["name"] = name
        return volume_from_entry(pool, entry)

    def pool_capacity(self, pool: Pool) -> Capacity:
        try:
            vfs = self.transport.statvfs(pool.path)
        except OSError as err:
            raise PoolUnavailable(f"cannot read space of {pool.path}: {err.strerror}",
                                  host=pool.host, pool=pool.name) from None
        return capacity_from_statvfs({"frsize": vfs.f_frsize, "blocks": vfs.f_blocks,
                                      "bavail": vfs.f_bavail, "bfree": vfs.f_bfree})

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
        validate_name(name, pool=pool)
        where = _where(pool, name)
        if fmt not in self.capabilities.create_formats:
            raise InvalidRequest(f"cannot create {fmt} volumes here", **where,
                                 hint="use raw or qcow2")
        if capacity <= 0 and backing is None:
            raise InvalidRequest("the size must be larger than 0", **where)
        if backing is not None and fmt != ImageFormat.QCOW2:
            raise InvalidRequest("only qcow2 volumes can have a backing volume", **where)
        if preallocation is not None and preallocation not in PREALLOCATIONS:
            raise InvalidRequest(f"preallocation is {' or '.join(PREALLOCATIONS)}, not "
                                 f"{preallocation!r}", **where,
                                 hint="leave it out for a sparse volume")
        if preallocation and backing is not None:
            raise InvalidRequest("a volume on a backing volume cannot be preallocated", **where,
                                 hint="qemu-img 7.2 allows it only with extended L2 entries; "
                                      "create it sparse")
        if zero and not preallocation:
            raise InvalidRequest("a sparse volume allocates nothing to zero (it reads as "
                                 "zeroes already)", **where,
                                 hint="preallocate it (falloc or full) to zero its blocks")
        final = os.path.join(pool.path, name)
        if self.transport.probe_path(final, None)["kind"] != "missing":
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name; nothing was changed")
        # Built under a temporary name and published by link(), which refuses to
        # replace anything, so a half-built image never carries the final name.
        temp = os.path.join(pool.path, self._temp_name(name, temp_name, where))
        back_name = back_fmt = None
        if backing is not None:
            if backing.chain.problem is not None or backing.error:
                raise InvalidRequest(f"backing volume {backing.name!r} is not usable",
                                     **where, hint="choose a healthy backing volume")
            back_name = backing_reference(backing, os.path.dirname(final))
            back_fmt = str(backing.format)
            if capacity <= 0:
                capacity = backing.capacity
        # fallocate() leaves unwritten extents; zeroes that are physical are written.
        argv = qemuimg.create(temp, fmt, capacity, backing=back_name, backing_format=back_fmt,
                              preallocation="full" if zero else preallocation)
        self._check_cancel(should_cancel, where, "create")
        self._clear_leftover(temp, where)
        if progress:
            progress(Progress(1, 2, 0, capacity, "create"))
        try:
            result = self._run(argv, where, should_cancel=should_cancel)
            if result.returncode != 0:
                raise self._failure(result, "qemu-img create", where,
                                    hint="nothing was left behind")
            if progress:
                progress(Progress(2, 2, 0, capacity, "publish"))
            self._publish(temp, final, pool, name)
        except Cancelled:
            self._discard_quietly(temp)
            raise Cancelled("create cancelled: the partial volume was removed", **where) \
                from None
        except BaseException:
            self._discard_quietly(temp)
            raise
        if progress:
            progress(Progress(2, 2, capacity, capacity, "done"))
        return self.probe_volume(pool, name)

    def measure_create(self, pool: Pool, fmt: ImageFormat, capacity: int, *,
                       preallocation: str | None = None) -> int:
        if qemuimg.qemu_format(fmt) == "raw":
            return capacity if preallocation else 4096  # qemu-img writes the first block
        where = {"host": pool.host, "pool": pool.name}
        result = self._run(qemuimg.measure(None, None, fmt, size=capacity), where)
        if result.returncode != 0:
            raise self._failure(result, "qemu-img measure", where)
        try:
            measured = qemuimg.parse_measure(result.stdout)
        except ValueError as err:
            raise CommandFailed(f"qemu-img measure: {err}", **where) from None
        return measured.fully_allocated if preallocation else measured.required

    def _publish(self, temp: str, final: str, pool: Pool, name: str) -> None:
        try:
            self.transport.publish(temp, final)
        except FileExistsError:
            raise VolumeExists("a file with that name appeared meanwhile", host=pool.host,
                               pool=pool.name, volume=name, hint="nothing was changed") from None
        except OSError as err:
            raise StorageError(f"cannot publish the new volume: {err.strerror}",
                               host=pool.host, pool=pool.name, volume=name) from None

    def holds_data(self, volume: Volume) -> bool:
        """Whether the volume's own clusters hold any data (re-read from disk)."""
        if volume.format == ImageFormat.QCOW2:
            result = self.transport.run(qemuimg.allocation_map(volume.path, "qcow2"))
            if result.returncode != 0:
                return True  # unknown: treat as precious
            extents = json.loads(result.stdout or b"[]")
            return any(e.get("data") and e.get("depth", 0) == 0 for e in extents)
        if volume.format in (ImageFormat.RAW, ImageFormat.ISO):
            try:
                return volume.allocation > 0 and self.transport.has_data(volume.path)
            except OSError:
                return True  # unknown: treat as precious
        return volume.allocation > 0

    def delete_volume(
        self,
        pool: Pool,
        name: str,
        *,
        wipe: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        validate_name(name, pool=pool)
        where = _where(pool, name)
        if wipe is not None and wipe not in WIPES:
            raise InvalidRequest(f"a wipe is {' or '.join(WIPES)}, not {wipe!r}", **where)
        path = os.path.join(pool.path, name)
        entry = self.transport.probe_path(path, None)
        if entry["kind"] == "missing":
            raise VolumeNotFound("the volume is already gone", **where)
        if entry["kind"] != "file":
            raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume: not removed",
                                 **where)
        self._refuse_in_use(self.probe_volume(pool, name), "deleted")
        if wipe is not None:
            self._wipe(path, wipe, where, progress, should_cancel)
        try:
            self.transport.remove_file(path)
        except OSError as err:
            raise StorageError(f"cannot remove {path}: {err.strerror}", **where) from None

    def _wipe(self, path: str, wipe: str, where: dict[str, str],
              progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        try:
            links = self.transport.lstat(path).st_nlink
        except OSError as err:
            raise StorageError(f"cannot look at {path}: {err.strerror}", **where) from None
        if links > 1:
            raise VolumeBusy(f"it has {links - 1} other name(s) (hard links): wiping would "
                             "destroy their data too; nothing was changed", **where,
                             hint="remove the other names first, or delete without wiping")
        self._check_cancel(should_cancel, where, "wipe")
        try:
            self.transport.wipe_file(path, wipe, progress=_bytes_progress(progress, "wipe"),
                                     should_cancel=should_cancel)
        except Cancelled:
            raise Cancelled("wipe cancelled: the volume is partly overwritten and was not "
                            "deleted", **where, hint="delete it again to finish") from None
        except OSError as err:
            raise StorageError(f"cannot wipe {path}: {err.strerror}; it was not deleted",
                               **where) from None

    # -- the operations of jobs ------------------------------------------------------

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
        validate_name(name, pool=pool)
        where = _where(pool, name)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise InvalidRequest("the new size must be larger than 0", **where)
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "resize")
        if volume.format == ImageFormat.ISO:
            raise InvalidRequest("an ISO image is read-only media: it is not resized", **where)
        if volume.readonly:
            raise InvalidRequest("it is a snapshot (read-only on disk): it is not resized",
                                 **where, hint="resize the disk based on it instead")
        if qemuimg.qemu_format(volume.format) != "raw" and capacity % 512:
            raise InvalidRequest(f"a {volume.format} volume's size is a multiple of 512 bytes",
                                 **where, hint=f"ask for {capacity + 512 - capacity % 512}")
        current = volume.capacity
        if capacity == current:
            return volume
        if capacity < current:
            if not shrink:
                raise InvalidRequest(
                    f"{size_text(capacity)} is smaller than its size {size_text(current)}, "
                    "and shrinking cuts off data", **where,
                    hint="shrink it explicitly (--shrink) if that is what you want")
            fs = self._filesystem_at_start(volume, where)
            if fs is not None and fs.size > capacity:
                raise InvalidRequest(
                    f"its {fs.kind} file system takes {size_text(fs.size)}: shrinking to "
                    f"{size_text(capacity)} would cut it", **where,
                    hint=f"shrink the file system first (resize2fs), or keep at least "
                         f"{fs.size} bytes; nothing was changed")
        self._refuse_in_use(volume, "resized")
        self._check_cancel(should_cancel, where, "resize")
        if progress:
            progress(Progress(1, 1, 0, capacity, "resize"))
        argv = qemuimg.resize(volume.path, volume.format, capacity, shrink=capacity < current)
        result = self._run(argv, where)
        if result.returncode != 0:
            raise self._failure(result, "qemu-img resize", where)
        if progress:
            progress(Progress(1, 1, capacity, capacity, "resize"))
        return self.probe_volume(pool, name)

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
        validate_name(name, pool=pool)
        validate_name(dest_name, pool=dest_pool)
        where = _where(dest_pool, dest_name)
        if dest_pool.host != pool.host or (backing is not None and backing.host != pool.host):
            raise InvalidRequest("a copy stays on one host", **where,
                                 hint="copy between hosts with an archive and a restore")
        if strategy is not None and strategy not in COPY_STRATEGIES:
            raise InvalidRequest(f"the strategy is {' or '.join(COPY_STRATEGIES)}, not "
                                 f"{strategy!r}", **where)
        if strategy == "performance" and backing is not None:
            raise InvalidRequest("an incremental copy is an overlay on its base: it cannot "
                                 "be a full preallocated copy", **where,
                                 hint="drop the base, or the performance strategy")
        temp = os.path.join(dest_pool.path, self._temp_name(dest_name, temp_name, where))
        final = os.path.join(dest_pool.path, dest_name)
        source = self.probe_volume(pool, name)
        self._require_usable(source, "copy")
        out_fmt = fmt or (ImageFormat.QCOW2 if backing is not None else source.format)
        if out_fmt not in COPY_FORMATS and not (
                out_fmt == ImageFormat.ISO == source.format):
            raise InvalidRequest(f"cannot write {out_fmt} volumes", **where,
                                 hint="copy as raw or qcow2")
        if os.path.normpath(final) == os.path.normpath(source.path):
            raise InvalidRequest("a volume cannot be copied onto itself", **where)
        back_name = None
        if backing is not None:
            back_name = self._incremental_base(source, backing, base_depth, out_fmt,
                                               dest_pool, where)
        if strategy == "performance" and out_fmt not in PREALLOCATED_FORMATS:
            raise InvalidRequest(f"a performance copy is preallocated, which {out_fmt} "
                                 "cannot be here", **where, hint="copy as raw or qcow2")
        self._check_target(source, backing, final, overwrite, dest_pool, dest_name)
        if copy_overlays(source, pool, dest_pool, strategy=strategy, fmt=fmt,
                         incremental=backing is not None):
            self._check_cancel(should_cancel, where, "copy")
            return self._overlay(source, dest_pool, dest_name, temp, overwrite, where,
                                 progress)
        self._refuse_in_use(source, "copied (the copy would be torn)")
        self._check_cancel(should_cancel, where, "copy")
        self._clear_leftover(temp, where)
        reporter = CopyProgress(progress, source.capacity, "copy")
        try:
            if backing is None or base_depth == 1:
                # Out of order is safe: the temporary file is published only whole.
                # falloc: the space is reserved on disk, so the guest's first writes
                # do not pay for allocation; zeroes are still not written.
                argv = qemuimg.convert(
                    source.path, source.format, temp, out_fmt, backing=back_name,
                    backing_fmt=backing.format if backing is not None else None,
                    preallocation="falloc" if strategy == "performance" else None,
                    out_of_order=True)
                result = self._run(argv, where, reporter.feed, should_cancel)
            else:
                assert back_name is not None
                result = self._rebase_copy(source, temp, back_name, backing.format, where,
                                           reporter, should_cancel)
            if result.returncode != 0:
                raise self._failure(result, f"qemu-img {result.argv[1]}", where,
                                    hint="the partial copy was removed; nothing was published")
            self._publish_copy(temp, final, overwrite, where)
        except Cancelled:
            self._discard_quietly(temp)
            raise Cancelled("copy cancelled: the partial copy was removed, nothing was "
                            "published", **where) from None
        except BaseException:
            self._discard_quietly(temp)
            raise
        reporter.finish()
        return self.probe_volume(dest_pool, dest_name)

    def growfs_volume(
        self,
        pool: Pool,
        name: str,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Volume:
        validate_name(name, pool=pool)
        where = _where(pool, name)
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "grow the file system of")
        if volume.format != ImageFormat.RAW:
            raise NotSupported(
                f"growing a file system works on raw images only, and this is {volume.format}",
                **where, hint="grow it from inside the guest, or copy the volume as raw")
        if volume.readonly:
            raise InvalidRequest("it is a snapshot (read-only on disk): it is not changed",
                                 **where)
        head = self._read(volume.path, 0, HEAD_BYTES, where)
        fs = filesystems.ext_filesystem(lambda offset, length: head[offset:offset + length])
        if fs is None:
            why = ("it starts with a partition table or boot sector, so no file system "
                   "starts at offset 0" if filesystems.has_boot_signature(head[:512])
                   else "no ext2/3/4 file system starts at offset 0 of the image")
            raise NotSupported(f"cannot grow the file system: {why}", **where,
                               hint="grow the partition and file system from inside the guest")
        if fs.size > volume.capacity:
            raise InvalidRequest(
                f"its {fs.kind} file system ({size_text(fs.size)}) is larger than the image "
                f"({size_text(volume.capacity)}): the image was cut", **where,
                hint="grow the volume to at least the file system's size first")
        if volume.capacity - fs.size < fs.block_size:
            return volume  # it fills the image already
        self._refuse_in_use(volume, "changed")
        total = volume.capacity - fs.size
        steps: tuple[tuple[str, list[str]], ...] = (
            ("e2fsck", filesystems.e2fsck(volume.path)),
            ("resize2fs", filesystems.resize2fs(volume.path)))
        for label, argv in steps:
            self._check_cancel(should_cancel, where, "growfs")
            if progress:
                progress(Progress(1, 1, 0, total, label))
            result = self._run(argv, where)
            text = (result.stdout + result.stderr).decode(errors="replace")
            if label == "e2fsck" and result.returncode not in filesystems.E2FSCK_FIXED:
                if "is mounted" in text:
                    raise VolumeBusy("its file system is mounted: it is not changed", **where,
                                     hint="unmount it first")
                raise CommandFailed(
                    f"e2fsck could not repair the file system (exit {result.returncode}): "
                    f"{last_line(result.stderr) or last_line(result.stdout)}", **where,
                    hint="repair it by hand (e2fsck) before growing it")
            if label == "resize2fs" and result.returncode != 0:
                raise self._failure(result, "resize2fs", where)
        if progress:
            progress(Progress(1, 1, total, total, "resize2fs"))
        return self.probe_volume(pool, name)

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None, *,
                     full: bool = False, base_depth: int = 0) -> int:
        validate_name(name, pool=pool)
        where = _where(pool, name)
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "measure a copy of")
        if base_depth > 0:
            return self._measure_above(volume, base_depth)
        out_fmt = fmt or volume.format
        if full and qemuimg.qemu_format(out_fmt) == "raw":
            return volume.capacity
        if (not full and qemuimg.qemu_format(volume.format) == "raw"
                and qemuimg.qemu_format(out_fmt) == "raw"):
            # A sparse copy writes what the source has allocated, no more; qemu-img
            # measure would say the whole virtual size.
            return volume.allocation
        result = self._run(qemuimg.measure(volume.path, volume.format, out_fmt), where)
        if result.returncode != 0:
            raise self._failure(result, "qemu-img measure", where)
        try:
            measured = qemuimg.parse_measure(result.stdout)
        except ValueError as err:
            raise CommandFailed(f"qemu-img measure: {err}", **where) from None
        return measured.fully_allocated if full else measured.required

    def _measure_above(self, volume: Volume, base_depth: int) -> int:
        """An incremental copy writes only clusters the images above its base hold (a
        convert -B copies the top image's; a safe rebase, those that differ from the
        base, which are some of theirs): their allocation, with room for the qcow2
        overlay's tables (at most 8 bytes of L2 per 64 KiB cluster of the disk, 2 of
        refcount per cluster written, a header)."""
        data = 0
        for link in volume.chain.links[:base_depth]:
            try:
                data += self.transport.lstat(link.path).st_blocks * 512
            except OSError:
                data += link.capacity  # unknown: as much as it can hold
        data = min(data, volume.capacity)
        return data + volume.capacity // 8192 + data // 32768 + (1 << 20)

    def same_content(self, a: Volume, b_path: str, b_format: ImageFormat | str, *,
                     should_cancel: CancelCheck | None = None) -> bool:
        where = {"host": a.host, "pool": a.pool, "volume": a.name}
        result = self._run(qemuimg.compare(a.path, a.format, b_path, b_format), where,
                           should_cancel=should_cancel)
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise self._failure(result, "qemu-img compare", where)

    def check_volume(self, pool: Pool, name: str, *, force_share: bool) -> qemuimg.CheckResult:
        volume = self.probe_volume(pool, name)
        where = _where(pool, name)
        if qemuimg.qemu_format(volume.format) == "raw":
            raise NotSupported(f"{volume.format} images have no metadata to check", **where)
        if volume.chain.problem is None:
            self._require_usable(volume, "check")
        else:  # the check cuts the chain off: a broken one does not stop it
            self._require_usable(replace(volume, chain=Chain(volume.chain.links)), "check")
        result = self._run(qemuimg.check(volume.path, volume.format,
                                         force_share=force_share), where)
        checked = qemuimg.parse_check(result.returncode, result.stdout, result.stderr)
        if checked.status == "unsupported":
            raise NotSupported(f"qemu-img cannot check {volume.format} images", **where)
        return checked

    def temporary_files(self, pool: Pool, names: Sequence[str]) -> list[TemporaryFile]:
        found = []
        for name in names:
            if not name.startswith(TEMP_PREFIX) or "/" in name:
                continue
            try:
                st = self.transport.lstat(os.path.join(pool.path, name))
            except FileNotFoundError:
                continue  # its job published or removed it since the scan
            except OSError as err:
                raise StorageError(f"cannot read temporary file {name}: {err.strerror}",
                                   host=pool.host, pool=pool.name) from None
            if stat.S_ISREG(st.st_mode):
                found.append(TemporaryFile(name, st.st_size, st.st_blocks * 512,
                                           st.st_mtime))
        return found

    def count_zeroes(self, volume: Volume, budget: int) -> ZeroCount:
        where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
        try:
            allocated, read, zero = self.transport.zero_blocks(volume.path, budget)
        except OSError as err:
            raise StorageError(f"cannot read its extents: {err.strerror}", **where) from None
        return ZeroCount(allocated, read, zero)

    def volume_in_use(self, volume: Volume) -> bool:
        """QEMU (and qemu-nbd, qemu-storage-daemon) lock byte 101 of an image file they
        hold for writing, whatever its format: one F_GETLK asks, taking nothing."""
        where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
        try:
            return self.transport.qemu_write_locked(volume.path)
        except OSError as err:
            raise StorageError(f"cannot tell whether it is in use: {err.strerror}",
                               **where) from None

    # -- snapshots and clones ------------------------------------------------------

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
        validate_name(name, pool=pool)
        validate_name(snapshot, pool=pool)
        where = _where(pool, name)
        if snapshot == name:
            raise InvalidRequest("the snapshot needs a name of its own", **where)
        disk = self.probe_volume(pool, name)
        self._require_usable(disk, "snapshot")
        if disk.readonly:
            raise InvalidRequest("it is a snapshot already (read-only on disk): it never "
                                 "changes", **where,
                                 hint="clone it, or snapshot the disk based on it")
        if disk.format not in COPY_FORMATS:
            raise NotSupported(f"a {disk.format} volume cannot carry a qcow2 overlay",
                               **where)
        if disk.capacity % 512:
            raise InvalidRequest(
                f"its size ({size_text(disk.capacity)}) is not a multiple of 512 bytes, as "
                "its new qcow2 overlay's must be", **where,
                hint="resize it to a multiple of 512 bytes first")
        snap_path = os.path.join(pool.path, snapshot)
        if self.transport.probe_path(snap_path, None)["kind"] != "missing":
            raise VolumeExists("a file with the snapshot's name already exists", **where,
                               hint=f"choose another name than {snapshot!r}; nothing was "
                                    "changed")
        temp = os.path.join(pool.path, self._temp_name(name, temp_name, where))
        argv = qemuimg.overlay(temp, disk.capacity, _reference(snap_path, snapshot, pool.path),
                               disk.format)
        self._refuse_in_use(disk, "snapshotted")
        self._check_cancel(should_cancel, where, "snapshot")
        self._clear_leftover(temp, where)
        steps = 4
        if progress:
            progress(Progress(1, 1, 0, steps, "link"))
        try:
            self.transport.link(disk.path, snap_path)
        except FileExistsError:
            raise VolumeExists("a file with the snapshot's name appeared meanwhile", **where,
                               hint="nothing was changed") from None
        except OSError as err:
            raise StorageError(f"cannot give the disk a second name {snapshot!r}: "
                               f"{err.strerror}", **where) from None
        try:
            if progress:
                progress(Progress(1, 1, 1, steps, "overlay"))
            result = self._run(argv, where)
            if result.returncode != 0:
                raise self._failure(result, "qemu-img create (the new overlay)", where,
                                    hint="the disk was not changed")
            self.transport.copy_attributes(disk.path, temp)
            if progress:
                progress(Progress(1, 1, 2, steps, "switch"))
            self.transport.publish(temp, disk.path, replace=True)
        except BaseException as err:
            with contextlib.suppress(OSError, StorageError):
                self.settle_snapshot(pool, name, snapshot, os.path.basename(temp))
            if isinstance(err, OSError):
                raise StorageError(f"cannot switch the disk to its new overlay: "
                                   f"{err.strerror}", **where) from None
            raise
        if progress:
            progress(Progress(1, 1, 3, steps, "protect"))
        try:
            self.transport.make_read_only(snap_path)
        except OSError as err:
            raise StorageError(f"the snapshot {snapshot!r} is taken but could not be made "
                               f"read-only: {err.strerror}", **where,
                               hint="chmod a-w it by hand") from None
        if progress:
            progress(Progress(1, 1, steps, steps, "protect"))
        return self.probe_volume(pool, snapshot)

    def settle_snapshot(self, pool: Pool, name: str, snapshot: str,
                        temp_name: str | None) -> bool:
        validate_name(name, pool=pool)
        validate_name(snapshot, pool=pool)
        where = _where(pool, name)
        if temp_name is not None:
            self._clear_leftover(os.path.join(pool.path, self._temp_name(name, temp_name,
                                                                         where)), where)
        snap_path = os.path.join(pool.path, snapshot)
        snap_st, disk_st = self._lstat(snap_path), self._lstat(os.path.join(pool.path, name))
        if snap_st is None or disk_st is None:
            return False
        if (snap_st.st_dev, snap_st.st_ino) == (disk_st.st_dev, disk_st.st_ino):
            # Before the switch: the snapshot's name is only a second name of the disk.
            try:
                self.transport.remove_file(snap_path)
            except OSError as err:
                raise StorageError(f"cannot remove the second name {snapshot!r} of the disk: "
                                   f"{err.strerror}", **where) from None
            return False
        try:
            disk = self.probe_volume(pool, name)
        except StorageError:
            return False
        if disk.info.backing_file not in (snapshot, snap_path):
            return False  # the name belongs to another file: never ours to touch
        try:
            self.transport.make_read_only(snap_path)
        except OSError as err:
            raise StorageError(f"cannot make the snapshot {snapshot!r} read-only: "
                               f"{err.strerror}", **where) from None
        return True

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
        validate_name(name, pool=pool)
        validate_name(dest_name, pool=dest_pool)
        where = _where(dest_pool, dest_name)
        if strategy not in CLONE_STRATEGIES:
            raise InvalidRequest(f"the strategy is {' or '.join(CLONE_STRATEGIES)}, not "
                                 f"{strategy!r}", **where)
        if strategy == "performance":
            return self.copy_volume(pool, name, dest_pool, dest_name, fmt=fmt,
                                    progress=progress, should_cancel=should_cancel,
                                    temp_name=temp_name)
        if dest_pool.host != pool.host:
            raise InvalidRequest("a clone stays on one host", **where)
        if fmt not in (None, ImageFormat.QCOW2):
            raise InvalidRequest("a space-saving clone is a qcow2 overlay", **where,
                                 hint="clone with the performance strategy for another format")
        snap = self.probe_volume(pool, name)
        self._require_usable(snap, "clone")
        if not snap.readonly:
            raise InvalidRequest(
                f"{name!r} is not a snapshot (it is writable on disk): an overlay on it would "
                "change whenever it does", **where,
                hint="snapshot it and clone the snapshot, or clone with the performance "
                     "strategy (a full copy)")
        if snap.capacity % 512:
            raise InvalidRequest(f"its size ({size_text(snap.capacity)}) is not a multiple of "
                                 "512 bytes, as a qcow2 overlay's must be", **where,
                                 hint="clone with the performance strategy")
        final = os.path.join(dest_pool.path, dest_name)
        if self.transport.probe_path(final, None)["kind"] != "missing":
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name; nothing was changed")
        temp = os.path.join(dest_pool.path, self._temp_name(dest_name, temp_name, where))
        self._check_cancel(should_cancel, where, "clone")
        return self._overlay(snap, dest_pool, dest_name, temp, False, where, progress)

    def _overlay(self, snap: Volume, dest_pool: Pool, dest_name: str, temp: str,
                 overwrite: bool, where: dict[str, str],
                 progress: ProgressCallback | None) -> Volume:
        """A qcow2 overlay on the read-only ``snap``, made as ``temp`` and published as
        ``dest_name`` (replacing it only with ``overwrite``)."""
        final = os.path.join(dest_pool.path, dest_name)
        argv = qemuimg.overlay(temp, snap.capacity, backing_reference(snap, dest_pool.path),
                               snap.format)
        self._clear_leftover(temp, where)
        if progress:
            progress(Progress(1, 1, 0, 1, "overlay"))
        try:
            result = self._run(argv, where)
            if result.returncode != 0:
                raise self._failure(result, "qemu-img create (the overlay)", where,
                                    hint="nothing was published")
            self._publish_copy(temp, final, overwrite, where)
        except BaseException:
            self._discard_quietly(temp)
            raise
        if progress:
            progress(Progress(1, 1, 1, 1, "overlay"))
        return self.probe_volume(dest_pool, dest_name)

    # -- archives ------------------------------------------------------------------

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
        validate_name(name, pool=pool)
        where = _where(pool, name)
        try:
            argv = archive.compress_argv(level)
        except ValueError as err:
            raise InvalidRequest(str(err), **where) from None
        directory, base = self._archive_destination(dest, where)
        sidecar = dest + archive.SIDECAR_SUFFIX
        temp = os.path.join(directory, self._temp_name(base, temp_name, where, room=ROOM))
        temps = (temp, temp + archive.SIDECAR_SUFFIX, temp + RAW_SUFFIX)
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "archive")
        if os.path.normpath(dest) in {os.path.normpath(link.path)
                                      for link in volume.chain.links}:
            raise InvalidRequest("the archive would replace the volume it is made of",
                                 **where, hint="choose another destination")
        replace_sidecar = self._check_archive_target(dest, sidecar, overwrite, where)
        self._refuse_in_use(volume, "archived (the archive would be torn)")
        need = self.measure_archive(pool, name)
        try:
            vfs = self.transport.statvfs(directory)
        except OSError as err:
            raise StorageError(f"cannot read the free space of {directory}: {err.strerror}",
                               **where) from None
        if need > vfs.f_bavail * vfs.f_frsize:
            raise NoSpace(f"the archive may need {size_text(need)} in {directory}, which has "
                          f"{size_text(vfs.f_bavail * vfs.f_frsize)} free", **where,
                          hint="free space there or archive elsewhere; nothing was written")
        self._check_cancel(should_cancel, where, "archive")
        for leftover in temps:
            self._clear_leftover(leftover, where)
        try:
            source = volume.path
            if qemuimg.qemu_format(volume.format) != "raw":
                source = temps[2]
                reporter = CopyProgress(progress, volume.capacity, "flatten")
                result = self._run(qemuimg.convert(volume.path, volume.format, source, "raw"),
                                   where, reporter.feed, should_cancel)
                if result.returncode != 0:
                    raise self._failure(result, "qemu-img convert (flattening it to raw)",
                                        where, hint="nothing was published")
                reporter.finish()
            streamed = self.transport.compress_file(
                source, temp, argv, progress=_bytes_progress(progress, "compress"),
                should_cancel=should_cancel)
            if source != volume.path:
                self.transport.remove_file(source)
            if streamed.raw_size != volume.capacity:
                raise StorageError(f"the volume changed size while it was archived "
                                   f"({size_text(streamed.raw_size)} read)", **where)
            info = ArchiveInfo(
                volume=name, format=str(volume.format), virtual_size=streamed.raw_size,
                raw_sha256=streamed.raw_sha256, data_bytes=streamed.data_bytes,
                archive_sha256=streamed.archive_sha256, archive_size=streamed.archive_size,
                level=level, created=_utc_now(), producer=producer or archive.producer())
            self.transport.write_new_file(temps[1], info.to_json())
            # The sidecar first: an archive is never seen without what it holds.
            self.transport.publish(temps[1], sidecar, replace=replace_sidecar)
            try:
                self.transport.publish(temp, dest, replace=overwrite)
            except BaseException:
                self._discard_quietly(sidecar)
                raise
        except Cancelled:
            self._discard_all(temps)
            raise Cancelled("archive cancelled: its temporary files were removed, nothing was "
                            "published", **where) from None
        except FileExistsError:
            self._discard_all(temps)
            raise VolumeExists(f"{dest} appeared meanwhile", **where,
                               hint="nothing was changed") from None
        except OSError as err:
            self._discard_all(temps)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left for the archive in {directory}: {err.strerror}",
                              **where, hint="its temporary files were removed") from None
            raise StorageError(f"cannot write the archive: {err.strerror}", **where,
                               hint="its temporary files were removed") from None
        except BaseException:
            self._discard_all(temps)
            raise
        if progress:
            progress(Progress(1, 1, info.virtual_size, info.virtual_size, "compress"))
        return info

    def measure_archive(self, pool: Pool, name: str) -> int:
        volume = self.probe_volume(pool, name)
        data = 0
        for link in volume.chain.links:
            try:
                data += self.transport.lstat(link.path).st_blocks * 512
            except OSError:
                data += link.capacity
        data = min(data, volume.capacity)
        # zstd's bound on incompressible input: a 1/256 more, and a little.
        need = data + data // 256 + (1 << 20)
        if qemuimg.qemu_format(volume.format) != "raw":
            need += data  # the flattened copy it compresses
        return need

    def read_archive(self, path: str) -> ArchiveInfo:
        if not path.startswith("/"):
            raise InvalidRequest(f"the archive {path!r} must be given as an absolute path")
        kind = self.transport.probe_path(path, None)["kind"]
        if kind != "file":
            raise InvalidRequest(f"there is no archive at {path}"
                                 + ("" if kind == "missing" else f" (it is a {kind})"))
        sidecar = path + archive.SIDECAR_SUFFIX
        try:
            data = self.transport.read_bytes(sidecar, 0, SIDECAR_MAX)
        except OSError as err:
            raise InvalidRequest(f"cannot read the archive's sidecar {sidecar}: {err.strerror}",
                                 hint="an archive is restored with the sidecar written beside "
                                      "it, which holds its checksums") from None
        try:
            return ArchiveInfo.from_json(data)
        except ValueError as err:
            raise InvalidRequest(f"{sidecar} is not an archive's sidecar: {err}") from None

    def restore_volume(
        self,
        pool: Pool,
        archive_path: str,
        name: str,
        *,
        fmt: ImageFormat | None = None,
        into_existing: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
    ) -> Volume:
        validate_name(name, pool=pool)
        where = _where(pool, name)
        info = self._archive_info(archive_path, where)
        temp = os.path.join(pool.path, self._temp_name(name, temp_name, where, room=ROOM))
        staged = temp + RAW_SUFFIX
        if into_existing:
            self._restore_into(pool, name, archive_path, info, fmt, staged, where, progress,
                               should_cancel)
            return self.probe_volume(pool, name)
        out_fmt = fmt or ImageFormat.RAW
        if out_fmt not in (ImageFormat.RAW, ImageFormat.QCOW2):
            raise InvalidRequest(f"cannot restore into a {out_fmt} volume", **where,
                                 hint="restore as raw or qcow2")
        if out_fmt == ImageFormat.QCOW2 and info.virtual_size % 512:
            raise InvalidRequest(f"the archive's {size_text(info.virtual_size)} are not a "
                                 "multiple of 512 bytes, as a qcow2 volume's size must be",
                                 **where, hint="restore it as raw")
        final = os.path.join(pool.path, name)
        if self.transport.probe_path(final, None)["kind"] != "missing":
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name, or restore into it; nothing was "
                                    "changed")
        self._check_cancel(should_cancel, where, "restore")
        for leftover in (temp, staged):
            self._clear_leftover(leftover, where)
        try:
            raw_out = temp if out_fmt == ImageFormat.RAW else staged
            self._decompress(archive_path, raw_out, info, info.virtual_size, False, where,
                             progress, should_cancel)
            if raw_out != temp:
                reporter = CopyProgress(progress, info.virtual_size, "convert")
                result = self._run(qemuimg.convert(staged, "raw", temp, out_fmt), where,
                                   reporter.feed, should_cancel)
                if result.returncode != 0:
                    raise self._failure(result, "qemu-img convert", where,
                                        hint="nothing was published")
                reporter.finish()
                self.transport.remove_file(staged)
            self._publish_copy(temp, final, False, where)
        except Cancelled:
            self._discard_all((temp, staged))
            raise Cancelled("restore cancelled: the partial volume was removed, nothing was "
                            "published", **where) from None
        except OSError as err:
            self._discard_all((temp, staged))
            raise StorageError(f"cannot restore: {err.strerror}", **where,
                               hint="nothing was published") from None
        except BaseException:
            self._discard_all((temp, staged))
            raise
        return self.probe_volume(pool, name)

    def measure_restore(self, pool: Pool, archive_path: str, name: str, *,
                        fmt: ImageFormat | None = None, into_existing: bool = False) -> int:
        info = self._archive_info(archive_path, _where(pool, name))
        data = info.data_bytes
        if into_existing:
            volume = self.probe_volume(pool, name)
            raw = qemuimg.qemu_format(volume.format) == "raw"
            return data if raw else 2 * data  # the staged raw, and the clusters written
        if fmt in (None, ImageFormat.RAW):
            return data
        return 2 * data + data // 64 + (1 << 20)  # staged raw, qcow2 with its tables

    def _restore_into(self, pool: Pool, name: str, archive_path: str, info: ArchiveInfo,
                      fmt: ImageFormat | None, staged: str, where: dict[str, str],
                      progress: ProgressCallback | None,
                      should_cancel: CancelCheck | None) -> None:
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "restore into")
        if volume.readonly or volume.format == ImageFormat.ISO:
            raise InvalidRequest("it is read-only (a snapshot or an ISO): it is never "
                                 "written", **where, hint="restore into a new volume")
        if volume.format not in COPY_FORMATS:
            raise NotSupported(f"cannot write into a {volume.format} volume", **where)
        if fmt is not None and fmt != volume.format:
            raise InvalidRequest(f"a restore into an existing volume keeps its format "
                                 f"({volume.format})", **where)
        if volume.capacity < info.virtual_size:
            raise InvalidRequest(
                f"it is smaller ({size_text(volume.capacity)}) than the archive's data "
                f"({size_text(info.virtual_size)}); nothing was changed", **where,
                hint="grow it first, or restore into a new volume")
        self._refuse_in_use(volume, "overwritten")
        self._check_cancel(should_cancel, where, "restore")
        self._clear_leftover(staged, where)
        if qemuimg.qemu_format(volume.format) != "raw":
            try:
                self._decompress(archive_path, staged, info, volume.capacity, False, where,
                                 progress, should_cancel)
                reporter = CopyProgress(progress, volume.capacity, "write")
                argv = qemuimg.convert(staged, "raw", volume.path, volume.format,
                                       existing=True)
                result = self._run(argv, where, reporter.feed, should_cancel)
                if result.returncode != 0:
                    raise self._failure(result, "qemu-img convert", where,
                                        hint="the volume may hold part of the archive's data")
                reporter.finish()
            except OSError as err:
                raise StorageError(f"cannot restore: {err.strerror}", **where) from None
            finally:
                self._discard_quietly(staged)
            return
        # In place: the archive file is checked whole before the volume is touched.
        try:
            digest, size = self.transport.sha256_file(
                archive_path, progress=_bytes_progress(progress, "verify"),
                should_cancel=should_cancel)
        except OSError as err:
            raise StorageError(f"cannot read the archive {archive_path}: {err.strerror}",
                               **where) from None
        if (digest, size) != (info.archive_sha256, info.archive_size):
            raise ChecksumMismatch(f"the archive {archive_path} does not have the sha256 its "
                                   "sidecar records: the volume was not touched", **where,
                                   hint="the archive is damaged or was changed")
        try:
            self._decompress(archive_path, volume.path, info, volume.capacity, True, where,
                             progress, should_cancel)
        except StorageError as err:
            raise type(err)(f"{err.what}; the volume was written in part and holds neither "
                             "its old data nor the archive's", **where,
                             hint="restore it again") from None

    def _decompress(self, archive_path: str, out: str, info: ArchiveInfo, length: int,
                    existing: bool, where: dict[str, str], progress: ProgressCallback | None,
                    should_cancel: CancelCheck | None) -> None:
        try:
            self.transport.decompress_file(
                archive_path, out, archive.decompress_argv(), length=length, existing=existing,
                expect=info, progress=_bytes_progress(progress, "decompress"),
                should_cancel=should_cancel)
        except Cancelled:
            raise Cancelled("restore cancelled", **where) from None
        except ChecksumMismatch as err:
            raise ChecksumMismatch(f"{archive_path}: {err.what}", **where,
                                   hint="the archive is damaged or was changed") from None
        except CommandFailed as err:
            raise CommandFailed(f"{archive_path}: {err.what}", **where) from None
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left to restore into: {err.strerror}", **where,
                              hint="free space in the pool") from None
            raise StorageError(f"cannot restore: {err.strerror}", **where) from None

    def _archive_info(self, archive_path: str, where: dict[str, str]) -> ArchiveInfo:
        try:
            return self.read_archive(archive_path)
        except InvalidRequest as err:
            raise InvalidRequest(err.what, **where, hint=err.hint) from None

    def _archive_destination(self, dest: str, where: dict[str, str]) -> tuple[str, str]:
        """(directory, file name) of an archive's destination, checked."""
        if not dest.startswith("/") or dest.endswith("/") or "\0" in dest:
            raise InvalidRequest(f"the archive's destination {dest!r} is not an absolute "
                                 "file path", **where, hint="e.g. /backup/disk.zst")
        directory, base = os.path.split(os.path.normpath(dest))
        if base in ("", ".", "..") or base.startswith(TEMP_PREFIX) or os.path.normpath(
                dest) != dest:
            raise InvalidRequest(f"the archive's destination {dest!r} is not a plain file "
                                 "path", **where, hint="e.g. /backup/disk.zst")
        if len(os.fsencode(base)) + ROOM > MAX_NAME_BYTES:
            raise InvalidRequest("the archive's file name is too long", **where)
        kind = self.transport.probe_path(directory, None)["kind"]
        if kind not in ("directory", "other"):  # "other": a symbolic link, to a directory
            raise InvalidRequest(f"{directory} is not a directory", **where,
                                 hint="create it first")
        return directory, base

    def _check_archive_target(self, dest: str, sidecar: str, overwrite: bool,
                              where: dict[str, str]) -> bool:
        """Refuse a taken destination unless ``overwrite``; whether the sidecar's name
        must be replaced (taken by an old sidecar, or by ours left alone by a crash)."""
        kinds = {path: self.transport.probe_path(path, None)["kind"]
                 for path in (dest, sidecar)}
        for path, kind in kinds.items():
            if kind not in ("missing", "file"):
                raise InvalidRequest(f"{path} is a {kind}: it is never replaced", **where)
        if kinds[dest] == "file" and not overwrite:
            raise VolumeExists(f"{dest} already exists", **where,
                               hint="choose another name, or overwrite it; nothing was "
                                    "changed")
        if kinds[sidecar] == "missing":
            return False
        if overwrite:
            return True
        try:
            ours = archive.is_sidecar(self.transport.read_bytes(sidecar, 0, SIDECAR_MAX))
        except OSError:
            ours = False
        if not ours:
            raise VolumeExists(f"{sidecar} (where the archive's sidecar goes) already "
                               "exists", **where,
                               hint="choose another name, or overwrite it; nothing was "
                                    "changed")
        return True  # a sidecar whose archive never got published

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            return self.transport.lstat(path)
        except FileNotFoundError:
            return None

    def _discard_all(self, paths: tuple[str, ...]) -> None:
        for path in paths:
            self._discard_quietly(path)

    # -- helpers of the operations ---------------------------------------------------

    def _run(self, argv: list[str], where: dict[str, str],
             on_output: Callable[[bytes], None] | None = None,
             should_cancel: CancelCheck | None = None) -> CommandResult:
        try:
            return self.transport.run(argv, on_output=on_output, should_cancel=should_cancel)
        except Cancelled:
            raise Cancelled(f"{qemuimg_name(argv)} was cancelled", **where) from None

    def _failure(self, result: CommandResult, what: str, where: dict[str, str], *,
                 hint: str = "") -> StorageError:
        """The error a failed command stands for: no space, a lock, or just failed."""
        text = result.stderr.decode(errors="replace")
        line = last_line(result.stderr) or f"exited with status {result.returncode}"
        if any(marker in text for marker in _NO_SPACE):
            return NoSpace(f"{what} failed: no space left on the pool's file system ({line})",
                           **where, hint=hint or "free space in the pool")
        if _LOCK_ERROR.search(text):
            return VolumeBusy(f"{what} refused: a running QEMU holds the image", **where,
                              hint="stop the VM (or qemu-nbd) using it first")
        if "does not support resize" in text:
            return NotSupported(f"{what}: the image format cannot be resized", **where)
        return CommandFailed(f"{what} failed: {line}", **where, hint=hint)

    def _check_cancel(self, should_cancel: CancelCheck | None, where: dict[str, str],
                      what: str) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"{what} cancelled before it changed anything", **where)

    def _refuse_in_use(self, volume: Volume, what: str) -> None:
        if self.volume_in_use(volume):
            raise VolumeBusy(f"in use by a running QEMU (its file lock): it is not {what}",
                             host=volume.host, pool=volume.pool, volume=volume.name,
                             hint="stop the VM (or qemu-nbd) using it first")

    def _require_usable(self, volume: Volume, action: str) -> None:
        """Refuse volumes qemu-img must not open: damaged, encrypted, with an external
        data file, or with a backing chain the scanner would not follow."""
        info, problem = volume.info, None
        if volume.error:
            problem = volume.error
        elif info.invalid or info.truncated:
            problem = "its header is damaged (" + ("; ".join(info.problems) or "?") + ")"
        elif info.encrypted or volume.format == ImageFormat.LUKS:
            problem = "it is encrypted"
        elif info.data_file:
            problem = f"its data lies in an external file ({info.data_file!r}), never opened"
        elif info.unknown_incompatible:
            problem = "it uses qcow2 features this console does not know"
        elif volume.chain.problem is not None:
            problem = (f"its backing chain is broken ({volume.chain.problem}: "
                       f"{volume.chain.problem_detail})")
        if problem:
            raise InvalidRequest(f"cannot {action} it: {problem}", host=volume.host,
                                 pool=volume.pool, volume=volume.name,
                                 hint="check and fix the volume first")

    def _read(self, path: str, offset: int, length: int, where: dict[str, str]) -> bytes:
        try:
            return self.transport.read_bytes(path, offset, length)
        except OSError as err:
            raise StorageError(f"cannot read {path}: {err.strerror}", **where) from None

    def _filesystem_at_start(self, volume: Volume,
                             where: dict[str, str]) -> filesystems.ExtFilesystem | None:
        """The ext2/3/4 file system at guest offset 0 of the volume, if any. A raw image
        is read directly; any other format through qemu-img dd into a temporary file."""
        if qemuimg.qemu_format(volume.format) == "raw":
            head = self._read(volume.path, 0, HEAD_BYTES, where)
        else:
            temp = os.path.join(os.path.dirname(volume.path), temporary_name("head"))
            try:
                result = self._run(qemuimg.read_head(volume.path, volume.format, temp,
                                                     HEAD_BYTES), where)
                if result.returncode != 0:
                    raise self._failure(result, "qemu-img dd (reading its first sectors)",
                                        where)
                head = self._read(temp, 0, HEAD_BYTES, where)
            finally:
                self._discard_quietly(temp)
        return filesystems.ext_filesystem(lambda offset, length: head[offset:offset + length])

    def _temp_name(self, name: str, temp_name: str | None, where: dict[str, str], *,
                   room: int = 0) -> str:
        """The temporary name to use; ``room`` bytes are kept free for the suffixes of
        its companions (``.raw``, ``.json``)."""
        if temp_name is None:
            return os.fsdecode(os.fsencode(temporary_name(name))[:MAX_NAME_BYTES - room])
        if (not temp_name.startswith(TEMP_PREFIX) or "/" in temp_name or "\0" in temp_name
                or len(os.fsencode(temp_name)) > MAX_NAME_BYTES - room):
            raise InvalidRequest(f"temporary name {temp_name!r} is not one file name "
                                 f"starting with {TEMP_PREFIX!r}", **where)
        return temp_name

    def _clear_leftover(self, temp: str, where: dict[str, str]) -> None:
        """Remove what a crashed attempt left under the job's temporary name."""
        kind = self.transport.probe_path(temp, None)["kind"]
        if kind == "missing":
            return
        if kind != "file":
            raise InvalidRequest(f"{temp} is a {kind}: it is not removed", **where,
                                 hint="choose another temporary name")
        try:
            self.transport.remove_file(temp)
        except OSError as err:
            raise StorageError(f"cannot remove the leftover {temp}: {err.strerror}",
                               **where) from None

    def _incremental_base(self, source: Volume, backing: Volume, depth: int,
                          out_fmt: ImageFormat, dest_pool: Pool,
                          where: dict[str, str]) -> str:
        """Check ``backing`` can be the base of an incremental copy of ``source``; the
        name the new volume records for it (relative within one directory)."""
        if out_fmt != ImageFormat.QCOW2:
            raise InvalidRequest("an incremental copy is a qcow2 overlay on its base",
                                 **where, hint="copy as qcow2")
        if depth < 1 or source.chain.depth <= depth:
            raise InvalidRequest(
                f"{source.name!r} has no backing {depth} link(s) down its chain for "
                f"{backing.name!r} to stand for", **where, hint="make a full copy")
        self._require_usable(backing, "base a copy on")
        link = source.chain.links[depth]
        if backing.capacity != link.capacity:
            raise InvalidRequest(
                f"{backing.name!r} ({size_text(backing.capacity)}) cannot be a copy of "
                f"{link.path} ({size_text(link.capacity)})", **where,
                hint="choose a base identical to one of the source's")
        return backing_reference(backing, dest_pool.path)

    def _check_target(self, source: Volume, backing: Volume | None, final: str,
                      overwrite: bool, dest_pool: Pool, dest_name: str) -> None:
        """Refuse a taken target unless it may be overwritten; never one that the copy
        reads from or a running QEMU has open."""
        where = _where(dest_pool, dest_name)
        kind = self.transport.probe_path(final, None)["kind"]
        if kind == "missing":
            return
        if not overwrite:
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name, or overwrite it; nothing was changed")
        if kind != "file":
            raise InvalidRequest(f"{final} is a {kind}, not a volume: it is never replaced",
                                 **where)
        reads = {os.path.normpath(link.path) for link in source.chain.links}
        if backing is not None:
            reads |= {os.path.normpath(link.path) for link in backing.chain.links}
        if os.path.normpath(final) in reads:
            raise VolumeBusy("the copy reads from it (it is in the backing chain)", **where,
                             hint="choose another name")
        self._refuse_in_use(self.probe_volume(dest_pool, dest_name), "replaced")

    def _rebase_copy(self, source: Volume, temp: str, back_name: str,
                     back_fmt: ImageFormat, where: dict[str, str], reporter: CopyProgress,
                     should_cancel: CancelCheck | None) -> CommandResult:
        """An incremental copy onto a copy of a base deeper than the source's backing:
        qemu-img convert -B would miss the images in between (it copies the source's top
        image only), so the new volume starts as an empty overlay on the source and a
        safe rebase onto the base writes every cluster where the two differ."""
        argv = qemuimg.create(temp, ImageFormat.QCOW2, source.capacity, backing=source.path,
                              backing_format=qemuimg.qemu_format(source.format))
        result = self._run(argv, where, should_cancel=should_cancel)
        if result.returncode != 0:
            return result
        argv = qemuimg.rebase(temp, ImageFormat.QCOW2, back_name, back_fmt, unsafe=False,
                              progress=True)
        return self._run(argv, where, reporter.feed, should_cancel)

    def _publish_copy(self, temp: str, final: str, overwrite: bool,
                      where: dict[str, str]) -> None:
        try:
            self.transport.publish(temp, final, replace=overwrite)
        except FileExistsError:
            raise VolumeExists("a file with that name appeared meanwhile", **where,
                               hint="nothing was changed") from None
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left to finish the copy: {err.strerror}", **where,
                              hint="free space in the pool") from None
            raise StorageError(f"cannot publish the copy: {err.strerror}", **where) from None

    def _discard_quietly(self, temp: str) -> None:
        """Remove a temporary file while another error is on its way out."""
        with contextlib.suppress(OSError, StorageError):
            self.transport.remove_file(temp)


def _where(pool: Pool, name: str) -> dict[str, str]:
    return {"host": pool.host, "pool": pool.name, "volume": name}


def _bytes_progress(progress: ProgressCallback | None,
                    label: str) -> Callable[[int, int], None] | None:
    """A byte stream's (done, total) as ``Progress`` labelled ``label``."""
    if progress is None:
        return None
    report = progress

    def bytes_done(done: int, total: int) -> None:
        report(Progress(1, 1, done, total, label))

    return bytes_done


def qemuimg_name(argv: list[str]) -> str:
    """``qemu-img convert`` from an argv, for messages."""
    return " ".join(argv[:2]) if argv and argv[0] == qemuimg.QEMU_IMG else (
        argv[0] if argv else "the command")
