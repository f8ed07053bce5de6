"""Copying a volume within one host: a full copy by ``qemu-img convert``, an incremental
copy (an overlay on a copy of a base of the source), or, for the least space, a qcow2
overlay on an immutable snapshot; and what a copy needs in its pool."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from backends import qemuimg
from backends.contract import (
    CLONE_STRATEGIES,
    CancelCheck,
    Cancelled,
    CommandResult,
    InvalidRequest,
    ProgressCallback,
    Transport,
    VolumeBusy,
    VolumeExists,
)
from backends.drivers.dir.commands import failure, measure, run
from backends.drivers.dir.guards import check_cancel, refuse_in_use, require_usable
from backends.drivers.dir.inspection import chain_data
from backends.drivers.dir.names import backing_reference, size_text, validate_name, where_of
from backends.drivers.dir.progress import CopyProgress
from backends.drivers.dir.temporaries import (
    clear_leftover,
    discard_quietly,
    publish_copy,
    temp_name_for,
)
from backends.model import ImageFormat, Pool, Progress, Volume

if TYPE_CHECKING:
    from backends.drivers.dir.driver import DirDriver


# Formats qemu-img writes without a secret or an extent list to trust.
COPY_FORMATS = (ImageFormat.RAW, ImageFormat.QCOW2, ImageFormat.VMDK, ImageFormat.VDI,
                ImageFormat.VPC, ImageFormat.VHDX)
COPY_STRATEGIES = CLONE_STRATEGIES  # space: the least space; performance: preallocated
PREALLOCATED_FORMATS = (ImageFormat.RAW, ImageFormat.QCOW2)  # falloc works for both


def copy_overlays(source: Volume, pool: Pool, dest_pool: Pool, *, strategy: str | None,
                  fmt: ImageFormat | None, incremental: bool) -> bool:
    """Whether a copy is made as a qcow2 overlay on its source: asked for the least
    space, of an immutable snapshot (an overlay on a writable disk would change under
    it) in the same pool (pools stay independent), as qcow2, not incremental."""
    return (strategy == "space" and not incremental and source.readonly
            and source.format != ImageFormat.ISO and source.capacity % 512 == 0
            and (pool.host, pool.name) == (dest_pool.host, dest_pool.name)
            and fmt in (None, ImageFormat.QCOW2))


def copy_volume(
    driver: DirDriver,
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
    where = where_of(dest_pool, dest_name)
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
    temp = os.path.join(dest_pool.path, temp_name_for(dest_name, temp_name, where))
    final = os.path.join(dest_pool.path, dest_name)
    source = driver.probe_volume(pool, name)
    require_usable(source, "copy")
    out_fmt = fmt or (ImageFormat.QCOW2 if backing is not None else source.format)
    if out_fmt not in COPY_FORMATS and not (
            out_fmt == ImageFormat.ISO == source.format):
        raise InvalidRequest(f"cannot write {out_fmt} volumes", **where,
                             hint="copy as raw or qcow2")
    if os.path.normpath(final) == os.path.normpath(source.path):
        raise InvalidRequest("a volume cannot be copied onto itself", **where)
    back_name = None
    if backing is not None:
        back_name = _incremental_base(source, backing, base_depth, out_fmt,
                                      dest_pool, where)
    if strategy == "performance" and out_fmt not in PREALLOCATED_FORMATS:
        raise InvalidRequest(f"a performance copy is preallocated, which {out_fmt} "
                             "cannot be here", **where, hint="copy as raw or qcow2")
    _check_target(driver, source, backing, final, overwrite, dest_pool, dest_name)
    if copy_overlays(source, pool, dest_pool, strategy=strategy, fmt=fmt,
                     incremental=backing is not None):
        check_cancel(should_cancel, where, "copy")
        return overlay(driver, source, dest_pool, dest_name, temp, overwrite, where,
                       progress)
    refuse_in_use(driver, source, "copied (the copy would be torn)")
    check_cancel(should_cancel, where, "copy")
    clear_leftover(driver.transport, temp, where)
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
            result = run(driver.transport, argv, where, reporter.feed, should_cancel)
        else:
            assert back_name is not None
            result = _rebase_copy(driver.transport, source, temp, back_name,
                                  backing.format, where, reporter, should_cancel)
        if result.returncode != 0:
            raise failure(result, f"qemu-img {result.argv[1]}", where,
                          hint="the partial copy was removed; nothing was published")
        publish_copy(driver.transport, temp, final, overwrite, where)
    except Cancelled:
        discard_quietly(driver.transport, temp)
        raise Cancelled("copy cancelled: the partial copy was removed, nothing was "
                        "published", **where) from None
    except BaseException:
        discard_quietly(driver.transport, temp)
        raise
    reporter.finish()
    return driver.probe_volume(dest_pool, dest_name)


def overlay(driver: DirDriver, snap: Volume, dest_pool: Pool, dest_name: str, temp: str,
            overwrite: bool, where: dict[str, str],
            progress: ProgressCallback | None) -> Volume:
    """A qcow2 overlay on the read-only ``snap``, made as ``temp`` and published as
    ``dest_name`` (replacing it only with ``overwrite``)."""
    final = os.path.join(dest_pool.path, dest_name)
    argv = qemuimg.overlay(temp, snap.capacity, backing_reference(snap, dest_pool.path),
                           snap.format)
    clear_leftover(driver.transport, temp, where)
    if progress:
        progress(Progress(1, 1, 0, 1, "overlay"))
    try:
        result = run(driver.transport, argv, where)
        if result.returncode != 0:
            raise failure(result, "qemu-img create (the overlay)", where,
                          hint="nothing was published")
        publish_copy(driver.transport, temp, final, overwrite, where)
    except BaseException:
        discard_quietly(driver.transport, temp)
        raise
    if progress:
        progress(Progress(1, 1, 1, 1, "overlay"))
    return driver.probe_volume(dest_pool, dest_name)


def measure_copy(driver: DirDriver, pool: Pool, name: str, fmt: ImageFormat | None = None, *,
                 full: bool = False, base_depth: int = 0) -> int:
    validate_name(name, pool=pool)
    where = where_of(pool, name)
    volume = driver.probe_volume(pool, name)
    require_usable(volume, "measure a copy of")
    if base_depth > 0:
        return _measure_above(driver.transport, volume, base_depth)
    out_fmt = fmt or volume.format
    if full and qemuimg.qemu_format(out_fmt) == "raw":
        return volume.capacity
    if (not full and qemuimg.qemu_format(volume.format) == "raw"
            and qemuimg.qemu_format(out_fmt) == "raw"):
        # A sparse copy writes what the source has allocated, no more; qemu-img
        # measure would say the whole virtual size.
        return volume.allocation
    measured = measure(driver.transport,
                       qemuimg.measure(volume.path, volume.format, out_fmt), where)
    return measured.fully_allocated if full else measured.required


def _measure_above(transport: Transport, volume: Volume, base_depth: int) -> int:
    """An incremental copy writes only clusters the images above its base hold (a
    convert -B copies the top image's; a safe rebase, those that differ from the
    base, which are some of theirs): their allocation, with room for the qcow2
    overlay's tables (at most 8 bytes of L2 per 64 KiB cluster of the disk, 2 of
    refcount per cluster written, a header)."""
    data = chain_data(transport, volume, base_depth)
    return data + volume.capacity // 8192 + data // 32768 + (1 << 20)


def _incremental_base(source: Volume, backing: Volume, depth: int,
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
    require_usable(backing, "base a copy on")
    link = source.chain.links[depth]
    if backing.capacity != link.capacity:
        raise InvalidRequest(
            f"{backing.name!r} ({size_text(backing.capacity)}) cannot be a copy of "
            f"{link.path} ({size_text(link.capacity)})", **where,
            hint="choose a base identical to one of the source's")
    return backing_reference(backing, dest_pool.path)


def _check_target(driver: DirDriver, source: Volume, backing: Volume | None, final: str,
                  overwrite: bool, dest_pool: Pool, dest_name: str) -> None:
    """Refuse a taken target unless it may be overwritten; never one that the copy
    reads from or a running QEMU has open."""
    where = where_of(dest_pool, dest_name)
    kind = driver.transport.probe_path(final, None)["kind"]
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
    refuse_in_use(driver, driver.probe_volume(dest_pool, dest_name), "replaced")


def _rebase_copy(transport: Transport, source: Volume, temp: str, back_name: str,
                 back_fmt: ImageFormat, where: dict[str, str], reporter: CopyProgress,
                 should_cancel: CancelCheck | None) -> CommandResult:
    """An incremental copy onto a copy of a base deeper than the source's backing:
    qemu-img convert -B would miss the images in between (it copies the source's top
    image only), so the new volume starts as an empty overlay on the source and a
    safe rebase onto the base writes every cluster where the two differ."""
    argv = qemuimg.create(temp, ImageFormat.QCOW2, source.capacity, backing=source.path,
                          backing_format=qemuimg.qemu_format(source.format))
    result = run(transport, argv, where, should_cancel=should_cancel)
    if result.returncode != 0:
        return result
    argv = qemuimg.rebase(temp, ImageFormat.QCOW2, back_name, back_fmt, unsafe=False,
                          progress=True)
    return run(transport, argv, where, reporter.feed, should_cancel)
