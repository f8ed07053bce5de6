"""libvirt's storage: every pool type libvirt knows, through libvirt-python.

``directory`` finds libvirt's directory-backed pools for the embedded default (read-only,
no driver needed); ``driver.LibvirtDriver`` is the full driver for one connection:
pools of any type, their lifecycle, volumes through libvirt's API, and events.
"""

from __future__ import annotations

from backends.drivers.libvirt.directory import (
    DIRECTORY_POOL_TYPES,
    SYSTEM_URI,
    URI_ENV,
    LibvirtPool,
    directory_pools,
)

__all__ = ["DIRECTORY_POOL_TYPES", "SYSTEM_URI", "URI_ENV", "LibvirtPool", "directory_pools"]
