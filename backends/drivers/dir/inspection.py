"""Questions asked of a volume without changing it: does it hold data, is its content
another image's, what does ``qemu-img check`` say, how many zero blocks does it hold,
does a running QEMU hold it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from backends import qemuimg
from backends.contract import CancelCheck, NotSupported, StorageError, Transport
from backends.drivers.dir.commands import failure, run
from backends.drivers.dir.guards import require_usable
from backends.drivers.dir.names import where_of
from backends.model import Chain, ImageFormat, Pool, Volume, ZeroCount

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


def holds_data(transport: Transport, volume: Volume) -> bool:
    """Whether the volume's own clusters hold any data (re-read from disk)."""
    if volume.format == ImageFormat.QCOW2:
        result = transport.run(qemuimg.allocation_map(volume.path, "qcow2"))
        if result.returncode != 0:
            return True  # unknown: treat as precious
        extents = json.loads(result.stdout or b"[]")
        return any(e.get("data") and e.get("depth", 0) == 0 for e in extents)
    if volume.format in (ImageFormat.RAW, ImageFormat.ISO):
        try:
            return volume.allocation > 0 and transport.has_data(volume.path)
        except OSError:
            return True  # unknown: treat as precious
    return volume.allocation > 0


def chain_data(transport: Transport, volume: Volume, depth: int | None = None) -> int:
    """Bytes the top ``depth`` images of the volume's chain (all: None) hold on disk, at
    most its size; an image that cannot be read counts as full."""
    data = 0
    for link in volume.chain.links[:depth]:
        try:
            data += transport.lstat(link.path).st_blocks * 512
        except OSError:
            data += link.capacity  # unknown: as much as it can hold
    return min(data, volume.capacity)


def same_content(transport: Transport, a: Volume, b_path: str,
                 b_format: ImageFormat | str, *, should_cancel: CancelCheck | None = None) -> bool:
    where = {"host": a.host, "pool": a.pool, "volume": a.name}
    result = run(transport, qemuimg.compare(a.path, a.format, b_path, b_format), where,
                 should_cancel=should_cancel)
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise failure(result, "qemu-img compare", where)


def check_volume(driver: DirDriver, pool: Pool, name: str, *,
                 force_share: bool) -> qemuimg.CheckResult:
    volume = driver.probe_volume(pool, name)
    where = where_of(pool, name)
    if qemuimg.qemu_format(volume.format) == "raw":
        raise NotSupported(f"{volume.format} images have no metadata to check", **where)
    if volume.chain.problem is None:
        require_usable(volume, "check")
    else:  # the check cuts the chain off: a broken one does not stop it
        require_usable(replace(volume, chain=Chain(volume.chain.links)), "check")
    result = run(driver.transport, qemuimg.check(volume.path, volume.format,
                                                 force_share=force_share), where)
    checked = qemuimg.parse_check(result.returncode, result.stdout, result.stderr)
    if checked.status == "unsupported":
        raise NotSupported(f"qemu-img cannot check {volume.format} images", **where)
    return checked


def count_zeroes(transport: Transport, volume: Volume, budget: int) -> ZeroCount:
    where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
    try:
        allocated, read, zero = transport.zero_blocks(volume.path, budget)
    except OSError as err:
        raise StorageError(f"cannot read its extents: {err.strerror}", **where) from None
    return ZeroCount(allocated, read, zero)


def volume_in_use(transport: Transport, volume: Volume) -> bool:
    """QEMU (and qemu-nbd, qemu-storage-daemon) lock byte 101 of an image file they
    hold for writing, whatever its format: one F_GETLK asks, taking nothing."""
    where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
    try:
        return transport.qemu_write_locked(volume.path)
    except OSError as err:
        raise StorageError(f"cannot tell whether it is in use: {err.strerror}",
                           **where) from None
