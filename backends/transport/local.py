"""This machine: commands through subprocess, files through the scanner in-process."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from backends.contract import CommandResult, ReadOnlyViolation, Transport
from backends.transport import scanner

# Commands that only read; in read-only mode nothing else runs (enforced here, below
# every UI, as DESIGN.md asks).
READ_ONLY_COMMANDS = frozenset({"qemu-img info", "qemu-img check", "qemu-img measure",
                                "qemu-img compare", "qemu-img map", "dumpe2fs"})


def command_key(argv: list[str]) -> str:
    """The program and, for multi-tool programs like qemu-img, its sub-command."""
    program = os.path.basename(argv[0]) if argv else ""
    if program == "qemu-img" and len(argv) > 1:
        return f"{program} {argv[1]}"
    return program


ZERO_SCAN_BUDGET = 64 << 20  # bytes of allocated extents read before assuming data


def extents_hold_data(fd: int) -> bool:
    """Whether any allocated extent of ``fd`` holds a non-zero byte.

    Allocated zeros (qemu-img allocates a raw image's first block) are not data. Past
    ``ZERO_SCAN_BUDGET`` the answer is yes: unknown is treated as precious.
    """
    offset, budget, chunk = 0, ZERO_SCAN_BUDGET, 1 << 20
    zeros = bytes(chunk)
    while True:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only holes up to the end
                return False
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        while start < end:
            length = min(chunk, end - start, budget)
            if length <= 0:
                return True
            data = os.pread(fd, length, start)
            if not data:
                return False
            if data != zeros[:len(data)]:
                return True
            start += len(data)
            budget -= len(data)
        offset = end


class LocalTransport(Transport):
    def __init__(self, host: str = "local", *, read_only: bool = False) -> None:
        self.host = host
        self.read_only = read_only

    def run(
        self,
        argv: list[str],
        *,
        on_output: Callable[[bytes], None] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        if self.read_only and command_key(argv) not in READ_ONLY_COMMANDS:
            raise ReadOnlyViolation(
                f"refused to run {command_key(argv)!r} in read-only mode", host=self.host
            )
        if on_output is None:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
            return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        # stderr goes to a file so a chatty command can never block on a full pipe.
        with tempfile.TemporaryFile() as errfile, subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL
        ) as proc:
            assert proc.stdout is not None
            chunks: list[bytes] = []
            while chunk := os.read(proc.stdout.fileno(), 65536):
                chunks.append(chunk)
                on_output(chunk)
            code = proc.wait(timeout)
            errfile.seek(0)
            err = errfile.read()
        return CommandResult(tuple(argv), code, b"".join(chunks), err)

    def scan_directory(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        return scanner.scan_directory(path, roots)

    def probe_path(self, path: str, declared: str | None) -> dict[str, Any]:
        return scanner.probe_path(path, declared)

    def probe_volume(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        return scanner.probe_volume(path, roots)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)

    def make_directory(self, path: str) -> None:
        self._refuse_if_read_only("create a directory")
        os.makedirs(path, exist_ok=True)

    def remove_file(self, path: str) -> None:
        self._refuse_if_read_only("remove a file")
        os.unlink(path)

    def publish(self, temp: str, final: str) -> None:
        self._refuse_if_read_only("publish a volume")
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, final)
        os.unlink(temp)
        dfd = os.open(os.path.dirname(final) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def has_data(self, path: str) -> bool:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return extents_hold_data(fd)
        finally:
            os.close(fd)

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyViolation(f"refused to {what} in read-only mode", host=self.host)
