"""Archives of volumes: the volume's guest-visible data as raw, compressed by the ``zstd``
command line tool, with a JSON sidecar ``<archive>.json`` that records what it holds and
the sha256 of the archive file; and the byte streams that make, check and restore them.

Compressing, zstd reads the raw file itself (as its stdin, opened and checked here): the
kernel hands it the holes as zeroes, and nothing passes through this process but the
compressed stream, which is hashed as it is written. The content is guarded by zstd's
frame checksum (``--check``) and the archive file by its sha256; sidecars of version 1
also carry a sha256 of the raw content, which a restore still verifies. Restoring, the
output comes through this process so a restore leaves a hole wherever the data is
zeroes. qemu-img 7.2 cannot write raw to a pipe (``convert`` and ``dd`` both insist on a
regular file they can resize), so a volume in another format is first flattened into a
temporary raw file (the caller does that).

Stdlib only (like ``scanner``) and free of the rest of ``backends``: the local transport
calls it in-process, and a remote transport can ship it whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import queue
import selectors
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

ZSTD = "zstd"
SIDECAR_SUFFIX = ".json"
SIDECAR_KIND = "storage-console archive"
SIDECAR_VERSION = 2  # 2: no sha256 of the raw content (zstd's frame checksum guards it)
READABLE_VERSIONS = (1, 2)
LEVELS = range(1, 20)  # zstd's regular levels; 20+ need --ultra and gigabytes of memory
CHUNK = 1 << 20  # bytes per read and write: small enough to notice a cancel at once
BLOCK = 64 << 10  # granularity of holes a restore leaves and of ``data_bytes``
POLL_SECONDS = 0.1
PREFETCH = 256 << 20  # data asked for ahead of zstd's reads (POSIX_FADV_WILLNEED)
PREFETCH_STEP = 32 << 20  # at most this much asked for at once, between two reads
TERM_GRACE_SECONDS = 0.5  # between SIGTERM and SIGKILL
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_ZEROS = bytes(CHUNK)

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes in all)
CancelFn = Callable[[], bool]
PreexecFn = Callable[[], None]  # run in the child before exec (the caller's lifeline)


class Stopped(Exception):
    """``should_cancel`` said stop; the stream stopped and its command was killed."""


class StreamFailed(Exception):
    """The stream could not finish: ``zstd`` failed (``returncode``), or the data is not
    what it should be. ``str()`` says which, in a line."""

    def __init__(self, message: str, returncode: int = -1) -> None:
        super().__init__(message)
        self.returncode = returncode


class ChecksumMismatch(StreamFailed):
    """The data read does not have the checksum (or size) the sidecar records."""


def producer() -> str:
    """``storage-console 0.1.0``: who wrote an archive, for its sidecar."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - a stripped remote python
        return "storage-console"
    try:
        return f"storage-console {version('storage-console')}"
    except PackageNotFoundError:
        return "storage-console"


def compress_argv(level: int = 1) -> list[str]:
    """``zstd`` compressing stdin to stdout with every core (``-T0``). The frame carries
    zstd's own checksum of the content (``--check``, named although it is the command
    line's default: restores rely on it), so damaged content fails to decompress."""
    if isinstance(level, bool) or level not in LEVELS:
        raise ValueError(f"the zstd level is one of 1..19, not {level!r}")
    return [ZSTD, "-q", f"-{level}", "-T0", "--check", "-c"]


def decompress_argv() -> list[str]:
    """``zstd`` decompressing stdin to stdout."""
    return [ZSTD, "-q", "-d", "-c"]


