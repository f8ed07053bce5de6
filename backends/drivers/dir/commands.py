"""Running a command (qemu-img, e2fsck, resize2fs) on the pool's host, and what its
failure stands for: no space, a QEMU holding the image, or just a failure."""

from __future__ import annotations

import re
from collections.abc import Callable

from backends import qemuimg
from backends.contract import (
    CancelCheck,
    Cancelled,
    CommandFailed,
    CommandResult,
    NoSpace,
    NotSupported,
    StorageError,
    Transport,
    VolumeBusy,
)

_LOCK_ERROR = re.compile(r'Failed to get (?:shared )?"[a-z-]+" lock')
_NO_SPACE = ("No space left on device", "Disk quota exceeded")


def run(transport: Transport, argv: list[str], where: dict[str, str],
        on_output: Callable[[bytes], None] | None = None,
        should_cancel: CancelCheck | None = None) -> CommandResult:
    try:
        return transport.run(argv, on_output=on_output, should_cancel=should_cancel)
    except Cancelled:
        raise Cancelled(f"{qemuimg_name(argv)} was cancelled", **where) from None


def measure(transport: Transport, argv: list[str],
            where: dict[str, str]) -> qemuimg.Measure:
    """What ``qemu-img measure`` (``argv``) says an image needs."""
    result = run(transport, argv, where)
    if result.returncode != 0:
        raise failure(result, "qemu-img measure", where)
    try:
        return qemuimg.parse_measure(result.stdout)
    except ValueError as err:
        raise CommandFailed(f"qemu-img measure: {err}", **where) from None


def failure(result: CommandResult, what: str, where: dict[str, str], *,
            hint: str = "") -> StorageError:
    """The error a failed command stands for: no space, a lock, or just failed."""
    text = result.stderr.decode(errors="replace")
    line = last_line(result.stderr) or f"exited with status {result.returncode}"
    if any(marker in text for marker in _NO_SPACE):
        return NoSpace(f"{what} failed: no space left on the pool's file system ({line})",
                       **where, hint=hint or "free space in the pool")
    if _LOCK_ERROR.search(text):
        return VolumeBusy(f"{what} refused: a running QEMU holds the image", **where,
                          hint="stop the VM (or qemu-nbd) using it first")
    if "does not support resize" in text:
        return NotSupported(f"{what}: the image format cannot be resized", **where)
    return CommandFailed(f"{what} failed: {line}", **where, hint=hint)


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def qemuimg_name(argv: list[str]) -> str:
    """``qemu-img convert`` from an argv, for messages."""
    return " ".join(argv[:2]) if argv and argv[0] == qemuimg.QEMU_IMG else (
        argv[0] if argv else "the command")
