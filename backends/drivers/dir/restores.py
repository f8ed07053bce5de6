"""Restoring an archive into a new volume (published whole) or into an existing one
(written in place, the archive checked whole first)."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from backends import archive, qemuimg
from backends.archive import ArchiveInfo
from backends.contract import (
    RAW_SUFFIX,
    ROOM,
    CancelCheck,
    Cancelled,
    ChecksumMismatch,
    CommandFailed,
    InvalidRequest,
    NoSpace,
    NotSupported,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeExists,
)
from backends.drivers.dir.commands import failure, run
from backends.drivers.dir.copies import COPY_FORMATS
from backends.drivers.dir.guards import check_cancel, refuse_in_use, require_usable
from backends.drivers.dir.names import size_text, validate_name, where_of
from backends.drivers.dir.progress import CopyProgress, bytes_progress
from backends.drivers.dir.temporaries import (
    clear_leftover,
    discard_all,
    discard_quietly,
    publish_copy,
    temp_name_for,
)
from backends.model import ImageFormat, Pool, Volume

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


def restore_volume(
    driver: DirDriver,
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
    where = where_of(pool, name)
    info = _archive_info(driver, archive_path, where)
    temp = os.path.join(pool.path, temp_name_for(name, temp_name, where, room=ROOM))
    staged = temp + RAW_SUFFIX
    if into_existing:
        _restore_into(driver, pool, name, archive_path, info, fmt, staged, where, progress,
                      should_cancel)
        return driver.probe_volume(pool, name)
    out_fmt = fmt or ImageFormat.RAW
    if out_fmt not in (ImageFormat.RAW, ImageFormat.QCOW2):
        raise InvalidRequest(f"cannot restore into a {out_fmt} volume", **where,
                             hint="restore as raw or qcow2")
    if out_fmt == ImageFormat.QCOW2 and info.virtual_size % 512:
        raise InvalidRequest(f"the archive's {size_text(info.virtual_size)} are not a "
                             "multiple of 512 bytes, as a qcow2 volume's size must be",
                             **where, hint="restore it as raw")
    final = os.path.join(pool.path, name)
    if driver.transport.probe_path(final, None)["kind"] != "missing":
        raise VolumeExists("a file with that name already exists", **where,
                           hint="choose another name, or restore into it; nothing was "
                                "changed")
    check_cancel(should_cancel, where, "restore")
    for leftover in (temp, staged):
        clear_leftover(driver.transport, leftover, where)
    try:
        raw_out = temp if out_fmt == ImageFormat.RAW else staged
        _decompress(driver.transport, archive_path, raw_out, info, info.virtual_size, False,
                    where, progress, should_cancel)
        if raw_out != temp:
            reporter = CopyProgress(progress, info.virtual_size, "convert")
            result = run(driver.transport, qemuimg.convert(staged, "raw", temp, out_fmt),
                         where, reporter.feed, should_cancel)
            if result.returncode != 0:
                raise failure(result, "qemu-img convert", where,
                              hint="nothing was published")
            reporter.finish()
            driver.transport.remove_file(staged)
        publish_copy(driver.transport, temp, final, False, where)
    except Cancelled:
        discard_all(driver.transport, (temp, staged))
        raise Cancelled("restore cancelled: the partial volume was removed, nothing was "
                        "published", **where) from None
    except OSError as err:
        discard_all(driver.transport, (temp, staged))
        raise StorageError(f"cannot restore: {err.strerror}", **where,
                           hint="nothing was published") from None
    except BaseException:
        discard_all(driver.transport, (temp, staged))
        raise
    return driver.probe_volume(pool, name)


def measure_restore(driver: DirDriver, pool: Pool, archive_path: str, name: str, *,
                    fmt: ImageFormat | None = None, into_existing: bool = False) -> int:
    info = _archive_info(driver, archive_path, where_of(pool, name))
    data = info.data_bytes
    if into_existing:
        volume = driver.probe_volume(pool, name)
        raw = qemuimg.qemu_format(volume.format) == "raw"
        return data if raw else 2 * data  # the staged raw, and the clusters written
    if fmt in (None, ImageFormat.RAW):
        return data
    return 2 * data + data // 64 + (1 << 20)  # staged raw, qcow2 with its tables


def _restore_into(driver: DirDriver, pool: Pool, name: str, archive_path: str,
                  info: ArchiveInfo, fmt: ImageFormat | None, staged: str,
                  where: dict[str, str], progress: ProgressCallback | None,
                  should_cancel: CancelCheck | None) -> None:
    volume = driver.probe_volume(pool, name)
    require_usable(volume, "restore into")
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
    refuse_in_use(driver, volume, "overwritten")
    check_cancel(should_cancel, where, "restore")
    clear_leftover(driver.transport, staged, where)
    if qemuimg.qemu_format(volume.format) != "raw":
        try:
            _decompress(driver.transport, archive_path, staged, info, volume.capacity, False,
                        where, progress, should_cancel)
            reporter = CopyProgress(progress, volume.capacity, "write")
            argv = qemuimg.convert(staged, "raw", volume.path, volume.format,
                                   existing=True)
            result = run(driver.transport, argv, where, reporter.feed, should_cancel)
            if result.returncode != 0:
                raise failure(result, "qemu-img convert", where,
                              hint="the volume may hold part of the archive's data")
            reporter.finish()
        except OSError as err:
            raise StorageError(f"cannot restore: {err.strerror}", **where) from None
        finally:
            discard_quietly(driver.transport, staged)
        return
    # In place: the archive file is checked whole before the volume is touched.
    try:
        digest, size = driver.transport.sha256_file(
            archive_path, progress=bytes_progress(progress, "verify"),
            should_cancel=should_cancel)
    except OSError as err:
        raise StorageError(f"cannot read the archive {archive_path}: {err.strerror}",
                           **where) from None
    if (digest, size) != (info.archive_sha256, info.archive_size):
        raise ChecksumMismatch(f"the archive {archive_path} does not have the sha256 its "
                               "sidecar records: the volume was not touched", **where,
                               hint="the archive is damaged or was changed")
    try:
        _decompress(driver.transport, archive_path, volume.path, info, volume.capacity, True,
                    where, progress, should_cancel)
    except StorageError as err:
        raise type(err)(f"{err.what}; the volume was written in part and holds neither "
                        "its old data nor the archive's", **where,
                        hint="restore it again") from None


def _decompress(transport: Transport, archive_path: str, out: str, info: ArchiveInfo,
                length: int, existing: bool, where: dict[str, str],
                progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
    try:
        transport.decompress_file(
            archive_path, out, archive.decompress_argv(), length=length, existing=existing,
            expect=info, progress=bytes_progress(progress, "decompress"),
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


def _archive_info(driver: DirDriver, archive_path: str, where: dict[str, str]) -> ArchiveInfo:
    try:
        return driver.read_archive(archive_path)
    except InvalidRequest as err:
        raise InvalidRequest(err.what, **where, hint=err.hint) from None
