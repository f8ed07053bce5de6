"""Host-side locks: one per volume, a file in the pool, so that a console on another
machine sharing the pool (NFS) sees it too, and the kernel drops it when the process
holding it dies (flock), so no lock outlives its job.

The lock files live in ``<pool>/.storage-console/locks/`` (a directory, so listings
never take them for volumes), named by a hash of the volume name (any name fits) and
holding who took the lock, for the message a second job gets.

Local pools only for now; remote hosts (the hosts issue) take them through their
transport.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator

from backends.contract import VolumeBusy

LOCK_DIR = os.path.join(".storage-console", "locks")


def lock_path(pool_path: str, volume: str) -> str:
    digest = hashlib.sha256(os.fsencode(volume)).hexdigest()[:32]
    return os.path.join(pool_path, LOCK_DIR, f"{digest}.lock")


@contextlib.contextmanager
def volume_lock(host: str, pool: str, pool_path: str, volume: str,
                holder: str) -> Iterator[None]:
    """Hold the lock of ``volume`` or raise ``VolumeBusy`` naming who holds it."""
    path = lock_path(pool_path, volume)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another job"
            raise VolumeBusy(f"locked by {other}", host=host, pool=pool, volume=volume,
                             hint="wait for that job or cancel it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing drops the flock
