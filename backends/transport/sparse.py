"""A file as a sparse stream: only its allocated ranges travel, and holes stay holes.

Both ends of a copy between hosts run this (stdlib only: it is shipped with the agent),
each in a process of its own on its host: ``send`` walks the source's extents with
SEEK_DATA/SEEK_HOLE and writes frames to its stdout, ``receive`` writes each frame at
its offset into a new file. With ``zstd`` each end pipes the stream through
``zstd -1 -T0`` / ``zstd -d`` on its own host, so only compressed bytes cross the wire.

The stream (integers big-endian)::

    MAGIC
    frame*: kind (1 byte) offset (8) length (8) [length bytes for DATA]
      HEAD  offset = the file's size, length = bytes its extents cover (for progress)
      DATA  the bytes at offset
      ZERO  an allocated range holding only zeroes: left a hole
    END   offset = the file's size, length = DATA bytes sent; then the sha256 (32 bytes)
          of every byte of the stream before END

The receiver gives the file its size first (``ftruncate``: all holes), so what is never
written reads as zeroes and takes no space, and refuses a stream whose END or checksum
does not match what it received.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import threading
from collections.abc import Callable
from typing import IO

from backends.archive import data_extents, open_regular, write_all

MAGIC = b"SCSPRS01"
FRAME = struct.Struct(">cQQ")
HEAD, DATA, ZERO, END = b"H", b"D", b"Z", b"E"
CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
COMPRESS = ["zstd", "-1", "-T0", "-q", "-c"]
DECOMPRESS = ["zstd", "-d", "-q", "-c"]

Progress = Callable[[int, int], None]


class StreamError(Exception):
    """The stream is not whole: truncated, damaged, or not ours."""


class ChecksumError(StreamError):
    """The stream came whole but its checksum or sizes do not match what it carried."""


def send(path: str, out: Callable[[bytes], object],
         should_cancel: Callable[[], bool] | None = None) -> tuple[int, int, str]:
    """Write the sparse stream of the regular file ``path`` through ``out``; returns
    (the file's size, DATA bytes sent, sha256 of the stream before END)."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        extents = list(data_extents(fd, 0, size))
        digest = hashlib.sha256()

        def emit(data: bytes) -> None:
            digest.update(data)
            out(data)

        emit(MAGIC + FRAME.pack(HEAD, size, sum(end - start for start, end in extents)))
        sent = 0
        for start, end in extents:
            while start < end:
                if should_cancel is not None and should_cancel():
                    raise StreamError("stopped")
                data = os.pread(fd, min(CHUNK, end - start), start)
                if not data:
                    break  # the file shrank under us: END says the size we saw
                n = len(data)
                if data == (_ZEROS if n == CHUNK else bytes(n)):
                    emit(FRAME.pack(ZERO, start, n))
                else:
                    emit(FRAME.pack(DATA, start, n))
                    emit(data)
                    sent += n
                start += n
        checksum = digest.digest()
        out(FRAME.pack(END, size, sent) + checksum)
        return size, sent, checksum.hex()
    finally:
        os.close(fd)


def send_to(path: str, fd: int, *, compress: bool) -> tuple[int, int, str]:
    """``send`` to the file descriptor ``fd`` (the agent's stdout), through ``zstd``
    when ``compress``; ``StreamError`` when zstd fails."""
    if not compress:
        return send(path, lambda data: write_all(fd, data))
    proc = subprocess.Popen(COMPRESS, stdin=subprocess.PIPE, stdout=fd)
    assert proc.stdin is not None
    try:
        result = send(path, proc.stdin.write)
        proc.stdin.close()
        if proc.wait() != 0:
            raise StreamError(f"zstd exited with status {proc.returncode}")
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise StreamError("the stream ended early: the sender stopped or the "
                          "connection dropped")
    return data


WRITEBACK = 64 << 20  # bytes written between two nudges of the writeback


def receive(path: str, stream: IO[bytes], *,
            progress: Progress | None = None) -> tuple[int, int, str]:
    """Write the sparse stream read from ``stream`` into the new file ``path`` (never an
    existing name), check its END, fsync it; returns (size, DATA bytes, sha256).

    On any failure the new file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        digest = hashlib.sha256()
        head = _read_exact(stream, len(MAGIC) + FRAME.size)
        if head[:len(MAGIC)] != MAGIC:
            raise StreamError("not a sparse stream of this console")
        kind, size, covered = FRAME.unpack(head[len(MAGIC):])
        if kind != HEAD:
            raise StreamError("the stream does not start with its header")
        digest.update(head)
        os.ftruncate(fd, size)
        done = written = flushed = 0
        while True:
            frame = _read_exact(stream, FRAME.size)
            kind, offset, length = FRAME.unpack(frame)
            if kind == END:
                checksum = _read_exact(stream, digest.digest_size)
                if stream.read(1):
                    raise StreamError("bytes follow the end of the stream")
                if (offset, length) != (size, written) or checksum != digest.digest():
                    raise ChecksumError("the stream's checksum does not match what came")
                break
            digest.update(frame)
            if offset + length > size or kind not in (DATA, ZERO):
                raise StreamError(f"a frame ({kind!r}, {offset}, {length}) lies outside "
                                  "the file")
            if kind == DATA:
                data = _read_exact(stream, length)
                digest.update(data)
                write_all(fd, data, offset)
                written += length
                if written - flushed >= WRITEBACK:
                    # Start writing back what came so far (Linux: DONTNEED starts the
                    # writeback without waiting), so the fsync at the end finds little
                    # left to do and the copy does not fill the host's page cache.
                    with contextlib.suppress(OSError, AttributeError):
                        os.posix_fadvise(fd, 0, offset, os.POSIX_FADV_DONTNEED)
                    flushed = written
            done += length
            if progress is not None:
                progress(done, covered)
        os.fsync(fd)
        return size, written, digest.hexdigest()
    except BaseException:
        os.close(fd)
        fd = -1
        os.unlink(path)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def receive_from(path: str, stream: IO[bytes], *, compress: bool,
                 progress: Progress | None = None) -> tuple[int, int, str]:
    """``receive`` from ``stream`` (the agent's stdin), through ``zstd -d`` when
    ``compress``."""
    if not compress:
        return receive(path, stream, progress=progress)
    proc = subprocess.Popen(DECOMPRESS, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    feed_in = proc.stdin

    def feed() -> None:
        try:
            while chunk := stream.read1(CHUNK):  # type: ignore[attr-defined]
                feed_in.write(chunk)
        except (BrokenPipeError, OSError):
            pass  # zstd stopped: its status says why
        finally:
            with contextlib.suppress(OSError):
                feed_in.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        result = receive(path, proc.stdout, progress=progress)
        if proc.wait() != 0:
            raise StreamError(f"zstd -d exited with status {proc.returncode}")
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
