"""libvirt's errors as ``StorageError``s that name the host, pool and volume."""

from __future__ import annotations

from typing import Any

from backends.contract import (
    CommandFailed,
    HostUnreachable,
    InvalidRequest,
    NoSpace,
    NotSupported,
    PoolUnavailable,
    ReadOnlyViolation,
    StorageError,
    VolumeExists,
    VolumeNotFound,
)


def _codes(libvirt: Any, *names: str) -> frozenset[int]:
    return frozenset(getattr(libvirt, f"VIR_ERR_{n}") for n in names
                     if hasattr(libvirt, f"VIR_ERR_{n}"))


def storage_error(libvirt: Any, err: Exception, what: str, *, host: str,
                  pool: str | None = None, volume: str | None = None) -> StorageError:
    """The ``StorageError`` for a ``libvirt.libvirtError`` raised while doing ``what``."""
    code = err.get_error_code() if hasattr(err, "get_error_code") else None
    message = (err.get_error_message() if hasattr(err, "get_error_message") else None) or str(err)
    text = f"{what}: {message}"
    where: dict[str, Any] = {"host": host, "pool": pool, "volume": volume}
    if code in _codes(libvirt, "NO_STORAGE_POOL"):
        return PoolUnavailable(text, **where, hint="refresh the host: the pool is gone")
    if code in _codes(libvirt, "NO_STORAGE_VOL"):
        return VolumeNotFound(text, **where, hint="refresh the pool")
    if code in _codes(libvirt, "STORAGE_VOL_EXIST"):
        return VolumeExists(text, **where, hint="choose another name; nothing was touched")
    if code in _codes(libvirt, "OPERATION_DENIED"):
        return ReadOnlyViolation(text, **where,
                                 hint="the connection is read-only or access is denied")
    if code in _codes(libvirt, "NO_SUPPORT", "OPERATION_UNSUPPORTED", "ARGUMENT_UNSUPPORTED"):
        return NotSupported(text, **where, hint="this pool type cannot do that")
    if code in _codes(libvirt, "XML_ERROR", "XML_DETAIL", "XML_INVALID_SCHEMA", "INVALID_ARG",
                      "CONFIG_UNSUPPORTED",
                      "STORAGE_POOL_BUILT"):
        return InvalidRequest(text, **where, hint="nothing was changed")
    if code in _codes(libvirt, "OPERATION_INVALID"):
        if "not active" in message:
            return PoolUnavailable(text, **where, hint="start the pool first")
        return InvalidRequest(text, **where, hint="check the pool's state and refresh")
    if code in _codes(libvirt, "NO_CONNECT", "RPC", "INTERNAL_ERROR") and (
            "connect" in message.lower() or "socket" in message.lower()):
        return HostUnreachable(text, **where, hint="is libvirtd running and reachable?")
    if "No space left" in message or "Disk quota" in message:
        return NoSpace(text, **where, hint="free space in the pool")
    return CommandFailed(text, **where, hint="see libvirtd's log on the host")
