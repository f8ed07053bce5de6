"""argv builders for qemu-img. Every call names its formats: ``-f`` always, ``-F`` for
backings. Golden tests in tests/test_qemuimg.py pin every argv built here."""

from __future__ import annotations

import json
import re

from backends.model import ImageFormat

QEMU_IMG = "qemu-img"

# qemu-img -p prints "    (12.34/100%)\r"; the last match in a chunk is the newest.
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def create(
    path: str,
    fmt: ImageFormat,
    capacity: int,
    *,
    backing: str | None = None,
    backing_format: ImageFormat | str | None = None,
    preallocation: str | None = None,
) -> list[str]:
    """``qemu-img create``; a backing always comes with its format (``-F``)."""
    argv = [QEMU_IMG, "create", "-q", "-f", str(fmt)]
    if backing is not None:
        if not backing_format:
            raise ValueError("a backing file needs a declared format")
        argv += ["-b", backing, "-F", str(backing_format)]
    if preallocation:
        argv += ["-o", f"preallocation={preallocation}"]
    # "--" keeps a name starting with "-" from being read as an option.
    argv += ["--", path, str(capacity)]
    return argv


def info(path: str, fmt: ImageFormat | str) -> list[str]:
    return [QEMU_IMG, "info", "--output=json", "-f", str(fmt), "--", path]


def without_backing(path: str) -> str:
    """A ``json:`` file name that opens ``path`` with its backing chain cut off, so a
    backing reference in an untrusted header is never followed."""
    return "json:" + json.dumps({"backing": None, "file": {"driver": "file", "filename": path}})


def allocation_map(path: str, fmt: ImageFormat | str) -> list[str]:
    """``qemu-img map`` of the image's own clusters (``-U``: it may be in use)."""
    return [QEMU_IMG, "map", "-U", "--output=json", "-f", str(fmt), without_backing(path)]


def parse_progress(chunk: bytes) -> float | None:
    """The newest percentage in a chunk of ``qemu-img -p`` output, or None."""
    found = _PROGRESS.findall(chunk)
    return float(found[-1]) if found else None
