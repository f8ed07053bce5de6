"""Sizes as people type and read them: ``10G``, ``512MiB``, ``1.5T``; binary units."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``; units are powers of 1024 (``G`` = ``GiB``), as in qemu-img.

    Raises ``ValueError`` with a message fit to show the user.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (try 10G, 512M or 1.5T)")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.upper()])
    if "." in number and size % 512:
        size += 512 - size % 512  # whole sectors: qemu-img rounds up the same way
    return size


def format_size(size: int | None) -> str:
    """``1.5G``-style, at most four significant characters before the unit."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if abs(value) < 1024 or unit == "P":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """``now``, ``42s``, ``5m``, ``3h``, ``2d``: how old cached data is."""
    if seconds < 1:
        return "now"
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // div)}{unit}"
    return f"{int(seconds // 86400)}d"


def format_duration(seconds: float | None) -> str:
    """``0:34``, ``1:02:03``; ``-`` when it cannot be told (an ETA)."""
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_rate(bytes_per_second: float) -> str:
    """``180M/s``; empty when nothing moves."""
    return f"{format_size(int(bytes_per_second))}/s" if bytes_per_second > 0 else ""
