"""Connects hosts, fans discovery out, and writes what it finds to the cache.

Plain Python, no Textual: the console calls these blocking methods from thread workers
and the command line calls them directly. Every action re-probes on disk before it
acts; the cache only tells the UI what to paint.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from backends.contract import (
    CancelCheck,
    Capabilities,
    Driver,
    InvalidRequest,
    ProgressCallback,
    ReadOnlyViolation,
    StorageError,
    VolumeBusy,
)
from backends.model import Health, Host, ImageFormat, Pool, PoolScan, Progress, Volume
from console.cache import Cache
from console.chains import based_on
from console.config import Config, HostConfig, known_hosts_path
from console.health import assess
from console.hosts import HostLink, HostState, HostStatus, UriKind

if TYPE_CHECKING:  # the audit log (and the journal it imports) is not needed by `ls`
    from console.audit import AuditLog

PoolCallback = Callable[[Pool, StorageError | None], None]
HostCallback = Callable[[str, StorageError | None], None]
MAX_SCANS_PER_HOST = 4  # a host's disks are shared; more parallel scans only thrash
MAX_HOSTS_AT_ONCE = 16  # hosts connected and scanned at once
# Pool scans in flight across all hosts. Turning a scan's answer into rows is Python
# work under the GIL: 16 threads doing it at once starve the UI's event loop (keys took
# up to 0.9 s with 20 hosts x 1,000 volumes; benchmarks/bench_hosts.py). Connects stay
# wide: a slow host waits for its TCP and SSH handshake without holding a slot.
MAX_SCANS_AT_ONCE = 6
FOUND_KINDS = ("libvirt", "lvm")  # pool kinds hosts report, beside the configured ones


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a volume takes, re-derived from disk.

    ``order`` is what gets deleted, leaves first and the volume last: with
    ``with_dependants`` every volume based on it (directly or through others, in any
    pool of the host), else the volume alone. Deleting leaves first means that a plan
    stopped half-way never leaves a volume without its backing.
    """

    volume: Volume
    holds_data: bool  # the user must type the name to confirm
    dependants: tuple[str, ...]  # paths of volumes based on it, leaves first
    with_dependants: bool = False
    order: tuple[Volume, ...] = ()
    in_use: tuple[str, ...] = ()  # paths in ``order`` a running QEMU holds

    @property
    def refused(self) -> str | None:
        if self.in_use:
            names = ", ".join(os.path.basename(p) for p in self.in_use[:5])
            more = f" and {len(self.in_use) - 5} more" if len(self.in_use) > 5 else ""
            return (f"in use by a running QEMU (its file lock): {names}{more}; stop the VM "
                    "(or qemu-nbd) first")
        if not self.dependants or self.with_dependants:
            return None
        names = ", ".join(os.path.basename(p) for p in self.dependants[:5])
        more = f" and {len(self.dependants) - 5} more" if len(self.dependants) > 5 else ""
        return (f"{len(self.dependants)} volume(s) are based on it ({names}{more}); "
                "delete or flatten those first, or delete them with it")


