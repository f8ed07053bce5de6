"""``DirDriver``: the ``Driver`` contract for directory pools, over one transport.

Each method only hands its arguments to the module of its operation. Those that re-probe
volumes or call other operations (a performance clone is a copy) get the driver itself,
so they go through its public methods as they did when they were its methods; the rest
get the transport alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends import qemuimg
from backends.archive import ArchiveInfo
from backends.contract import CancelCheck, Capabilities, Driver, ProgressCallback, Transport
from backends.drivers.dir import (
    archives,
    copies,
    create,
    deletion,
    inspection,
    listing,
    resize,
    restores,
    snapshots,
    temporaries,
)
from backends.drivers.dir.copies import COPY_FORMATS
from backends.model import Capacity, ImageFormat, Pool, PoolScan, TemporaryFile, Volume, ZeroCount


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
        return listing.scan_pool(self.transport, pool, self._roots(pool))

    def probe_volume(self, pool: Pool, name: str) -> Volume:
        return listing.probe_volume(self.transport, pool, name, self._roots(pool))

    def pool_capacity(self, pool: Pool) -> Capacity:
        return listing.pool_capacity(self.transport, pool)

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
        return create.create_volume(
            self, pool, name, fmt, capacity, backing=backing, preallocation=preallocation,
            zero=zero, progress=progress, should_cancel=should_cancel, temp_name=temp_name)

    def measure_create(self, pool: Pool, fmt: ImageFormat, capacity: int, *,
                       preallocation: str | None = None) -> int:
        return create.measure_create(self, pool, fmt, capacity, preallocation=preallocation)

    def holds_data(self, volume: Volume) -> bool:
        return inspection.holds_data(self.transport, volume)

    def delete_volume(
        self,
        pool: Pool,
        name: str,
        *,
        wipe: str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        deletion.delete_volume(self, pool, name, wipe=wipe, progress=progress,
                               should_cancel=should_cancel)

    # -- the operations of jobs ------------------------------------------------------

    def measure_resize(self, pool: Pool, name: str, capacity: int) -> int:
        return resize.measure_resize(self, pool, name, capacity)

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
        return resize.resize_volume(self, pool, name, capacity, shrink=shrink,
                                    progress=progress, should_cancel=should_cancel)

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
        return copies.copy_volume(
            self, pool, name, dest_pool, dest_name, fmt=fmt, overwrite=overwrite,
            backing=backing, base_depth=base_depth, strategy=strategy, progress=progress,
            should_cancel=should_cancel, temp_name=temp_name)

    def growfs_volume(
        self,
        pool: Pool,
        name: str,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Volume:
        return resize.growfs_volume(self, pool, name, progress=progress,
                                    should_cancel=should_cancel)

    def measure_copy(self, pool: Pool, name: str, fmt: ImageFormat | None = None, *,
                     full: bool = False, base_depth: int = 0) -> int:
        return copies.measure_copy(self, pool, name, fmt, full=full, base_depth=base_depth)

    def same_content(self, a: Volume, b_path: str, b_format: ImageFormat | str, *,
                     should_cancel: CancelCheck | None = None) -> bool:
        return inspection.same_content(self.transport, a, b_path, b_format,
                                       should_cancel=should_cancel)

    def check_volume(self, pool: Pool, name: str, *, force_share: bool) -> qemuimg.CheckResult:
        return inspection.check_volume(self, pool, name, force_share=force_share)

    def temporary_files(self, pool: Pool, names: Sequence[str]) -> list[TemporaryFile]:
        return temporaries.temporary_files(self.transport, pool, names)

    def count_zeroes(self, volume: Volume, budget: int) -> ZeroCount:
        return inspection.count_zeroes(self.transport, volume, budget)

    def volume_in_use(self, volume: Volume) -> bool:
        return inspection.volume_in_use(self.transport, volume)

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
        return snapshots.snapshot_volume(self, pool, name, snapshot, progress=progress,
                                         should_cancel=should_cancel, temp_name=temp_name)

    def settle_snapshot(self, pool: Pool, name: str, snapshot: str,
                        temp_name: str | None) -> bool:
        return snapshots.settle_snapshot(self, pool, name, snapshot, temp_name)

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
        return snapshots.clone_volume(
            self, pool, name, dest_pool, dest_name, strategy=strategy, fmt=fmt,
            progress=progress, should_cancel=should_cancel, temp_name=temp_name)

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
        return archives.archive_volume(
            self, pool, name, dest, level=level, overwrite=overwrite, producer=producer,
            progress=progress, should_cancel=should_cancel, temp_name=temp_name)

    def measure_archive(self, pool: Pool, name: str) -> int:
        return archives.measure_archive(self, pool, name)

    def read_archive(self, path: str) -> ArchiveInfo:
        return archives.read_archive(self.transport, path)

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
        return restores.restore_volume(
            self, pool, archive_path, name, fmt=fmt, into_existing=into_existing,
            progress=progress, should_cancel=should_cancel, temp_name=temp_name)

    def measure_restore(self, pool: Pool, archive_path: str, name: str, *,
                        fmt: ImageFormat | None = None, into_existing: bool = False) -> int:
        return restores.measure_restore(self, pool, archive_path, name, fmt=fmt,
                                        into_existing=into_existing)
