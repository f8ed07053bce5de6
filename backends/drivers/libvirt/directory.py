"""libvirt's directory-backed pools (types dir, fs, netfs), read-only.

The embedded default shows them beside its own pool and the directory driver lists
them; it needs no driver and no event loop, only a short read-only connection.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

DIRECTORY_POOL_TYPES = ("dir", "fs", "netfs")
SYSTEM_URI = "qemu:///system"
URI_ENV = "STORAGE_CONSOLE_LIBVIRT_URI"  # where the embedded default looks for pools


@dataclass(frozen=True)
class LibvirtPool:
    name: str
    type: str
    path: str  # the pool's target directory
    active: bool


def _ignore_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; callers report errors themselves."""


def directory_pools(uri: str | None = None) -> list[LibvirtPool]:
    """The directory-backed pools libvirt knows at ``uri``, through a read-only
    connection. An empty list when libvirt-python or libvirtd is not there."""
    try:
        import libvirt
    except ImportError:
        return []
    libvirt.registerErrorHandler(_ignore_error, None)
    try:
        conn = libvirt.openReadOnly(uri or os.environ.get(URI_ENV) or SYSTEM_URI)
    except libvirt.libvirtError:
        return []
    try:
        found = []
        for pool in conn.listAllStoragePools():
            root = ET.fromstring(pool.XMLDesc())
            kind = root.get("type", "")
            path = root.findtext("target/path")
            if kind in DIRECTORY_POOL_TYPES and path:
                found.append(LibvirtPool(pool.name(), kind, path, bool(pool.isActive())))
        return sorted(found, key=lambda p: p.name)
    except libvirt.libvirtError:
        return []
    finally:
        conn.close()
