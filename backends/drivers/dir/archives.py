"""Archiving a volume to a compressed file with its sidecar (what it holds, its
checksums), and reading an archive's sidecar back."""

from __future__ import annotations

import datetime
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
    InvalidRequest,
    NoSpace,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeExists,
)
from backends.drivers.dir.commands import failure, run
from backends.drivers.dir.guards import check_cancel, refuse_in_use, require_usable
from backends.drivers.dir.inspection import chain_data
from backends.drivers.dir.names import MAX_NAME_BYTES, size_text, validate_name, where_of
from backends.drivers.dir.progress import CopyProgress, bytes_progress
from backends.drivers.dir.temporaries import (
    clear_leftover,
    discard_all,
    discard_quietly,
    temp_name_for,
)
from backends.model import Pool, Progress
from backends.transport.scanner import TEMP_PREFIX

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


SIDECAR_MAX = 1 << 20


def archive_volume(
    driver: DirDriver,
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
    where = where_of(pool, name)
    try:
        argv = archive.compress_argv(level)
    except ValueError as err:
        raise InvalidRequest(str(err), **where) from None
    directory, base = _archive_destination(driver.transport, dest, where)
    sidecar = dest + archive.SIDECAR_SUFFIX
    temp = os.path.join(directory, temp_name_for(base, temp_name, where, room=ROOM))
    temps = (temp, temp + archive.SIDECAR_SUFFIX, temp + RAW_SUFFIX)
    volume = driver.probe_volume(pool, name)
    require_usable(volume, "archive")
    if os.path.normpath(dest) in {os.path.normpath(link.path)
                                  for link in volume.chain.links}:
        raise InvalidRequest("the archive would replace the volume it is made of",
                             **where, hint="choose another destination")
    replace_sidecar = _check_archive_target(driver.transport, dest, sidecar, overwrite, where)
    refuse_in_use(driver, volume, "archived (the archive would be torn)")
    need = driver.measure_archive(pool, name)
    try:
        vfs = driver.transport.statvfs(directory)
    except OSError as err:
        raise StorageError(f"cannot read the free space of {directory}: {err.strerror}",
                           **where) from None
    if need > vfs.f_bavail * vfs.f_frsize:
        raise NoSpace(f"the archive may need {size_text(need)} in {directory}, which has "
                      f"{size_text(vfs.f_bavail * vfs.f_frsize)} free", **where,
                      hint="free space there or archive elsewhere; nothing was written")
    check_cancel(should_cancel, where, "archive")
    for leftover in temps:
        clear_leftover(driver.transport, leftover, where)
    try:
        source = volume.path
        if qemuimg.qemu_format(volume.format) != "raw":
            source = temps[2]
            reporter = CopyProgress(progress, volume.capacity, "flatten")
            result = run(driver.transport,
                         qemuimg.convert(volume.path, volume.format, source, "raw"),
                         where, reporter.feed, should_cancel)
            if result.returncode != 0:
                raise failure(result, "qemu-img convert (flattening it to raw)",
                              where, hint="nothing was published")
            reporter.finish()
        streamed = driver.transport.compress_file(
            source, temp, argv, progress=bytes_progress(progress, "compress"),
            should_cancel=should_cancel)
        if source != volume.path:
            driver.transport.remove_file(source)
        if streamed.raw_size != volume.capacity:
            raise StorageError(f"the volume changed size while it was archived "
                               f"({size_text(streamed.raw_size)} read)", **where)
        info = ArchiveInfo(
            volume=name, format=str(volume.format), virtual_size=streamed.raw_size,
            raw_sha256=streamed.raw_sha256, data_bytes=streamed.data_bytes,
            archive_sha256=streamed.archive_sha256, archive_size=streamed.archive_size,
            level=level, created=_utc_now(), producer=producer or archive.producer())
        driver.transport.write_new_file(temps[1], info.to_json())
        # The sidecar first: an archive is never seen without what it holds.
        driver.transport.publish(temps[1], sidecar, replace=replace_sidecar)
        try:
            driver.transport.publish(temp, dest, replace=overwrite)
        except BaseException:
            discard_quietly(driver.transport, sidecar)
            raise
    except Cancelled:
        discard_all(driver.transport, temps)
        raise Cancelled("archive cancelled: its temporary files were removed, nothing was "
                        "published", **where) from None
    except FileExistsError:
        discard_all(driver.transport, temps)
        raise VolumeExists(f"{dest} appeared meanwhile", **where,
                           hint="nothing was changed") from None
    except OSError as err:
        discard_all(driver.transport, temps)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"no space left for the archive in {directory}: {err.strerror}",
                          **where, hint="its temporary files were removed") from None
        raise StorageError(f"cannot write the archive: {err.strerror}", **where,
                           hint="its temporary files were removed") from None
    except BaseException:
        discard_all(driver.transport, temps)
        raise
    if progress:
        progress(Progress(1, 1, info.virtual_size, info.virtual_size, "compress"))
    return info


def measure_archive(driver: DirDriver, pool: Pool, name: str) -> int:
    volume = driver.probe_volume(pool, name)
    data = chain_data(driver.transport, volume)
    # zstd's bound on incompressible input: a 1/256 more, and a little.
    need = data + data // 256 + (1 << 20)
    if qemuimg.qemu_format(volume.format) != "raw":
        need += data  # the flattened copy it compresses
    return need


def read_archive(transport: Transport, path: str) -> ArchiveInfo:
    if not path.startswith("/"):
        raise InvalidRequest(f"the archive {path!r} must be given as an absolute path")
    kind = transport.probe_path(path, None)["kind"]
    if kind != "file":
        raise InvalidRequest(f"there is no archive at {path}"
                             + ("" if kind == "missing" else f" (it is a {kind})"))
    sidecar = path + archive.SIDECAR_SUFFIX
    try:
        data = transport.read_bytes(sidecar, 0, SIDECAR_MAX)
    except OSError as err:
        raise InvalidRequest(f"cannot read the archive's sidecar {sidecar}: {err.strerror}",
                             hint="an archive is restored with the sidecar written beside "
                                  "it, which holds its checksums") from None
    try:
        return ArchiveInfo.from_json(data)
    except ValueError as err:
        raise InvalidRequest(f"{sidecar} is not an archive's sidecar: {err}") from None


def _archive_destination(transport: Transport, dest: str,
                         where: dict[str, str]) -> tuple[str, str]:
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
    kind = transport.probe_path(directory, None)["kind"]
    if kind not in ("directory", "other"):  # "other": a symbolic link, to a directory
        raise InvalidRequest(f"{directory} is not a directory", **where,
                             hint="create it first")
    return directory, base


def _check_archive_target(transport: Transport, dest: str, sidecar: str, overwrite: bool,
                          where: dict[str, str]) -> bool:
    """Refuse a taken destination unless ``overwrite``; whether the sidecar's name
    must be replaced (taken by an old sidecar, or by ours left alone by a crash)."""
    kinds = {path: transport.probe_path(path, None)["kind"]
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
        ours = archive.is_sidecar(transport.read_bytes(sidecar, 0, SIDECAR_MAX))
    except OSError:
        ours = False
    if not ours:
        raise VolumeExists(f"{sidecar} (where the archive's sidecar goes) already "
                           "exists", **where,
                           hint="choose another name, or overwrite it; nothing was "
                                "changed")
    return True  # a sidecar whose archive never got published


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
