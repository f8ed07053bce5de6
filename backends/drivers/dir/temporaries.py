"""A job's output under a temporary name (``TEMP_PREFIX``): choosing the name, clearing
what a crashed attempt left under it, publishing it whole under its final name, removing
it on failure, and finding the temporary files a pool holds."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Sequence

from backends.contract import InvalidRequest, NoSpace, StorageError, Transport, VolumeExists
from backends.drivers.dir.names import MAX_NAME_BYTES
from backends.model import Pool, TemporaryFile
from backends.transport.scanner import TEMP_PREFIX


def temporary_name(name: str) -> str:
    """A fresh temporary name for a job's output that becomes ``name``."""
    return os.fsdecode(os.fsencode(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}")
                       [:MAX_NAME_BYTES])


def temp_name_for(name: str, temp_name: str | None, where: dict[str, str], *,
                  room: int = 0) -> str:
    """The temporary name to use; ``room`` bytes are kept free for the suffixes of
    its companions (``.raw``, ``.json``)."""
    if temp_name is None:
        return os.fsdecode(os.fsencode(temporary_name(name))[:MAX_NAME_BYTES - room])
    if (not temp_name.startswith(TEMP_PREFIX) or "/" in temp_name or "\0" in temp_name
            or len(os.fsencode(temp_name)) > MAX_NAME_BYTES - room):
        raise InvalidRequest(f"temporary name {temp_name!r} is not one file name "
                             f"starting with {TEMP_PREFIX!r}", **where)
    return temp_name


def clear_leftover(transport: Transport, temp: str, where: dict[str, str]) -> None:
    """Remove what a crashed attempt left under the job's temporary name."""
    kind = transport.probe_path(temp, None)["kind"]
    if kind == "missing":
        return
    if kind != "file":
        raise InvalidRequest(f"{temp} is a {kind}: it is not removed", **where,
                             hint="choose another temporary name")
    try:
        transport.remove_file(temp)
    except OSError as err:
        raise StorageError(f"cannot remove the leftover {temp}: {err.strerror}",
                           **where) from None


def publish(transport: Transport, temp: str, final: str, pool: Pool, name: str) -> None:
    try:
        transport.publish(temp, final)
    except FileExistsError:
        raise VolumeExists("a file with that name appeared meanwhile", host=pool.host,
                           pool=pool.name, volume=name, hint="nothing was changed") from None
    except OSError as err:
        raise StorageError(f"cannot publish the new volume: {err.strerror}",
                           host=pool.host, pool=pool.name, volume=name) from None


def publish_copy(transport: Transport, temp: str, final: str, overwrite: bool,
                 where: dict[str, str]) -> None:
    try:
        transport.publish(temp, final, replace=overwrite)
    except FileExistsError:
        raise VolumeExists("a file with that name appeared meanwhile", **where,
                           hint="nothing was changed") from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"no space left to finish the copy: {err.strerror}", **where,
                          hint="free space in the pool") from None
        raise StorageError(f"cannot publish the copy: {err.strerror}", **where) from None


def discard_quietly(transport: Transport, temp: str) -> None:
    """Remove a temporary file while another error is on its way out."""
    with contextlib.suppress(OSError, StorageError):
        transport.remove_file(temp)


def discard_all(transport: Transport, paths: tuple[str, ...]) -> None:
    for path in paths:
        discard_quietly(transport, path)


def lstat(transport: Transport, path: str) -> os.stat_result | None:
    try:
        return transport.lstat(path)
    except FileNotFoundError:
        return None


def temporary_files(transport: Transport, pool: Pool, names: Sequence[str]) -> list[TemporaryFile]:
    found = []
    for name in names:
        if not name.startswith(TEMP_PREFIX) or "/" in name:
            continue
        try:
            st = transport.lstat(os.path.join(pool.path, name))
        except FileNotFoundError:
            continue  # its job published or removed it since the scan
        except OSError as err:
            raise StorageError(f"cannot read temporary file {name}: {err.strerror}",
                               host=pool.host, pool=pool.name) from None
        if stat.S_ISREG(st.st_mode):
            found.append(TemporaryFile(name, st.st_size, st.st_blocks * 512,
                                       st.st_mtime))
    return found
