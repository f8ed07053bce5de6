"""Deleting a volume, optionally wiping it first."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from backends.contract import (
    WIPES,
    CancelCheck,
    Cancelled,
    InvalidRequest,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeBusy,
    VolumeNotFound,
)
from backends.drivers.dir.guards import check_cancel, refuse_in_use
from backends.drivers.dir.names import validate_name, where_of
from backends.drivers.dir.progress import bytes_progress
from backends.model import Pool

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


def delete_volume(
    driver: DirDriver,
    pool: Pool,
    name: str,
    *,
    wipe: str | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> None:
    validate_name(name, pool=pool)
    where = where_of(pool, name)
    if wipe is not None and wipe not in WIPES:
        raise InvalidRequest(f"a wipe is {' or '.join(WIPES)}, not {wipe!r}", **where)
    path = os.path.join(pool.path, name)
    entry = driver.transport.probe_path(path, None)
    if entry["kind"] == "missing":
        raise VolumeNotFound("the volume is already gone", **where)
    if entry["kind"] != "file":
        raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume: not removed",
                             **where)
    refuse_in_use(driver, driver.probe_volume(pool, name), "deleted")
    if wipe is not None:
        _wipe(driver.transport, path, wipe, where, progress, should_cancel)
    try:
        driver.transport.remove_file(path)
    except OSError as err:
        raise StorageError(f"cannot remove {path}: {err.strerror}", **where) from None


def _wipe(transport: Transport, path: str, wipe: str, where: dict[str, str],
          progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
    try:
        links = transport.lstat(path).st_nlink
    except OSError as err:
        raise StorageError(f"cannot look at {path}: {err.strerror}", **where) from None
    if links > 1:
        raise VolumeBusy(f"it has {links - 1} other name(s) (hard links): wiping would "
                         "destroy their data too; nothing was changed", **where,
                         hint="remove the other names first, or delete without wiping")
    check_cancel(should_cancel, where, "wipe")
    try:
        transport.wipe_file(path, wipe, progress=bytes_progress(progress, "wipe"),
                            should_cancel=should_cancel)
    except Cancelled:
        raise Cancelled("wipe cancelled: the volume is partly overwritten and was not "
                        "deleted", **where, hint="delete it again to finish") from None
    except OSError as err:
        raise StorageError(f"cannot wipe {path}: {err.strerror}; it was not deleted",
                           **where) from None