@dataclass(frozen=True)
class ArchiveInfo:
    """What the sidecar of an archive records.

    ``archive_sha256`` is the sha256 of the compressed file as written. ``raw_sha256``,
    in sidecars of version 1 only (None since), is that of the volume's raw content, all
    ``virtual_size`` bytes of it (``zstd -dc ARCHIVE | sha256sum``). ``data_bytes`` is
    at most what a sparse restore writes: the allocated bytes of the raw data archived
    (version 1: its 64 KiB blocks that are not all zeroes).
    """

    volume: str
    format: str  # the volume's format when archived; the archive holds raw data
    virtual_size: int
    raw_sha256: str | None
    data_bytes: int
    archive_sha256: str
    archive_size: int
    level: int
    created: str  # ISO 8601, UTC
    producer: str  # "storage-console 0.1.0"
    compression: str = "zstd"

    def to_json(self) -> bytes:
        record = {"kind": SIDECAR_KIND, "version": SIDECAR_VERSION, **asdict(self)}
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ArchiveInfo:
        """Parse a sidecar; ``ValueError`` saying what is wrong when it is not one."""
        try:
            record = json.loads(data)
        except ValueError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(record, dict) or record.get("kind") != SIDECAR_KIND:
            raise ValueError(f"not a {SIDECAR_KIND} sidecar")
        version = record.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise ValueError(f"sidecar version {version!r} is not one this version reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))})")
        def text(name: str) -> str:
            value = record.get(name)
            if not isinstance(value, str):
                raise ValueError(f"its {name!r} is missing or not text")
            return value

        def number(name: str) -> int:
            value = record.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"its {name!r} is missing or not a size")
            return value

        def digest(name: str) -> str:
            value = text(name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(f"its {name!r} is not a sha256 in hex")
            return value

        digest("archive_sha256")
        # Version 1 always has it; a later one may (and then it is checked too).
        raw_sha256 = (digest("raw_sha256") if version == 1 or record.get("raw_sha256")
                      is not None else None)
        if text("compression") != "zstd":
            raise ValueError(f"compression {record['compression']!r} is not zstd")
        return cls(volume=text("volume"), format=text("format"),
                   virtual_size=number("virtual_size"), raw_sha256=raw_sha256,
                   data_bytes=number("data_bytes"), archive_sha256=text("archive_sha256"),
                   archive_size=number("archive_size"), level=number("level"),
                   created=text("created"), producer=text("producer"),
                   compression=text("compression"))


def is_sidecar(data: bytes) -> bool:
    """Whether ``data`` is a sidecar this module wrote (of any version)."""
    try:
        record = json.loads(data)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("kind") == SIDECAR_KIND


@dataclass(frozen=True)
class StreamResult:
    raw_size: int
    raw_sha256: str | None  # None when not computed: compressing never does
    data_bytes: int
    archive_size: int
    archive_sha256: str


# -- files ------------------------------------------------------------------------


def open_regular(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open ``path`` without following a symlink or blocking on a FIFO; ``OSError``
    (EINVAL) unless it is a regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def data_extents(fd: int, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of each allocated extent of ``fd`` within [start, end), as SEEK_DATA
    and SEEK_HOLE report them (extents fallocate() reserved but never wrote may count as
    holes or as data: either way they read as zeroes)."""
    if end is None:
        end = os.fstat(fd).st_size
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole up to the end
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        offset = hole


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: Any = None  # libc through ctypes, loaded by the first punch_hole


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate [offset, offset + length) of ``fd`` so it reads as zeroes, keeping the
    file's size; False when the file system cannot (the caller writes zeroes instead)."""
    global _libc
    if length <= 0:
        return True
    import ctypes  # here, not at the top: listings import this module and never punch
    import ctypes.util

    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                   ctypes.c_int64]
        _libc = libc
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(code, os.strerror(code))


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset + length) of ``fd`` read as zeroes: punch a hole, or write
    zeroes over what is allocated there when holes cannot be punched."""
    if punch_hole(fd, offset, length):
        return
    for start, end in list(data_extents(fd, offset, offset + length)):
        while start < end:
            start += os.pwrite(fd, memoryview(_ZEROS)[:min(CHUNK, end - start)], start)


def write_all(fd: int, data: memoryview | bytes, offset: int | None = None) -> None:
    """Write all of ``data`` to ``fd``, at ``offset`` when given (``pwrite``)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def sha256_file(path: str, *, progress: ProgressFn | None = None,
                should_cancel: CancelFn | None = None) -> tuple[str, int]:
    """(sha256 in hex, size) of the regular file ``path``."""
    fd = open_regular(path)
    try:
        total = os.fstat(fd).st_size
        digest, done = hashlib.sha256(), 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            if should_cancel is not None and should_cancel():
                raise Stopped("checksum stopped")
            n = os.readv(fd, [view])
            if not n:
                return digest.hexdigest(), done
            digest.update(view[:n])
            done += n
            if progress is not None:
                progress(done, total)
    finally:
        os.close(fd)


# -- zstd as a filter ---------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc``, kill it if it is still there after a grace, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Filter:
    """``argv`` running with its output piped to this process, stderr kept in a file; its
    input piped too, or the open file ``stdin`` (the command then reads it itself)."""

    def __init__(self, argv: list[str], stdin: int | None = None,
                 preexec_fn: PreexecFn | None = None) -> None:
        self.argv = argv
        self.errfile = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.errfile,
                                         stdin=subprocess.PIPE if stdin is None else stdin,
                                         preexec_fn=preexec_fn)
        except OSError as err:
            self.errfile.close()
            raise StreamFailed(f"cannot run {argv[0]}: {err.strerror} (is it installed?)",
                               -1) from None
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.fileno()
        self.stdin = -1 if self.proc.stdin is None else self.proc.stdin.fileno()
        for fd in (self.stdin, self.stdout):
            if fd < 0:
                continue
            with contextlib.suppress(OSError):  # a smaller pipe means more system calls
                fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def failure(self, what: str) -> StreamFailed:
        """The error of a finished filter that exited non-zero."""
        self.errfile.seek(0)
        lines = self.errfile.read().decode(errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else f"exited with status {self.proc.returncode}"
        return StreamFailed(f"{what} failed: {last}", self.proc.returncode)

    def finish(self) -> int:
        """Wait for the end of a filter whose input is closed and output drained."""
        return self.proc.wait()

    def kill(self) -> None:
        stop(self.proc)

    def __enter__(self) -> _Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()
        self.errfile.close()


class _Pump(threading.Thread):
    """Copies ``read`` to ``write`` in a thread, hashing and counting what passes; any
    error is kept for the caller, and ``on_error`` runs (it kills the filter, so the
    other side never blocks on a pipe nobody serves)."""

    def __init__(self, read: Callable[[memoryview], int], write: Callable[[memoryview], None],
                 on_error: Callable[[], None], done: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._read, self._write, self._on_error, self._done = read, write, on_error, done
        self.digest = hashlib.sha256()
        self.count = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while not self.stop.is_set():
                n = self._read(view)
                if not n:
                    break
                self.digest.update(view[:n])
                self._write(view[:n])
                self.count += n
            self._done()
        except BaseException as err:  # handed to the caller, which raises it
            self.error = err
            self._on_error()


class _Hasher(threading.Thread):
    """sha256 of what is handed to it, computed in a thread of its own: hashing (~1.8
    GB/s with the CPU's SHA instructions) is the slowest step of a stream, and runs
    beside the copying this way. What is handed over must never change afterwards."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=16)

    def run(self) -> None:
        while (data := self._queue.get()) is not None:
            self.digest.update(data)

    def feed(self, data: bytes | memoryview) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.is_alive():
            self._queue.put(None)
            self.join()


class _Prefetch:
    """Asks the kernel to read the data extents just ahead of zstd, in the background
    and in large requests: zstd's own sequential reads are small, and a cold disk made
    it wait on each (a third slower than this). Holes are never asked for, and never
    more than ``PREFETCH`` ahead, so a huge image does not flush the page cache.

    ``fd`` must be a file description of its own: SEEK_DATA moves its offset."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.extents = data_extents(fd, 0, size)
        self.extent: tuple[int, int] | None = (0, 0)
        self.asked = 0  # everything before this was asked for (or is a hole)
        self._page = bytearray(4096)

    def advance(self, position: int) -> None:
        """Ask for the data in [position, position + PREFETCH), a step at a time."""
        limit = min(position + PREFETCH, max(position, self.asked) + PREFETCH_STEP)
        while self.extent is not None and self.asked < limit:
            start, end = self.extent
            if end <= self.asked:
                self.extent = next(self.extents, None)
                continue
            start = max(start, self.asked)
            if start >= limit:
                return
            end = min(end, limit)
            if not self._cached(start, end):
                with contextlib.suppress(OSError):  # only a hint
                    os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_WILLNEED)
            self.asked = end

    def _cached(self, start: int, end: int) -> bool:
        """Whether the range's first and last pages are in the page cache already (a
        read that must not wait says so): asking for cached data again only costs."""
        nowait = getattr(os, "RWF_NOWAIT", None)
        if nowait is None:
            return False
        try:
            return all(os.preadv(self.fd, [self._page], at, nowait) > 0
                       for at in (start, max(start, end - len(self._page))))
        except OSError:  # EAGAIN: not cached (or the flag is not supported here)
            return False


def compress(src: str, out: str, argv: list[str], *, progress: ProgressFn | None = None,
             should_cancel: CancelFn | None = None,
             preexec_fn: PreexecFn | None = None) -> StreamResult:
    """Compress the raw file ``src`` with ``argv`` (``compress_argv``) into the new file
    ``out`` (created exclusively, mode 0600: it holds a disk's data; fsynced).

    ``src`` is opened here (a regular file, no symlink followed) and becomes zstd's stdin,
    so zstd reads it at its own pace and holes cost no copy through this process. The
    progress is the offset zstd's reads have moved the shared file description to. The
    compressed stream is hashed as it is written; the raw content is not (the result's
    ``raw_sha256`` is None): zstd's frame checksum guards it. Raises ``Stopped`` on
    cancel, ``StreamFailed`` when zstd fails or ``src`` changes size while it is read,
    ``OSError`` for the files (ENOSPC included). ``out`` is left for the caller to remove
    on failure.
    """
    fd = open_regular(src)
    try:
        # The same file through a description of its own, to find extents while zstd
        # reads through the other.
        scan = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(fd)
        raise
    try:
        size = os.fstat(fd).st_size
        data = sum(end - start for start, end in data_extents(scan, 0, size))
        prefetch = _Prefetch(scan, size)
        prefetch.advance(0)
        with contextlib.suppress(OSError):  # a larger readahead for zstd's reads
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        try:
            with _Filter(argv, stdin=fd, preexec_fn=preexec_fn) as zstd:
                # Hashing in a thread of its own keeps the pipe drained while it runs.
                hasher = _Hasher()
                hasher.start()
                written = 0
                try:
                    with selectors.DefaultSelector() as selector:
                        selector.register(zstd.stdout, selectors.EVENT_READ)
                        while True:
                            if should_cancel is not None and should_cancel():
                                raise Stopped("compression stopped")
                            ready = selector.select(POLL_SECONDS)
                            position = os.lseek(fd, 0, os.SEEK_CUR)
                            prefetch.advance(position)
                            if progress is not None:
                                progress(min(position, size), size)
                            if not ready:
                                continue
                            chunk = os.read(zstd.stdout, CHUNK)  # a new bytes each time
                            if not chunk:
                                break
                            hasher.feed(chunk)
                            write_all(out_fd, chunk)
                            written += len(chunk)
                except BaseException:
                    zstd.kill()
                    raise
                finally:
                    archive_sha256 = hasher.hexdigest()
                if zstd.finish() != 0:
                    raise zstd.failure("zstd")
                if os.lseek(fd, 0, os.SEEK_CUR) != size or os.fstat(fd).st_size != size:
                    raise StreamFailed(f"{src} changed size while it was read")
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
        if progress is not None:
            progress(size, size)
        return StreamResult(size, None, data, written, archive_sha256)
    finally:
        os.close(scan)
        os.close(fd)


def decompress(archive: str, out: str, argv: list[str], *, length: int, existing: bool,
               expect: ArchiveInfo, progress: ProgressFn | None = None,
               should_cancel: CancelFn | None = None,
               preexec_fn: PreexecFn | None = None) -> StreamResult:
    """Decompress ``archive`` with ``argv`` (``decompress_argv``) into ``out``, checking
    sizes and both checksums against ``expect`` on the way.

    ``existing`` False: ``out`` is a new file (created exclusively), written sparse (a
    64 KiB block of zeroes stays a hole) and sized ``length`` bytes at the end.
    ``existing`` True: ``out`` is an existing raw file of ``length`` bytes written in
    place; a block of zeroes, and everything past the archive's data, is made to read
    as zeroes by punching holes (or writing zeroes where holes cannot be punched).

    Raises ``ChecksumMismatch`` when the data is not what ``expect`` records, ``Stopped``,
    ``StreamFailed`` (zstd failed: a damaged archive) or ``OSError``. On failure ``out``
    holds partial data: a new file is for the caller to remove.
    """
    if length < expect.virtual_size:
        raise StreamFailed(f"the target ({length} bytes) is smaller than the archive's "
                           f"data ({expect.virtual_size} bytes)")
    source = open_regular(archive)
    try:
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        out_fd = (open_regular(out, os.O_WRONLY) if existing
                  else os.open(out, flags | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            with _Filter(argv, preexec_fn=preexec_fn) as zstd:
                feeder = _Pump(lambda view: os.readv(source, [view]),
                               lambda view: write_all(zstd.stdin, view), zstd.kill,
                               zstd.close_stdin)
                feeder.start()
                try:
                    result = _unpack(zstd, out_fd, length, existing, expect, progress,
                                     should_cancel)
                except BaseException:
                    zstd.kill()
                    feeder.stop.set()
                    feeder.join()
                    raise
                feeder.join()
                if feeder.error is not None and not isinstance(feeder.error,
                                                               BrokenPipeError):
                    raise feeder.error
                if zstd.finish() != 0:
                    raise zstd.failure("zstd -d (the archive is damaged)")
                raw_size, raw_sha, data = result
            if raw_size != expect.virtual_size:
                raise ChecksumMismatch(f"the archive holds {raw_size} bytes, its sidecar "
                                       f"says {expect.virtual_size}")
            if (feeder.count, feeder.digest.hexdigest()) != (expect.archive_size,
                                                              expect.archive_sha256):
                raise ChecksumMismatch("the archive file's sha256 differs from the one "
                                       "its sidecar records")
            if expect.raw_sha256 is not None and raw_sha != expect.raw_sha256:
                raise ChecksumMismatch("the data's sha256 differs from the one the "
                                       "sidecar records")
            if existing:
                zero_range(out_fd, raw_size, length - raw_size)
            else:
                os.ftruncate(out_fd, length)
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
        return StreamResult(raw_size, raw_sha, data, feeder.count, feeder.digest.hexdigest())
    finally:
        os.close(source)


def _unpack(zstd: _Filter, out_fd: int, length: int, existing: bool, expect: ArchiveInfo,
            progress: ProgressFn | None,
            should_cancel: CancelFn | None) -> tuple[int, str | None, int]:
    """Read zstd's output block by block into ``out_fd``; (size, sha256, data bytes). The
    sha256 is computed only when the sidecar has one to compare it with (version 1)."""
    hasher = _Hasher() if expect.raw_sha256 is not None else None
    if hasher is not None:
        hasher.start()
    offset, data = 0, 0
    zero_from: int | None = None  # start of a run of zero blocks not yet punched
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(zstd.stdout, selectors.EVENT_READ)
            eof = False
            while not eof:
                # A fresh buffer each time: the hasher may still be reading the last one.
                view = memoryview(bytearray(CHUNK))
                filled = 0
                while filled < CHUNK:  # a whole chunk, or what is left at the end
                    if should_cancel is not None and should_cancel():
                        raise Stopped("restore stopped")
                    if not selector.select(POLL_SECONDS):
                        continue
                    n = os.readv(zstd.stdout, [view[filled:]])
                    if not n:
                        eof = True
                        break
                    filled += n
                if offset + filled > length:
                    raise ChecksumMismatch(f"the archive holds more than the {length} bytes "
                                           "of the target")
                chunk = view[:filled]
                if hasher is not None:
                    hasher.feed(chunk)
                if _ZEROS.startswith(chunk):  # the common case of a sparse volume, at once
                    if zero_from is None:
                        zero_from = offset
                    offset += filled
                    if progress is not None:
                        progress(offset, expect.virtual_size)
                    continue
                run: int | None = None  # start (in the chunk) of data blocks not yet written
                for start in [*range(0, filled, BLOCK), filled]:
                    zero = start < filled and _ZEROS.startswith(chunk[start:start + BLOCK])
                    if (zero or start == filled) and run is not None:
                        write_all(out_fd, chunk[run:start], offset + run)
                        data += start - run
                        run = None
                    if start == filled:
                        break
                    if zero:
                        if zero_from is None:
                            zero_from = offset + start
                        continue
                    if zero_from is not None:
                        if existing:
                            zero_range(out_fd, zero_from, offset + start - zero_from)
                        zero_from = None
                    if run is None:
                        run = start
                offset += filled
                if progress is not None:
                    progress(offset, expect.virtual_size)
        if zero_from is not None and existing:
            zero_range(out_fd, zero_from, offset - zero_from)
    finally:
        raw_sha256 = hasher.hexdigest() if hasher is not None else None
    return offset, raw_sha256, data
