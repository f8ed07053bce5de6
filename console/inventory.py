"""Connects hosts, fans discovery out, and writes what it finds to the cache.

Plain Python, no Textual: the console calls these blocking methods from thread workers
and the command line calls them directly. Every action re-probes on disk before it
acts; the cache only tells the UI what to paint.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from backends.contract import (
    Capabilities,
    Driver,
    InvalidRequest,
    ProgressCallback,
    ReadOnlyViolation,
    StorageError,
    VolumeBusy,
)
from backends.drivers.dir import DirDriver
from backends.model import Health, Host, ImageFormat, Pool, PoolScan, Volume
from backends.transport.local import LocalTransport
from console.audit import AuditLog
from console.cache import Cache
from console.config import Config
from console.health import assess

PoolCallback = Callable[[Pool, StorageError | None], None]
MAX_SCANS_PER_HOST = 4  # a host's disks are shared; more parallel scans only thrash


@dataclass(frozen=True)
class DeletePlan:
    volume: Volume
    holds_data: bool  # the user must type the name to confirm
    dependants: tuple[str, ...]  # paths of volumes based on it: deleting is refused

    @property
    def refused(self) -> str | None:
        if not self.dependants:
            return None
        names = ", ".join(os.path.basename(p) for p in self.dependants[:5])
        more = f" and {len(self.dependants) - 5} more" if len(self.dependants) > 5 else ""
        return (f"{len(self.dependants)} volume(s) are based on it ({names}{more}); "
                "delete or flatten those first")


class Inventory:
    def __init__(self, config: Config, cache: Cache | None, *,
                 read_only: bool = False, audit: AuditLog | None = None) -> None:
        """``cache`` may be None for discovery alone (the command line's ``ls``):
        then only ``scan_pool`` and ``probe_volume`` may be used."""
        self.config = config
        self._cache = cache
        self.read_only = read_only
        self.max_chain_depth = config.max_chain_depth
        self._drivers: dict[str, DirDriver] = {}
        for hc in config.hosts:
            transport = LocalTransport(hc.host.name, read_only=read_only)
            if audit is not None:
                transport.observer = audit.record
            self._drivers[hc.host.name] = DirDriver(transport, hc.allowed_roots)

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            raise RuntimeError("this inventory was made without a cache")
        return self._cache

    # -- what there is (no I/O) ---------------------------------------------------

    def hosts(self) -> list[Host]:
        return [hc.host for hc in self.config.hosts]

    def pools(self) -> list[Pool]:
        return [p for hc in self.config.hosts for p in hc.pools]

    def pool(self, host: str, name: str) -> Pool:
        for p in self.config.host(host).pools:
            if p.name == name:
                return p
        raise KeyError(f"{host}:{name}")

    def driver(self, pool: Pool) -> Driver:
        return self._drivers[pool.host]

    def capabilities(self, pool: Pool) -> Capabilities:
        if self.read_only:
            return Capabilities()
        return self.driver(pool).capabilities

    # -- discovery ----------------------------------------------------------------

    def scan_pool(self, pool: Pool) -> tuple[PoolScan, list[Health]]:
        """Scan ``pool`` on disk and assess each volume, without touching the cache."""
        scan = self.driver(pool).scan_pool(pool)
        return scan, [assess(v, self.max_chain_depth) for v in scan.volumes]

    def refresh_pool(self, pool: Pool) -> PoolScan:
        """Re-derive ``pool`` from disk and replace its cached rows in one transaction."""
        try:
            scan, healths = self.scan_pool(pool)
        except StorageError as err:
            self.cache.record_pool_error(pool.host, pool.name, pool.kind, pool.path, str(err))
            raise
        self.cache.replace_pool(scan, healths)
        return scan

    def refresh(self, on_pool: PoolCallback | None = None) -> None:
        """Refresh every pool; hosts in parallel, a bounded few pools per host at once.

        A pool that fails is recorded (its cached rows stay, marked with the error) and
        reported through ``on_pool``; it never stops the others.
        """
        now = time.time()
        for host in self.hosts():
            self.cache.record_host(host.name, host.uri, "online", None, now)

        def one(pool: Pool) -> None:
            error: StorageError | None = None
            try:
                self.refresh_pool(pool)
            except StorageError as err:
                error = err
            if on_pool is not None:
                on_pool(pool, error)

        from concurrent.futures import ThreadPoolExecutor  # not needed by `ls`

        pools = self.pools()
        workers = max(1, min(len(pools), MAX_SCANS_PER_HOST * len(self.hosts())))
        with ThreadPoolExecutor(workers, thread_name_prefix="scan") as pool_exec:
            for future in [pool_exec.submit(one, p) for p in pools]:
                future.result()

    # -- actions: each re-probes on disk first ------------------------------------

    def _refuse_read_only(self, what: str, pool: Pool, name: str) -> None:
        if self.read_only:
            raise ReadOnlyViolation(f"refused to {what}: the console is read-only",
                                    host=pool.host, pool=pool.name, volume=name)

    def probe_volume(self, host: str, pool: str, name: str) -> Volume:
        p = self.pool(host, pool)
        return self.driver(p).probe_volume(p, name)

    def create_volume(
        self,
        host: str,
        pool: str,
        name: str,
        fmt: ImageFormat,
        capacity: int,
        *,
        backing: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Volume:
        p = self.pool(host, pool)
        self._refuse_read_only("create a volume", p, name)
        base = None
        if backing is not None:
            base = self.driver(p).probe_volume(p, backing)  # re-probed, never from cache
            if capacity and capacity < base.capacity:
                raise InvalidRequest(
                    f"size is smaller than the backing volume {backing!r} "
                    f"({base.capacity} bytes)", host=host, pool=pool, volume=name,
                    hint="leave the size empty to use the backing's size")
        volume = self.driver(p).create_volume(p, name, fmt, capacity, backing=base,
                                              progress=progress)
        self.refresh_quietly(p)
        return volume

    def plan_delete(self, host: str, pool: str, name: str) -> DeletePlan:
        p = self.pool(host, pool)
        self._refuse_read_only("delete a volume", p, name)
        volume = self.driver(p).probe_volume(p, name)
        # Dependants can live in any pool of the host: look on disk, not in the cache.
        dependants: list[str] = []
        target = os.path.realpath(volume.path)
        for other in self.config.host(host).pools:
            try:
                scan = self.driver(other).scan_pool(other)
            except StorageError:
                continue
            dependants += [v.path for v in scan.volumes
                           if v.backing and os.path.realpath(v.backing) == target]
        holds = not dependants and self.driver(p).holds_data(volume)
        return DeletePlan(volume, holds, tuple(dependants))

    def delete_volume(self, host: str, pool: str, name: str, *,
                      typed_name: str | None = None) -> None:
        plan = self.plan_delete(host, pool, name)
        where = {"host": host, "pool": pool, "volume": name}
        if plan.refused:
            raise VolumeBusy(f"not deleted: {plan.refused}", **where)
        if plan.holds_data and typed_name != name:
            raise InvalidRequest("not deleted: the volume holds data", **where,
                                 hint="type its exact name to confirm")
        p = self.pool(host, pool)
        self.driver(p).delete_volume(p, name)
        self.refresh_quietly(p)

    def refresh_quietly(self, pool: Pool) -> None:
        # The action succeeded; a failing refresh only leaves the cache stale.
        with contextlib.suppress(StorageError):
            self.refresh_pool(pool)

