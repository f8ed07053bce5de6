"""How a directory pool's volumes are named: the names it accepts, how one image
records another as its backing, and how errors name a volume and a size."""

from __future__ import annotations

import os

from backends.contract import InvalidRequest
from backends.model import Pool, Volume
from backends.transport.scanner import TEMP_PREFIX

MAX_NAME_BYTES = 255


def validate_name(name: str, *, pool: Pool) -> None:
    """Refuse names that are not one plain file name in the pool's directory."""
    problem = None
    if not name:
        problem = "the name is empty"
    elif name in (".", "..") or "/" in name or "\0" in name:
        problem = "a volume name cannot be '.', '..' or contain '/' or NUL"
    elif name.startswith(TEMP_PREFIX):
        problem = f"names starting with {TEMP_PREFIX!r} are reserved for jobs in progress"
    elif len(os.fsencode(name)) > MAX_NAME_BYTES:
        problem = f"the name is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise InvalidRequest(problem, host=pool.host, pool=pool.name, volume=name,
                             hint="choose another name")


def backing_reference(backing: Volume, directory: str) -> str:
    """How an image in ``directory`` records ``backing``: by name when they share the
    directory (the pair can move together), else by absolute path. A name with a ":"
    would be read by qemu as a protocol ("nbd:x"), so it is recorded by path too."""
    return reference(backing.path, backing.name, directory)


def reference(path: str, name: str, directory: str) -> str:
    same_dir = os.path.normpath(os.path.dirname(path)) == os.path.normpath(directory)
    return name if same_dir and ":" not in name else path


def where_of(pool: Pool, name: str) -> dict[str, str]:
    return {"host": pool.host, "pool": pool.name, "volume": name}


def size_text(size: int) -> str:
    """``67108864 bytes (64.0 MiB)``: exact for the record, readable for a person."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size} bytes ({size / (1 << shift):.1f} {unit})"
    return f"{size} bytes"