class Inventory:
    def __init__(self, config: Config, cache: Cache | None, *,
                 read_only: bool = False, audit: AuditLog | None = None,
                 known_hosts: str | None = None) -> None:
        """``cache`` may be None for discovery alone (the command line's ``ls``):
        then only ``scan_pool`` and ``probe_volume`` may be used.

        ``known_hosts`` is the console's own known_hosts file, checked after the
        user's (default: the one in the config dir).
        """
        self.config = config
        self._cache = cache
        self.read_only = read_only
        self.max_chain_depth = config.max_chain_depth
        self._observer = audit.record if audit is not None else None
        self._known_hosts = known_hosts or str(known_hosts_path())
        self._links = {hc.host.name: HostLink(hc, read_only=read_only,
                                              observer=self._observer,
                                              known_hosts=self._known_hosts)
                       for hc in config.hosts}
        # Pools found on hosts (libvirt pools, volume groups) beside the configured
        # ones: the cache's from the last session until the host is asked again.
        self._found: dict[str, tuple[Pool, ...]] = {}
        self._found_lock = threading.Lock()
        if cache is not None:
            self._found.update(self._cached_found(cache))

    def _cached_found(self, cache: Cache) -> dict[str, tuple[Pool, ...]]:
        found: dict[str, list[Pool]] = {}
        for row in cache.pools():
            link = self._links.get(row.host)
            if link is not None and row.kind in FOUND_KINDS \
                    and all(p.name != row.name for p in link.config.pools):
                found.setdefault(row.host, []).append(
                    Pool(row.host, row.name, row.kind, row.path))
        return {host: tuple(pools) for host, pools in found.items()}

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            raise RuntimeError("this inventory was made without a cache")
        return self._cache

    # -- what there is (no I/O) ---------------------------------------------------

    def hosts(self) -> list[Host]:
        return [hc.host for hc in self.config.hosts]

    def host_link(self, name: str) -> HostLink:
        return self._links[name]

    def host_status(self, name: str) -> HostStatus:
        return self._links[name].status

    def host_pools(self, host: str) -> list[Pool]:
        configured = list(self.config.host(host).pools)
        with self._found_lock:
            found = self._found.get(host, ())
        names = {p.name for p in configured}
        return configured + [p for p in found if p.name not in names]

    def pools(self) -> list[Pool]:
        return [p for hc in self.config.hosts for p in self.host_pools(hc.host.name)]

    def pool(self, host: str, name: str) -> Pool:
        """The pool ``host:name``; on a host that reports its pools (libvirt, LVM) one
        not seen yet is looked for on the host (a StorageError if it cannot be asked)."""
        for p in self.host_pools(host):
            if p.name == name:
                return p
        if self.config.host(host).discovers:
            self.discover_host(host)
            for p in self.host_pools(host):
                if p.name == name:
                    return p
        raise KeyError(f"{host}:{name}")

    def driver(self, pool: Pool) -> Driver:
        return self._links[pool.host].driver(pool.kind)

    def known_pool(self, host: str, name: str) -> Pool | None:
        """``pool`` without asking the host: for the UI's event loop."""
        return next((p for p in self.host_pools(host) if p.name == name), None) \
            if host in self._links else None

    def capabilities(self, pool: Pool) -> Capabilities:
        """What the pool's driver can do; nothing in read-only mode, or while its host
        has not been reached yet (asking would block the caller)."""
        if self.read_only:
            return Capabilities()
        driver = self._links[pool.host].built_driver(pool.kind)
        return driver.capabilities if driver is not None else Capabilities()

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
            link = self._links[pool.host]
            if link.mark_failed(err):  # the host went away: say so, as discovery does
                state = link.status.state.value
                self.cache.record_host(pool.host, link.uri, state, str(err))
                self.cache.record_pool_error(pool.host, pool.name, pool.kind, pool.path,
                                             f"host {state}: {err}")
            else:
                self.cache.record_pool_error(pool.host, pool.name, pool.kind, pool.path,
                                             str(err))
            raise
        self.cache.replace_pool(scan, healths)
        return scan

    def discover_host(self, host: str) -> list[Pool]:
        """Connect ``host`` and list its pools now; its state goes to the cache.

        On failure the host's cached pools stay (stale, with the error) and the error
        is raised: the caller reports it and goes on with the other hosts.
        """
        link = self._links[host]
        try:
            pools = link.discover()
        except StorageError as err:
            if self._cache is not None:
                self.cache.record_host(host, link.uri, link.status.state.value, str(err))
                for p in self.host_pools(host):
                    self.cache.record_pool_error(p.host, p.name, p.kind, p.path,
                                                 f"host {link.status.state.value}: {err}")
            raise
        configured = {p.name for p in self.config.host(host).pools}
        with self._found_lock:
            self._found[host] = tuple(p for p in pools if p.name not in configured)
        if self._cache is not None:
            self.cache.record_host(host, link.uri, HostState.ONLINE.value, None, time.time())
        return pools

    def refresh(self, on_pool: PoolCallback | None = None,
                on_host: HostCallback | None = None, *,
                hosts: list[str] | None = None) -> None:
        """Refresh every host (or ``hosts``): connected in parallel, a bounded few pools
        per host and ``MAX_SCANS_AT_ONCE`` in all scanned at once. A host that fails or
        goes away keeps its cached rows (stale, with the error), is reported through
        ``on_host`` and never holds up the others; so is a pool that fails, through
        ``on_pool``.
        """
        from concurrent.futures import ThreadPoolExecutor  # not needed by `ls`

        scans_in_flight = threading.BoundedSemaphore(MAX_SCANS_AT_ONCE)

        def one_pool(pool: Pool) -> None:
            error: StorageError | None = None
            try:
                with scans_in_flight:
                    scan_one(pool)
            except StorageError as err:
                error = err
            if on_pool is not None:
                on_pool(pool, error)

        def scan_one(pool: Pool) -> None:
            if pool.kind == "libvirt" and pool.active:
                # libvirt re-reads the disk only when asked (files added behind
                # its back); its refresh event is not answered by another refresh.
                reread = getattr(self.driver(pool), "refresh_pool", None)
                if reread is not None:
                    reread(pool.name)
            self.refresh_pool(pool)

        def one_host(host: str) -> None:
            link = self._links[host]
            if self._cache is not None:
                self.cache.record_host(host, link.uri, HostState.CONNECTING.value)
            if on_host is not None:
                on_host(host, None)
            try:
                pools = self.discover_host(host)
            except StorageError as err:
                if on_host is not None:
                    on_host(host, err)
                return
            if on_host is not None:
                on_host(host, None)
            workers = max(1, min(len(pools), MAX_SCANS_PER_HOST))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"scan-{host}") as scans:
                for future in [scans.submit(one_pool, p) for p in pools]:
                    future.result()

        if hosts is None:
            hosts = [h.name for h in self.hosts()]
        with ThreadPoolExecutor(max(1, min(len(hosts), MAX_HOSTS_AT_ONCE)),
                                thread_name_prefix="host") as connects:
            for future in [connects.submit(one_host, h) for h in hosts]:
                future.result()

    def watch_pools(self, host: str, callback: Callable[[str, str, str], None]) -> bool:
        """Have ``callback(host, pool, kind)`` called on the host's pool events (libvirt
        hosts: lifecycle and refresh), from another thread; False when it has none."""
        link = self._links[host]
        if link.kind != UriKind.LIBVIRT:
            return False
        watch = getattr(link.driver("libvirt"), "watch_pools", None)
        if watch is None:
            return False
        watch(callback)
        return True

    def add_host(self, hc: HostConfig) -> None:
        """A host added in the console (already written to the config file)."""
        self.config = replace(self.config, hosts=(*self.config.hosts, hc))
        self._links[hc.host.name] = HostLink(
            hc, read_only=self.read_only, observer=self._observer,
            known_hosts=self._known_hosts)

    def remove_host(self, name: str) -> None:
        """A host removed in the console: its connection closed, its rows forgotten."""
        self.config = replace(self.config, hosts=tuple(
            hc for hc in self.config.hosts if hc.host.name != name))
        link = self._links.pop(name, None)
        with self._found_lock:
            self._found.pop(name, None)
        if link is not None:
            link.close()
        if self._cache is not None:
            self.cache.forget_host(name)  # every pool's rows and usage with it

    def close(self) -> None:
        for link in self._links.values():
            link.close()

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
        preallocation: str | None = None,
        zero: bool = False,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        temp_name: str | None = None,
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
        volume = self.driver(p).create_volume(
            p, name, fmt, capacity, backing=base, preallocation=preallocation, zero=zero,
            progress=progress, should_cancel=should_cancel, temp_name=temp_name)
        self.refresh_quietly(p)
        return volume

    def dependants(self, host: str, path: str) -> list[tuple[int, Volume]]:
        """Every volume of the host based on the volume at ``path``, directly (1) or
        through others (2, 3, ...), with that distance; found on disk in every pool."""
        found: list[tuple[int, Volume]] = []
        for other in self.host_pools(host):
            try:
                scan = self.driver(other).scan_pool(other)
            except StorageError:
                continue
            found += based_on(path, scan.volumes)
        return found

    def plan_delete(self, host: str, pool: str, name: str, *,
                    with_dependants: bool = False) -> DeletePlan:
        p = self.pool(host, pool)
        self._refuse_read_only("delete a volume", p, name)
        volume = self.driver(p).probe_volume(p, name)
        # Dependants can live in any pool of the host: look on disk, not in the cache.
        based = sorted(self.dependants(host, volume.path),
                       key=lambda found: (-found[0], found[1].path))
        dependants = tuple(v.path for _, v in based)
        order = (*(v for _, v in based), volume) if with_dependants else (volume,)
        in_use = tuple(v.path for v in order if self.in_use(v))
        if dependants and not with_dependants:
            holds = False  # refused anyway
        else:
            holds = any(self.driver(self.pool(host, v.pool)).holds_data(v) for v in order)
        return DeletePlan(volume, holds, dependants, with_dependants, order, in_use)

    def in_use(self, volume: Volume) -> bool:
        try:
            return self.driver(self.pool(volume.host, volume.pool)).volume_in_use(volume)
        except StorageError:
            return False  # cannot tell here: the driver asks again before deleting

    def check_delete(self, plan: DeletePlan, typed_name: str | None) -> None:
        """Raise what refuses ``plan``: volumes in use or based on it, or data not
        confirmed by typing the volume's name."""
        volume = plan.volume
        where = {"host": volume.host, "pool": volume.pool, "volume": volume.name}
        if plan.refused:
            raise VolumeBusy(f"not deleted: {plan.refused}", **where)
        if plan.holds_data and typed_name != volume.name:
            what = "the volume holds data" if len(plan.order) == 1 else (
                f"the {len(plan.order)} volumes to delete hold data")
            raise InvalidRequest(f"not deleted: {what}", **where,
                                 hint="type its exact name to confirm")

    def carry_out_delete(self, plan: DeletePlan, *, wipe: str | None = None,
                         progress: ProgressCallback | None = None,
                         should_cancel: CancelCheck | None = None) -> None:
        """Delete what ``plan`` says, leaves first (checked with ``check_delete``)."""
        touched: dict[str, Pool] = {}
        total = sum(v.allocation for v in plan.order)
        before = 0
        for volume in plan.order:
            p = self.pool(volume.host, volume.pool)
            touched[p.name] = p
            self._refuse_read_only("delete a volume", p, volume.name)

            def report(step: Progress, before: int = before) -> None:
                if progress is not None:
                    progress(Progress(step.stage, step.stages, before + step.done,
                                      max(total, before + step.total), step.label))

            self.driver(p).delete_volume(p, volume.name, wipe=wipe, progress=report,
                                         should_cancel=should_cancel)
            before += volume.allocation
        for p in touched.values():
            self.refresh_quietly(p)

    def delete_volume(self, host: str, pool: str, name: str, *,
                      typed_name: str | None = None, wipe: str | None = None,
                      with_dependants: bool = False,
                      progress: ProgressCallback | None = None,
                      should_cancel: CancelCheck | None = None) -> None:
        plan = self.plan_delete(host, pool, name, with_dependants=with_dependants)
        self.check_delete(plan, typed_name)
        self.carry_out_delete(plan, wipe=wipe, progress=progress, should_cancel=should_cancel)

    def refresh_quietly(self, pool: Pool) -> None:
        """Refresh ``pool`` in the cache after an action; nothing without a cache (the
        command line), and a failure only leaves the cache stale."""
        if self._cache is None:
            return
        with contextlib.suppress(StorageError):
            self.refresh_pool(pool)

