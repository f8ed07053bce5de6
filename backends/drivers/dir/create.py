"""Creating a volume: built under a temporary name, published whole."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from backends import qemuimg
from backends.contract import (
    PREALLOCATIONS,
    CancelCheck,
    Cancelled,
    InvalidRequest,
    ProgressCallback,
    VolumeExists,
)
from backends.drivers.dir.commands import failure, measure, run
from backends.drivers.dir.guards import check_cancel
from backends.drivers.dir.names import backing_reference, validate_name, where_of
from backends.drivers.dir.temporaries import clear_leftover, discard_quietly, publish, temp_name_for
from backends.model import ImageFormat, Pool, Progress, Volume

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


def create_volume(
    driver: DirDriver,
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
    where = where_of(pool, name)
    if fmt not in driver.capabilities.create_formats:
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
    if driver.transport.probe_path(final, None)["kind"] != "missing":
        raise VolumeExists("a file with that name already exists", **where,
                           hint="choose another name; nothing was changed")
    # Built under a temporary name and published by link(), which refuses to
    # replace anything, so a half-built image never carries the final name.
    temp = os.path.join(pool.path, temp_name_for(name, temp_name, where))
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
    check_cancel(should_cancel, where, "create")
    clear_leftover(driver.transport, temp, where)
    if progress:
        progress(Progress(1, 2, 0, capacity, "create"))
    try:
        result = run(driver.transport, argv, where, should_cancel=should_cancel)
        if result.returncode != 0:
            raise failure(result, "qemu-img create", where,
                          hint="nothing was left behind")
        if progress:
            progress(Progress(2, 2, 0, capacity, "publish"))
        publish(driver.transport, temp, final, pool, name)
    except Cancelled:
        discard_quietly(driver.transport, temp)
        raise Cancelled("create cancelled: the partial volume was removed", **where) \
            from None
    except BaseException:
        discard_quietly(driver.transport, temp)
        raise
    if progress:
        progress(Progress(2, 2, capacity, capacity, "done"))
    return driver.probe_volume(pool, name)


def measure_create(driver: DirDriver, pool: Pool, fmt: ImageFormat, capacity: int, *,
                   preallocation: str | None = None) -> int:
    if qemuimg.qemu_format(fmt) == "raw":
        return capacity if preallocation else 4096  # qemu-img writes the first block
    where = {"host": pool.host, "pool": pool.name}
    measured = measure(driver.transport, qemuimg.measure(None, None, fmt, size=capacity),
                       where)
    return measured.fully_allocated if preallocation else measured.required
