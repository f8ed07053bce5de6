"""Host-side locks: one per volume, a file in the pool, so that a console on another
machine sharing the pool (NFS) sees it too, and the host drops it when whatever holds
it dies (a process, or an SSH connection: ``Transport.lock_file``), so no lock outlives
its job.

The lock files live in ``<pool>/.storage-console/locks/`` (a directory, so listings
never take them for volumes), named by a hash of the volume name (any name fits) and
holding who took the lock, for the message a second job gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from backends.contract import Driver, Transport, VolumeBusy
from backends.transport.local import LocalTransport

LOCK_DIR = os.path.join(".storage-console", "locks")


def lock_path(pool_path: str, volume: str) -> str:
    digest = hashlib.sha256(os.fsencode(volume)).hexdigest()[:32]
    return os.path.join(pool_path, LOCK_DIR, f"{digest}.lock")


def host_transport(driver: Driver, host: str) -> Transport:
    """The transport a driver reaches its host through; this machine for drivers that
    keep none (a libvirt pool on this host)."""
    transport = getattr(driver, "transport", None)
    return transport if isinstance(transport, Transport) else LocalTransport(host)


@contextlib.contextmanager
def volume_lock(transport: Transport, pool: str, pool_path: str, volume: str,
                holder: str) -> Iterator[None]:
    """Hold the lock of ``volume`` on the transport's host or raise ``VolumeBusy``
    naming who holds it."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(transport.lock_file(lock_path(pool_path, volume), holder))
        except VolumeBusy as err:  # the transport knows a file; the message names the volume
            raise VolumeBusy(err.what, host=transport.host, pool=pool, volume=volume,
                             hint=err.hint or "wait for that job or cancel it") from None
        yield
