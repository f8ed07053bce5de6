"""Host-side locks: one per volume, a file in the pool, so that a console on another
machine sharing the pool (NFS) sees it too, and the host drops it when whatever holds
it dies (a process, or an SSH connection: ``Transport.lock_file``), so no lock outlives
its job.

The lock files of a directory pool live in ``<pool>/.storage-console/locks/`` (a
directory, so listings never take them for volumes), named by a hash of the volume name
(any name fits) and holding who took the lock, for the message a second job gets. A
volume group has no directory of its own: its locks are in
``/run/storage-console/locks/lvm/<vg>/`` on its host. A libvirt pool is reached through
libvirt's API only, so its locks are this machine's (the state dir): they keep two jobs
of the consoles on this machine apart, not a console elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from backends.contract import Driver, Transport, VolumeBusy
from backends.model import Pool
from backends.transport.local import LocalTransport

LOCK_DIR = os.path.join(".storage-console", "locks")


HOST_LOCK_ROOT = "/run/storage-console/locks"


def lock_root(pool: Pool) -> str:
    """The directory on the pool's host (see above) that holds its volumes' locks."""
    if pool.kind == "lvm":
        return os.path.join(HOST_LOCK_ROOT, "lvm", pool.name)
    if pool.kind == "libvirt":
        from console.config import state_dir

        return str(state_dir() / "locks" / "libvirt" / _safe(pool.host) / _safe(pool.name))
    return os.path.join(pool.path, LOCK_DIR)


def _safe(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def lock_path(root: str, volume: str) -> str:
    digest = hashlib.sha256(os.fsencode(volume)).hexdigest()[:32]
    return os.path.join(root, f"{digest}.lock")


def host_transport(driver: Driver, host: str) -> Transport:
    """The transport a driver reaches its host through; this machine for drivers that
    keep none (a libvirt pool on this host)."""
    transport = getattr(driver, "transport", None)
    return transport if isinstance(transport, Transport) else LocalTransport(host)


@contextlib.contextmanager
def volume_lock(driver: Driver, pool: Pool, volume: str, holder: str) -> Iterator[None]:
    """Hold the lock of ``volume`` on the pool's host or raise ``VolumeBusy`` naming
    who holds it."""
    transport = host_transport(driver, pool.host) if pool.kind != "libvirt" \
        else LocalTransport(pool.host)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(transport.lock_file(lock_path(lock_root(pool), volume),
                                                    holder))
        except VolumeBusy as err:  # the transport knows a file; the message names the volume
            raise VolumeBusy(err.what, host=transport.host, pool=pool.name, volume=volume,
                             hint=err.hint or "wait for that job or cancel it") from None
        yield
