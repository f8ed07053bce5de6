"""Snapshots and clones. A snapshot gives the disk a second name (the snapshot, made
read-only) and switches the disk's name to a new qcow2 overlay on it, atomically; a
space-saving clone is a qcow2 overlay on a snapshot, a performance clone a full copy."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from backends import qemuimg
from backends.contract import (
    CLONE_STRATEGIES,
    CancelCheck,
    InvalidRequest,
    NotSupported,
    ProgressCallback,
    StorageError,
    VolumeExists,
)
from backends.drivers.dir.commands import failure, run
from backends.drivers.dir.copies import COPY_FORMATS, overlay
from backends.drivers.dir.guards import check_cancel, refuse_in_use, require_usable
from backends.drivers.dir.names import reference, size_text, validate_name, where_of
from backends.drivers.dir.temporaries import clear_leftover, lstat, temp_name_for
from backends.model import ImageFormat, Pool, Progress, Volume

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


def snapshot_volume(
    driver: DirDriver,
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
    where = where_of(pool, name)
    if snapshot == name:
        raise InvalidRequest("the snapshot needs a name of its own", **where)
    disk = driver.probe_volume(pool, name)
    require_usable(disk, "snapshot")
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
    if driver.transport.probe_path(snap_path, None)["kind"] != "missing":
        raise VolumeExists("a file with the snapshot's name already exists", **where,
                           hint=f"choose another name than {snapshot!r}; nothing was "
                                "changed")
    temp = os.path.join(pool.path, temp_name_for(name, temp_name, where))
    argv = qemuimg.overlay(temp, disk.capacity, reference(snap_path, snapshot, pool.path),
                           disk.format)
    refuse_in_use(driver, disk, "snapshotted")
    check_cancel(should_cancel, where, "snapshot")
    clear_leftover(driver.transport, temp, where)
    steps = 4
    if progress:
        progress(Progress(1, 1, 0, steps, "link"))
    try:
        driver.transport.link(disk.path, snap_path)
    except FileExistsError:
        raise VolumeExists("a file with the snapshot's name appeared meanwhile", **where,
                           hint="nothing was changed") from None
    except OSError as err:
        raise StorageError(f"cannot give the disk a second name {snapshot!r}: "
                           f"{err.strerror}", **where) from None
    try:
        if progress:
            progress(Progress(1, 1, 1, steps, "overlay"))
        result = run(driver.transport, argv, where)
        if result.returncode != 0:
            raise failure(result, "qemu-img create (the new overlay)", where,
                          hint="the disk was not changed")
        driver.transport.copy_attributes(disk.path, temp)
        if progress:
            progress(Progress(1, 1, 2, steps, "switch"))
        driver.transport.publish(temp, disk.path, replace=True)
    except BaseException as err:
        with contextlib.suppress(OSError, StorageError):
            driver.settle_snapshot(pool, name, snapshot, os.path.basename(temp))
        if isinstance(err, OSError):
            raise StorageError(f"cannot switch the disk to its new overlay: "
                               f"{err.strerror}", **where) from None
        raise
    if progress:
        progress(Progress(1, 1, 3, steps, "protect"))
    try:
        driver.transport.make_read_only(snap_path)
    except OSError as err:
        raise StorageError(f"the snapshot {snapshot!r} is taken but could not be made "
                           f"read-only: {err.strerror}", **where,
                           hint="chmod a-w it by hand") from None
    if progress:
        progress(Progress(1, 1, steps, steps, "protect"))
    return driver.probe_volume(pool, snapshot)


def settle_snapshot(driver: DirDriver, pool: Pool, name: str, snapshot: str,
                    temp_name: str | None) -> bool:
    validate_name(name, pool=pool)
    validate_name(snapshot, pool=pool)
    where = where_of(pool, name)
    if temp_name is not None:
        clear_leftover(driver.transport,
                       os.path.join(pool.path, temp_name_for(name, temp_name, where)), where)
    snap_path = os.path.join(pool.path, snapshot)
    snap_st = lstat(driver.transport, snap_path)
    disk_st = lstat(driver.transport, os.path.join(pool.path, name))
    if snap_st is None or disk_st is None:
        return False
    if (snap_st.st_dev, snap_st.st_ino) == (disk_st.st_dev, disk_st.st_ino):
        # Before the switch: the snapshot's name is only a second name of the disk.
        try:
            driver.transport.remove_file(snap_path)
        except OSError as err:
            raise StorageError(f"cannot remove the second name {snapshot!r} of the disk: "
                               f"{err.strerror}", **where) from None
        return False
    try:
        disk = driver.probe_volume(pool, name)
    except StorageError:
        return False
    if disk.info.backing_file not in (snapshot, snap_path):
        return False  # the name belongs to another file: never ours to touch
    try:
        driver.transport.make_read_only(snap_path)
    except OSError as err:
        raise StorageError(f"cannot make the snapshot {snapshot!r} read-only: "
                           f"{err.strerror}", **where) from None
    return True


def clone_volume(
    driver: DirDriver,
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
    where = where_of(dest_pool, dest_name)
    if strategy not in CLONE_STRATEGIES:
        raise InvalidRequest(f"the strategy is {' or '.join(CLONE_STRATEGIES)}, not "
                             f"{strategy!r}", **where)
    if strategy == "performance":
        return driver.copy_volume(pool, name, dest_pool, dest_name, fmt=fmt,
                                  progress=progress, should_cancel=should_cancel,
                                  temp_name=temp_name)
    if dest_pool.host != pool.host:
        raise InvalidRequest("a clone stays on one host", **where)
    if fmt not in (None, ImageFormat.QCOW2):
        raise InvalidRequest("a space-saving clone is a qcow2 overlay", **where,
                             hint="clone with the performance strategy for another format")
    snap = driver.probe_volume(pool, name)
    require_usable(snap, "clone")
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
    if driver.transport.probe_path(final, None)["kind"] != "missing":
        raise VolumeExists("a file with that name already exists", **where,
                           hint="choose another name; nothing was changed")
    temp = os.path.join(dest_pool.path, temp_name_for(dest_name, temp_name, where))
    check_cancel(should_cancel, where, "clone")
    return overlay(driver, snap, dest_pool, dest_name, temp, False, where, progress)
