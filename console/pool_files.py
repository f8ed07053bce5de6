"""Pool files: the image files checks and fixes work on, whatever kind the pool is.

Checks (``qemu-img check``, zero counts, temporaries) and fixes (repairs, commits,
converts) read and write image files through a host's transport, as the directory
driver does. A directory pool is that already, on this machine or over SSH. A libvirt
pool of type ``dir`` or ``fs`` on this machine keeps its volumes as files in one
directory: it is worked on through that directory (libvirt's API has no check or repair)
and libvirt is told to refresh afterwards, so its own view of sizes and backings follows.
Everything else is refused with the reason: an LVM volume group or a libvirt pool of
block devices holds no image files to repair in place, and a libvirt pool on another
machine has no transport here to reach its files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from backends.contract import Driver, NotSupported, StorageError
from backends.drivers.dir.driver import DirDriver
from backends.model import Pool
from backends.transport.local import LocalTransport

if TYPE_CHECKING:
    from console.inventory import Inventory

FILE_POOL_TYPES = ("dir", "fs")  # libvirt pool types whose volumes are files in one directory


@dataclass(frozen=True)
class PoolFiles:
    """``pool`` as a directory pool (same host and name) and the driver of its files;
    ``libvirt`` names the libvirt pool to refresh after a change (None: a dir pool)."""

    pool: Pool
    driver: Driver
    libvirt: Pool | None = None


def pool_files(inventory: Inventory, pool: Pool) -> PoolFiles:
    """The files of ``pool`` for checks and fixes, or ``NotSupported`` saying why not."""
    if pool.kind == "dir":
        return PoolFiles(pool, inventory.driver(pool))
    where = {"host": pool.host, "pool": pool.name}
    if pool.kind == "lvm":
        raise NotSupported("an LVM volume group holds logical volumes, not image files: "
                           "qemu-img has no metadata of its to check or repair in place",
                           **where, hint="copy the volume into a directory pool to "
                                         "check or fix it there")
    if pool.kind != "libvirt":
        raise NotSupported(f"{pool.kind} pools are not checked or fixed", **where)
    uri = inventory.config.host(pool.host).host.uri
    if not _on_this_machine(uri):
        raise NotSupported(f"the pool's files are on the machine behind {uri}, which libvirt "
                           "reaches but this console has no transport to", **where,
                           hint="add that machine as an ssh:// host with a dir pool on "
                                f"{pool.path or 'the pool directory'}")
    driver = inventory.driver(pool)
    info = getattr(driver, "pool_info", None)
    live = info(pool.name).pool if info is not None else pool  # libvirt's word, not the cache's
    if live.pool_type not in FILE_POOL_TYPES:
        raise NotSupported(f"a libvirt {live.pool_type or 'unknown'} pool keeps its volumes "
                           "on block devices or behind libvirt's API: no image files to "
                           "check or repair in place", **where,
                           hint="copy the volume into a dir pool to fix it there")
    if not live.active or not os.path.isdir(live.path):
        raise NotSupported(f"its directory {live.path} is not there (is the pool started?)",
                           **where, hint="start the pool first")
    roots = tuple(p.path for p in inventory.host_pools(pool.host)
                  if p.kind == "libvirt" and p.path.startswith("/"))
    transport = LocalTransport(pool.host, read_only=inventory.read_only)
    transport.observer = inventory.host_link(pool.host).observer  # audited as the host
    view = Pool(pool.host, pool.name, "dir", live.path, live.capacity)
    return PoolFiles(view, DirDriver(transport, roots or (live.path,)), pool)


def refresh_libvirt(inventory: Inventory, files: PoolFiles) -> None:
    """Tell libvirt to read a pool whose files were changed behind its back; a failure
    only leaves libvirt's sizes stale until its next refresh."""
    if files.libvirt is None:
        return
    refresh = getattr(inventory.driver(files.libvirt), "refresh_pool", None)
    if refresh is not None:
        with contextlib.suppress(StorageError):
            refresh(files.libvirt.name)


def _on_this_machine(uri: str) -> bool:
    """A libvirt URI with no other machine in it (``qemu:///system``,
    ``qemu+unix:///system?socket=...``, ``qemu://localhost/system``)."""
    return urlsplit(uri).hostname in (None, "", "localhost", "127.0.0.1", "::1")
