"""This machine: commands through subprocess, files through the scanner in-process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from backends import archive
from backends.archive import ArchiveInfo, StreamResult, stop
from backends.contract import (
    WIPES,
    ByteProgress,
    CancelCheck,
    Cancelled,
    ChecksumMismatch,
    CommandFailed,
    CommandResult,
    Process,
    ReadOnlyViolation,
    Transport,
    VolumeBusy,
)
from backends.transport import lifeline, scanner
from backends.transport.scanner import QEMU_LOCK_WRITE_BYTE, lock_conflicts

# Commands that only read; in read-only mode nothing else runs (enforced here, below
# every UI, as DESIGN.md asks).
READ_ONLY_COMMANDS = frozenset({"qemu-img info", "qemu-img check", "qemu-img measure",
                                "qemu-img compare", "qemu-img map", "dumpe2fs", "vgs", "lvs"})
WIPE_CHUNK = 1 << 20


def command_key(argv: list[str]) -> str:
    """The program and, for multi-tool programs like qemu-img, its sub-command."""
    program = os.path.basename(argv[0]) if argv else ""
    if program == "qemu-img" and len(argv) > 1:
        return f"{program} {argv[1]}"
    return program


def refuse_unless_read_only(transport: Transport, argv: list[str]) -> None:
    """``ReadOnlyViolation`` when ``transport`` is read-only and ``argv`` is not one of
    ``READ_ONLY_COMMANDS``."""
    key = command_key(argv)
    if transport.read_only and key not in READ_ONLY_COMMANDS:
        raise ReadOnlyViolation(f"refused to run {key!r} in read-only mode",
                                host=transport.host)


def record_command(transport: Transport, argv: Sequence[str], returncode: int,
                   started: float) -> None:
    """Tell the transport's observer (the audit) of a command started at ``started``
    (``time.monotonic()``)."""
    if transport.observer is not None:
        transport.observer(transport.host, tuple(argv), returncode,
                           time.monotonic() - started)


POLL_SECONDS = 0.1  # how often a running command's cancel flag is looked at

ZERO_SCAN_BUDGET = 64 << 20  # bytes of allocated extents read before assuming data


def extents_hold_data(fd: int) -> bool:
    """Whether any allocated extent of ``fd`` holds a non-zero byte.

    Allocated zeros (qemu-img allocates a raw image's first block) are not data. Past
    ``ZERO_SCAN_BUDGET`` the answer is yes: unknown is treated as precious.
    """
    budget, chunk = ZERO_SCAN_BUDGET, 1 << 20
    zeros = bytes(chunk)
    for start, end in archive.data_extents(fd):
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
    return False


ZERO_BLOCK = 4096  # what fallocate --dig-holes can give back: whole file system blocks


def count_zero_blocks(fd: int, budget: int) -> tuple[int, int, int]:
    """(allocated, read, zero) bytes of ``fd``'s allocated extents: ``zero`` counts the
    4 KiB blocks read that hold only zeroes. At most ``budget`` bytes are read: past
    that, 1 MiB samples spread evenly over the extents stand for the rest."""
    chunk = 1 << 20
    extents = list(archive.data_extents(fd))
    allocated = sum(end - start for start, end in extents)
    stride = max(1, -(-allocated // max(budget, chunk)))  # read one MiB in every stride
    zero_block = bytes(ZERO_BLOCK)
    done = zero = index = 0
    for start, end in extents:
        while start < end and done < budget:
            length = min(chunk, end - start)
            if index % stride == 0:
                data = os.pread(fd, length, start)
                if not data:
                    break
                done += len(data)
                zero += sum(len(data[i:i + ZERO_BLOCK]) for i in range(0, len(data),
                                                                        ZERO_BLOCK)
                            if data[i:i + ZERO_BLOCK] == zero_block[:len(data) - i])
            index += 1
            start += length
    return allocated, done, zero


def overwrite_extents(fd: int, pattern: str, progress: ByteProgress | None,
                      should_cancel: CancelCheck | None) -> int:
    """Write zeroes or random bytes over every allocated extent of ``fd``, then fsync;
    the bytes written. Raises ``archive.Stopped`` when asked to stop."""
    if pattern not in WIPES:
        raise ValueError(f"a wipe is one of {WIPES}, not {pattern!r}")
    extents = list(archive.data_extents(fd))
    total = sum(end - start for start, end in extents)
    zeros = memoryview(bytes(WIPE_CHUNK))
    done = 0
    for start, end in extents:
        while start < end:
            if should_cancel is not None and should_cancel():
                raise archive.Stopped("wipe stopped")
            length = min(WIPE_CHUNK, end - start)
            # os.urandom: ~500 MiB/s, and not a pattern a disk or SSD could compress.
            block = zeros[:length] if pattern == "zero" else memoryview(os.urandom(length))
            while block:
                n = os.pwrite(fd, block, start)
                block, start, done = block[n:], start + n, done + n
            if progress is not None:
                progress(done, total)
    os.fsync(fd)
    return done


READ_CHUNK = 1 << 18
KILL_GRACE_SECONDS = 0.5


class LocalProcess(Process):
    """A command of this machine with pipes for stdin and stdout (``spawn``); it leads
    a process group of its own, so a kill reaches what it started too."""

    def __init__(self, transport: LocalTransport, argv: list[str],
                 audit_as: list[str] | None) -> None:
        self.argv = tuple(argv)
        self._transport = transport
        self._audit = tuple(audit_as or argv)
        self._errfile = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._started = time.monotonic()
        self._closed = False
        self._killed = False
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._errfile, process_group=0, bufsize=0)
        except OSError as err:
            self._errfile.close()
            self._closed = True
            self._record(-1)
            raise transport._not_started(argv, err) from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin.fileno()
        self._stdout = self._proc.stdout.fileno()

    def write(self, data: bytes) -> None:
        archive.write_all(self._stdin, data)

    def close_stdin(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):
            self._proc.stdin.close()

    def read(self, timeout: float | None = None) -> bytes | None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return None
        return os.read(self._stdout, READ_CHUNK)

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{command_key(list(self.argv))} did not end within "
                                f"{timeout} s", host=self._transport.host) from None

    def kill(self) -> None:
        if self._proc.poll() is not None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    @property
    def stderr(self) -> bytes:
        self._errfile.flush()
        return os.pread(self._errfile.fileno(), 1 << 20, 0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        status = self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._errfile.close()
        self._record(-1 if self._killed else status)

    def _record(self, status: int) -> None:
        record_command(self._transport, self._audit, status, self._started)


class LocalTransport(Transport):
    agent_python: str | None = sys.executable

    def __init__(self, host: str = "local", *, read_only: bool = False) -> None:
        self.host = host
        self.read_only = read_only

    def spawn(self, argv: list[str], *, audit_as: list[str] | None = None) -> Process:
        refuse_unless_read_only(self, argv)
        return LocalProcess(self, argv, audit_as)

    def run(
        self,
        argv: list[str],
        *,
        on_output: Callable[[bytes], None] | None = None,
        timeout: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> CommandResult:
        refuse_unless_read_only(self, argv)
        started = time.monotonic()
        returncode = -1  # what the audit records for a command stopped or not started
        try:
            if on_output is None and should_cancel is None:
                try:
                    done = subprocess.run(argv, capture_output=True, timeout=timeout,
                                          check=False, stdin=subprocess.DEVNULL,
                                          process_group=0, preexec_fn=lifeline.preexec())
                except OSError as err:
                    raise self._not_started(argv, err) from None
                returncode = done.returncode
                return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
            result = self._stream(argv, on_output, timeout, should_cancel)
            returncode = result.returncode
            return result
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{command_key(argv)} did not finish within {timeout} s "
                                "and was stopped", host=self.host) from None
        finally:
            record_command(self, argv, returncode, started)

    def _not_started(self, argv: list[str], err: OSError) -> CommandFailed:
        return CommandFailed(f"cannot run {argv[0] if argv else '(nothing)'}: {err.strerror}",
                             host=self.host, hint="is it installed?")

    def _stream(
        self,
        argv: list[str],
        on_output: Callable[[bytes], None] | None,
        timeout: float | None,
        should_cancel: CancelCheck | None,
    ) -> CommandResult:
        """Run ``argv`` feeding its stdout to ``on_output`` as it comes, while polling
        ``should_cancel`` and the deadline every ``POLL_SECONDS``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: list[bytes] = []
        # stderr goes to a file so a chatty command can never block on a full pipe.
        with tempfile.TemporaryFile() as errfile:
            try:
                # A group of its own: a terminal's Ctrl-C reaches the job (which cancels
                # and cleans up), not qemu-img behind its back.
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errfile,
                                        process_group=0, stdin=subprocess.DEVNULL,
                                        preexec_fn=lifeline.preexec())
            except OSError as err:
                raise self._not_started(argv, err) from None
            assert proc.stdout is not None
            try:
                with selectors.DefaultSelector() as selector:
                    selector.register(proc.stdout.fileno(), selectors.EVENT_READ)
                    open_stdout, next_poll = True, 0.0
                    while True:
                        now = time.monotonic()
                        if should_cancel is not None and now >= next_poll:
                            next_poll = now + POLL_SECONDS
                            if should_cancel():
                                stop(proc)
                                raise Cancelled(f"{command_key(argv)} was stopped",
                                                host=self.host)
                        if deadline is not None and now >= deadline:
                            raise subprocess.TimeoutExpired(argv, timeout or 0.0)
                        if open_stdout:
                            if selector.select(POLL_SECONDS):
                                chunk = os.read(proc.stdout.fileno(), 65536)
                                if not chunk:
                                    open_stdout = False
                                    continue
                                chunks.append(chunk)
                                if on_output is not None:
                                    on_output(chunk)
                            elif proc.poll() is not None:
                                # Exited with its output drained; a child it left behind
                                # may hold the pipe open forever: not ours to wait for.
                                open_stdout = False
                            continue
                        try:
                            code = proc.wait(POLL_SECONDS)
                            break
                        except subprocess.TimeoutExpired:
                            continue
            finally:
                stop(proc)  # a timeout, or a callback that raised: never left running
                proc.stdout.close()
            errfile.seek(0)
            stderr = errfile.read()
        return CommandResult(tuple(argv), code, b"".join(chunks), stderr)

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

    def publish(self, temp: str, final: str, *, replace: bool = False) -> None:
        self._refuse_if_read_only("publish a volume")
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.rename(temp, final)
        else:
            os.link(temp, final)
            os.unlink(temp)
        _fsync_directory(os.path.dirname(final))

    def has_data(self, path: str) -> bool:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return extents_hold_data(fd)
        finally:
            os.close(fd)

    def zero_blocks(self, path: str, budget: int) -> tuple[int, int, int]:
        fd = archive.open_regular(path)
        try:
            return count_zero_blocks(fd, budget)
        finally:
            os.close(fd)

    def read_bytes(self, path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def qemu_write_locked(self, path: str) -> bool:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            return lock_conflicts(fd, QEMU_LOCK_WRITE_BYTE)
        finally:
            os.close(fd)

    # -- snapshots, wipes, archives -------------------------------------------------

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def link(self, existing: str, new: str) -> None:
        self._refuse_if_read_only("link a file")
        os.link(existing, new, follow_symlinks=False)
        _fsync_directory(os.path.dirname(new))

    def make_read_only(self, path: str) -> None:
        self._refuse_if_read_only("change a file's mode")
        fd = archive.open_regular(path)
        try:
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o222)
            os.fsync(fd)
        finally:
            os.close(fd)

    def copy_attributes(self, source: str, target: str) -> None:
        self._refuse_if_read_only("change a file's mode")
        st = os.lstat(source)
        fd = archive.open_regular(target)
        try:
            if os.geteuid() == 0 or st.st_uid == os.geteuid():
                with contextlib.suppress(PermissionError):  # the mode is copied still
                    os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd)

    def write_new_file(self, path: str, data: bytes) -> None:
        self._refuse_if_read_only("write a file")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def wipe_file(self, path: str, pattern: str, *, progress: ByteProgress | None = None,
                  should_cancel: CancelCheck | None = None) -> int:
        self._refuse_if_read_only("wipe a file")
        fd = archive.open_regular(path, os.O_WRONLY)
        try:
            return overwrite_extents(fd, pattern, progress, should_cancel)
        except archive.Stopped:
            raise Cancelled("the wipe was stopped: the file is partly overwritten",
                            host=self.host) from None
        finally:
            os.close(fd)

    def compress_file(self, source: str, out: str, argv: list[str], *,
                      progress: ByteProgress | None = None,
                      should_cancel: CancelCheck | None = None) -> StreamResult:
        self._refuse_if_read_only("write an archive")
        return self._stream_command(argv, lambda: archive.compress(
            source, out, argv, progress=progress, should_cancel=should_cancel,
            preexec_fn=lifeline.preexec()))

    def decompress_file(self, archive_path: str, out: str, argv: list[str], *, length: int,
                        existing: bool, expect: ArchiveInfo,
                        progress: ByteProgress | None = None,
                        should_cancel: CancelCheck | None = None) -> StreamResult:
        self._refuse_if_read_only("restore an archive")
        return self._stream_command(argv, lambda: archive.decompress(
            archive_path, out, argv, length=length, existing=existing, expect=expect,
            progress=progress, should_cancel=should_cancel,
            preexec_fn=lifeline.preexec()))

    def sha256_file(self, path: str, *, progress: ByteProgress | None = None,
                    should_cancel: CancelCheck | None = None) -> tuple[str, int]:
        try:
            return archive.sha256_file(path, progress=progress, should_cancel=should_cancel)
        except archive.Stopped:
            raise Cancelled("the checksum was stopped", host=self.host) from None

    @contextlib.contextmanager
    def lock_file(self, path: str, holder: str) -> Iterator[None]:
        # flock, not fcntl locks: it belongs to this open file, so the kernel drops it
        # when the process dies, and it is seen over NFS by other hosts' consoles.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 512, 0).decode(errors="replace").strip()
                raise VolumeBusy(f"locked by {other or 'another job'}", host=self.host,
                                 hint="wait for that job or cancel it") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def _stream_command(self, argv: list[str],
                        stream: Callable[[], StreamResult]) -> StreamResult:
        """Run one of ``archive``'s streams, recording its command for the audit and
        turning its errors into the contract's."""
        started = time.monotonic()
        returncode = -1
        try:
            result = stream()
            returncode = 0
            return result
        except archive.Stopped:
            raise Cancelled(f"{command_key(argv)} was stopped", host=self.host) from None
        except archive.ChecksumMismatch as err:
            returncode = 0
            raise ChecksumMismatch(str(err), host=self.host) from None
        except archive.StreamFailed as err:
            returncode = err.returncode
            raise CommandFailed(str(err), host=self.host) from None
        finally:
            record_command(self, argv, returncode, started)

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyViolation(f"refused to {what} in read-only mode", host=self.host)


def _fsync_directory(path: str) -> None:
    dfd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
