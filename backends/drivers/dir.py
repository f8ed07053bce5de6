"""A directory of image files is a pool; its regular files are its volumes.

Works over any ``Transport``: the listing and probing happen in the transport's
scanner (in-process locally, one round trip remotely), and this module turns its plain
records into model objects.

Operations that make a new file (create, copy) write it under a temporary name in the
pool (``TEMP_PREFIX``) and publish it whole; resize and growfs change a volume in place,
under the job's lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Callable
from typing import Any

from backends import filesystems, qemuimg
from backends.contract import (
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
from backends.transport.scanner import TEMP_PREFIX

MAX_NAME_BYTES = 255
# Formats qemu-img writes without a secret or an extent list to trust.
COPY_FORMATS = (ImageFormat.RAW, ImageFormat.QCOW2, ImageFormat.VMDK, ImageFormat.VDI,
                ImageFormat.VPC, ImageFormat.VHDX)
# Single-file formats whose header qemu-img info may open to ask QEMU's lock (a VMDK
# may name extents, a qcow2 a data file, a LUKS image needs its secret).
INFO_LOCK_FORMATS = (ImageFormat.QCOW2, ImageFormat.VDI, ImageFormat.VPC, ImageFormat.VHDX)
HEAD_BYTES = 2048  # sector 0 (a boot signature) and the ext superblock at 1024
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
    same_dir = os.path.normpath(os.path.dirname(backing.path)) == os.path.normpath(directory)
    return backing.name if same_dir and ":" not in backing.name else backing.path


def size_text(size: int) -> str:
    """``67108864 bytes (64.0 MiB)``: exact for the record, readable for a person."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size} bytes ({size / (1 << shift):.1f} {unit})"
    return f"{size} bytes"


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


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
        for entry in listing["entries"]:
            if entry["kind"] == "file":
                volumes.append(volume_from_entry(pool, entry))
            else:
                skipped.append(f"{entry['name']} ({entry['kind']})")
        capacity = capacity_from_statvfs(listing["statvfs"])
        committed = sum(v.capacity for v in volumes)
        capacity = Capacity(capacity.capacity, capacity.allocation, capacity.available,
                            committed)
        return PoolScan(
            pool=Pool(pool.host, pool.name, pool.kind, pool.path, capacity),
            volumes=tuple(volumes),
            skipped=tuple(skipped),
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
        progress: ProgressCallback | None = None,
    ) -> Volume:
        validate_name(name, pool=pool)
        where = {"host": pool.host, "pool": pool.name, "volume": name}
        if fmt not in self.capabilities.create_formats:
            raise InvalidRequest(f"cannot create {fmt} volumes here", **where,
                                 hint="use raw or qcow2")
        if capacity <= 0 and backing is None:
            raise InvalidRequest("the size must be larger than 0", **where)
        if backing is not None and fmt != ImageFormat.QCOW2:
            raise InvalidRequest("only qcow2 volumes can have a backing volume", **where)
        final = os.path.join(pool.path, name)
        if self.transport.probe_path(final, None)["kind"] != "missing":
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name; nothing was changed")
        # Built under a temporary name and published by link(), which refuses to
        # replace anything, so a half-built image never carries the final name.
        temp = os.path.join(pool.path, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}"[:255])
        back_name = back_fmt = None
        if backing is not None:
            if backing.chain.problem is not None or backing.error:
                raise InvalidRequest(f"backing volume {backing.name!r} is not usable",
                                     **where, hint="choose a healthy backing volume")
            back_name = backing_reference(backing, os.path.dirname(final))
            back_fmt = str(backing.format)
            if capacity <= 0:
                capacity = backing.capacity
        argv = qemuimg.create(temp, fmt, capacity, backing=back_name, backing_format=back_fmt)
        if progress:
            progress(Progress(1, 2, 0, capacity, "create"))
        result = self.transport.run(argv)
        try:
            if result.returncode != 0:
                raise CommandFailed(
                    "qemu-img create failed: "
                    + result.stderr.decode(errors="replace").strip().splitlines()[-1:][0]
                    if result.stderr.strip() else f"qemu-img create exited {result.returncode}",
                    **where)
            if progress:
                progress(Progress(2, 2, 0, capacity, "publish"))
            self._publish(temp, final, pool, name)
        except BaseException:
            self._discard(temp)
            raise
        if progress:
            progress(Progress(2, 2, capacity, capacity, "done"))
        return self.probe_volume(pool, name)

    def _publish(self, temp: str, final: str, pool: Pool, name: str) -> None:
        try:
            self.transport.publish(temp, final)
        except FileExistsError:
            raise VolumeExists("a file with that name appeared meanwhile", host=pool.host,
                               pool=pool.name, volume=name, hint="nothing was changed") from None
        except OSError as err:
            raise StorageError(f"cannot publish the new volume: {err.strerror}",
                               host=pool.host, pool=pool.name, volume=name) from None

    def _discard(self, temp: str) -> None:
        try:
            self.transport.remove_file(temp)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise

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

    def delete_volume(self, pool: Pool, name: str) -> None:
        validate_name(name, pool=pool)
        path = os.path.join(pool.path, name)
        entry = self.transport.probe_path(path, None)
        if entry["kind"] == "missing":
            raise VolumeNotFound("the volume is already gone", host=pool.host, pool=pool.name,
                                 volume=name)
        if entry["kind"] != "file":
            raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume: not removed",
                                 host=pool.host, pool=pool.name, volume=name)
        try:
            self.transport.remove_file(path)
        except OSError as err:
            raise StorageError(f"cannot remove {path}: {err.strerror}", host=pool.host,
                               pool=pool.name, volume=name) from None

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
        self._check_target(source, backing, final, overwrite, dest_pool, dest_name)
        self._refuse_in_use(source, "copied (the copy would be torn)")
        self._check_cancel(should_cancel, where, "copy")
        self._clear_leftover(temp, where)
        reporter = CopyProgress(progress, source.capacity, "copy")
        try:
            if backing is None or base_depth == 1:
                argv = qemuimg.convert(
                    source.path, source.format, temp, out_fmt, backing=back_name,
                    backing_fmt=backing.format if backing is not None else None)
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

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None) -> int:
        validate_name(name, pool=pool)
        where = _where(pool, name)
        volume = self.probe_volume(pool, name)
        self._require_usable(volume, "measure a copy of")
        out_fmt = fmt or volume.format
        if (qemuimg.qemu_format(volume.format) == "raw"
                and qemuimg.qemu_format(out_fmt) == "raw"):
            # A sparse copy writes what the source has allocated, no more; qemu-img
            # measure would say the whole virtual size.
            return volume.allocation
        result = self._run(qemuimg.measure(volume.path, volume.format, out_fmt), where)
        if result.returncode != 0:
            raise self._failure(result, "qemu-img measure", where)
        try:
            return qemuimg.parse_measure(result.stdout).required
        except ValueError as err:
            raise CommandFailed(f"qemu-img measure: {err}", **where) from None

    def volume_in_use(self, volume: Volume) -> bool:
        """Asks qemu-img info (without ``-U``, so QEMU's file locking answers) for
        single-file formats. A raw image is looked at through its lock bytes instead:
        qemu-img opens a raw image read-only sharing writes, so it never notices a
        writer there. Anything qemu-img cannot open is asked the lock bytes too."""
        where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
        if (volume.format in INFO_LOCK_FORMATS and not volume.info.data_file
                and not volume.info.invalid and not volume.error):
            result = self._run(qemuimg.info(volume.path, volume.format), where)
            if result.returncode == 0:
                return False
            if _LOCK_ERROR.search(result.stderr.decode(errors="replace")):
                return True
        try:
            return self.transport.qemu_write_locked(volume.path)
        except OSError as err:
            raise StorageError(f"cannot tell whether it is in use: {err.strerror}",
                               **where) from None

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
            raise VolumeBusy(f"a running QEMU has it open for writing: it is not {what}",
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

    def _temp_name(self, name: str, temp_name: str | None, where: dict[str, str]) -> str:
        if temp_name is None:
            return temporary_name(name)
        if (not temp_name.startswith(TEMP_PREFIX) or "/" in temp_name or "\0" in temp_name
                or len(os.fsencode(temp_name)) > MAX_NAME_BYTES):
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


def qemuimg_name(argv: list[str]) -> str:
    """``qemu-img convert`` from an argv, for messages."""
    return " ".join(argv[:2]) if argv and argv[0] == qemuimg.QEMU_IMG else (
        argv[0] if argv else "the command")
