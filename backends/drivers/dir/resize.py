"""Changing a volume's size in place: ``qemu-img resize`` (never cutting an ext file
system that starts at offset 0), and growing a raw image's ext file system to fill it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from backends import filesystems, qemuimg
from backends.contract import (
    CancelCheck,
    CommandFailed,
    InvalidRequest,
    NotSupported,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeBusy,
)
from backends.drivers.dir.commands import failure, last_line, run
from backends.drivers.dir.guards import check_cancel, refuse_in_use, require_usable
from backends.drivers.dir.names import size_text, validate_name, where_of
from backends.drivers.dir.temporaries import discard_quietly, temporary_name
from backends.model import ImageFormat, Pool, Progress, Volume

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver

HEAD_BYTES = 2048  # sector 0 (a boot signature) and the ext superblock at 1024
QCOW2_CLUSTER = 64 << 10  # qemu-img's default, when the header gave none


def _preallocated(volume: Volume) -> bool:
    """A raw file whose every byte is allocated: someone chose to have its space
    promised, so a grow keeps it that way (a hole would fill the pool later, under a
    running guest)."""
    return qemuimg.qemu_format(volume.format) == "raw" and volume.capacity > 0 and \
        volume.allocation >= volume.capacity


def measure_resize(driver: DirDriver, pool: Pool, name: str, capacity: int) -> int:
    """What growing takes: a preallocated raw file its growth (it stays preallocated);
    a sparse raw file nothing; a qcow2 a new, larger L1 table (8 bytes per L2 table's
    reach), in whole clusters, when the one it has is too small."""
    volume = driver.probe_volume(pool, name)
    if capacity <= volume.capacity:
        return 0
    if _preallocated(volume):
        return capacity - volume.capacity
    if qemuimg.qemu_format(volume.format) == "raw":
        return 0
    cluster = volume.info.cluster_size or QCOW2_CLUSTER
    reach = cluster * (cluster // 8)  # guest bytes one L1 entry's L2 table maps
    entries, before = -(-capacity // reach), -(-volume.capacity // reach)
    if entries <= before:
        return 0  # the L1 table it has already maps the new size
    return -(-(entries * 8) // cluster) * cluster


def resize_volume(
    driver: DirDriver,
    pool: Pool,
    name: str,
    capacity: int,
    *,
    shrink: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> Volume:
    validate_name(name, pool=pool)
    where = where_of(pool, name)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise InvalidRequest("the new size must be larger than 0", **where)
    volume = driver.probe_volume(pool, name)
    require_usable(volume, "resize")
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
        fs = _filesystem_at_start(driver.transport, volume, where)
        if fs is not None and fs.size > capacity:
            raise InvalidRequest(
                f"its {fs.kind} file system takes {size_text(fs.size)}: shrinking to "
                f"{size_text(capacity)} would cut it", **where,
                hint=f"shrink the file system first (resize2fs), or keep at least "
                     f"{fs.size} bytes; nothing was changed")
    refuse_in_use(driver, volume, "resized")
    check_cancel(should_cancel, where, "resize")
    if progress:
        progress(Progress(1, 1, 0, capacity, "resize"))
    argv = qemuimg.resize(volume.path, volume.format, capacity, shrink=capacity < current,
                          preallocation="falloc" if capacity > current and
                          _preallocated(volume) else None)
    result = run(driver.transport, argv, where)
    if result.returncode != 0:
        raise failure(result, "qemu-img resize", where)
    if progress:
        progress(Progress(1, 1, capacity, capacity, "resize"))
    return driver.probe_volume(pool, name)


def growfs_volume(
    driver: DirDriver,
    pool: Pool,
    name: str,
    *,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> Volume:
    validate_name(name, pool=pool)
    where = where_of(pool, name)
    volume = driver.probe_volume(pool, name)
    require_usable(volume, "grow the file system of")
    if volume.format != ImageFormat.RAW:
        raise NotSupported(
            f"growing a file system works on raw images only, and this is {volume.format}",
            **where, hint="grow it from inside the guest, or copy the volume as raw")
    if volume.readonly:
        raise InvalidRequest("it is a snapshot (read-only on disk): it is not changed",
                             **where)
    head = _read(driver.transport, volume.path, 0, HEAD_BYTES, where)
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
    refuse_in_use(driver, volume, "changed")
    total = volume.capacity - fs.size
    steps: tuple[tuple[str, list[str]], ...] = (
        ("e2fsck", filesystems.e2fsck(volume.path)),
        ("resize2fs", filesystems.resize2fs(volume.path)))
    for label, argv in steps:
        check_cancel(should_cancel, where, "growfs")
        if progress:
            progress(Progress(1, 1, 0, total, label))
        result = run(driver.transport, argv, where)
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
            raise failure(result, "resize2fs", where)
    if progress:
        progress(Progress(1, 1, total, total, "resize2fs"))
    return driver.probe_volume(pool, name)


def _filesystem_at_start(transport: Transport, volume: Volume,
                        where: dict[str, str]) -> filesystems.ExtFilesystem | None:
    """The ext2/3/4 file system at guest offset 0 of the volume, if any. A raw image
    is read directly; any other format through qemu-img dd into a temporary file."""
    if qemuimg.qemu_format(volume.format) == "raw":
        head = _read(transport, volume.path, 0, HEAD_BYTES, where)
    else:
        temp = os.path.join(os.path.dirname(volume.path), temporary_name("head"))
        try:
            result = run(transport, qemuimg.read_head(volume.path, volume.format, temp,
                                                      HEAD_BYTES), where)
            if result.returncode != 0:
                raise failure(result, "qemu-img dd (reading its first sectors)",
                              where)
            head = _read(transport, temp, 0, HEAD_BYTES, where)
        finally:
            discard_quietly(transport, temp)
    return filesystems.ext_filesystem(lambda offset, length: head[offset:offset + length])


def _read(transport: Transport, path: str, offset: int, length: int,
          where: dict[str, str]) -> bytes:
    try:
        return transport.read_bytes(path, offset, length)
    except OSError as err:
        raise StorageError(f"cannot read {path}: {err.strerror}", **where) from None
