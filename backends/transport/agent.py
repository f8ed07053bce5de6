"""The remote end of the SSH transport: one request, run by a host's own ``python3``.

Stdlib only, like everything it imports (``local``, ``scanner``, ``probe``, ``model``,
``archive``, ``contract``): ``bundle.agent_script`` ships their source on stdin, so the
host needs nothing installed but python3, and every file primitive behaves exactly as
``LocalTransport``'s, because it is ``LocalTransport``'s.

Protocol, one JSON document per line. stdin: the request ``{"op", "args",
"read_only"}``, then optionally ``cancel`` lines; end of input means the console is gone
(a held lock is released, a running stream cancelled). stdout: ``{"progress": [done,
total]}`` lines (at most ~10 a second), then one ``{"result": ...}`` or ``{"error":
{...}}``. A pool's listing sends its entries ahead of the result, ``{"entries": [...]}``
a part per line, which the console puts in order before the result's own ``entries``:
it decodes one part while the next is encoded and on its way. Strings carry file names
``os.fsdecode``d, so non-UTF-8 bytes travel as surrogate escapes in the JSON and come
back as the same bytes.

A ``session`` request keeps the agent: it then serves request lines one after another
(answering each as above; a ``cancel`` line stops the one running), and holds the volume
locks taken with ``lock`` until ``unlock`` or the end of its input. A job asks each host
through one session, instead of one agent start (an SSH session and a python3) a request.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from backends.archive import ArchiveInfo
from backends.contract import (
    Cancelled,
    ChecksumMismatch,
    CommandFailed,
    ReadOnlyViolation,
    StorageError,
    VolumeBusy,
)
from backends.transport import lifeline, sparse
from backends.transport.local import LocalTransport

PROGRESS_SECONDS = 0.1
ENTRIES_PER_PART = 500  # a listing's entries per line: about 350 KB of JSON
LOCKED = "locked"  # the line that says a lock is held, for the client to go on

# Operations that watch stdin while they run: a cancel line or the end of input stops
# them. A scan does not: a second thread would stop the scanner forking (see scanner).
_WATCHED = frozenset({"wipe_file", "compress_file", "decompress_file", "sha256_file",
                      "has_data", "zero_blocks", "lock_file"})


class _Session:
    def __init__(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.cancel = threading.Event()
        self.closed = threading.Event()
        self._write = threading.Lock()
        self._last_progress = 0.0
        self.requests: queue.Queue[bytes | None] | None = None  # a session's, in order

    def watch(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            line = self.stdin.readline()
            if not line:
                self.closed.set()
                self.cancel.set()  # nobody left to hear the answer: stop
                if self.requests is not None:
                    self.requests.put(None)
                return
            if line.strip() == b"cancel":
                self.cancel.set()
            elif self.requests is not None:
                # The client sends a request only once the last one was answered, so a
                # cancel that came too late for that one must not stop this one.
                self.cancel.clear()
                self.requests.put(line)

    def send(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._write:
            self.stdout.write(data)
            self.stdout.flush()

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS or done >= total:
            self._last_progress = now
            self.send({"progress": [done, total]})

    def should_cancel(self) -> bool:
        return self.cancel.is_set()


def _run(op: str, args: dict[str, Any], local: LocalTransport, session: _Session) -> Any:
    cancel: Callable[[], bool] = session.should_cancel
    progress = session.progress
    if op == "scan_directory":
        listing = local.scan_directory(args["path"], tuple(args["roots"]))
        entries = listing["entries"]
        for start in range(0, len(entries), ENTRIES_PER_PART):
            session.send({"entries": entries[start:start + ENTRIES_PER_PART]})
        return {**listing, "entries": []}
    if op == "probe_path":
        return local.probe_path(args["path"], args["declared"])
    if op == "probe_volume":
        return local.probe_volume(args["path"], tuple(args["roots"]))
    if op == "statvfs":
        return list(local.statvfs(args["path"]))
    if op == "lstat":
        st = local.lstat(args["path"])
        return [*st[:10], *(getattr(st, name) for name in STAT_EXTRA)]
    if op == "make_directory":
        return local.make_directory(args["path"])
    if op == "remove_file":
        return local.remove_file(args["path"])
    if op == "publish":
        return local.publish(args["temp"], args["final"], replace=args["replace"])
    if op == "read_bytes":
        data = local.read_bytes(args["path"], args["offset"], args["length"])
        return base64.b64encode(data).decode()
    if op == "qemu_write_locked":
        return local.qemu_write_locked(args["path"])
    if op == "has_data":
        return local.has_data(args["path"])
    if op == "zero_blocks":
        return list(local.zero_blocks(args["path"], args["budget"]))
    if op == "link":
        return local.link(args["existing"], args["new"])
    if op == "make_read_only":
        return local.make_read_only(args["path"])
    if op == "copy_attributes":
        return local.copy_attributes(args["source"], args["target"])
    if op == "write_new_file":
        return local.write_new_file(args["path"], base64.b64decode(args["data"]))
    if op == "wipe_file":
        return local.wipe_file(args["path"], args["pattern"], progress=progress,
                               should_cancel=cancel)
    if op == "compress_file":
        result = local.compress_file(args["source"], args["out"], args["argv"],
                                     progress=progress, should_cancel=cancel)
        return dataclasses.asdict(result)
    if op == "decompress_file":
        result = local.decompress_file(
            args["archive"], args["out"], args["argv"], length=args["length"],
            existing=args["existing"], expect=ArchiveInfo(**args["expect"]),
            progress=progress, should_cancel=cancel)
        return dataclasses.asdict(result)
    if op == "sha256_file":
        return list(local.sha256_file(args["path"], progress=progress,
                                      should_cancel=cancel))
    if op == "receive_sparse":
        if local.read_only:
            raise ReadOnlyViolation("refused to write a volume in read-only mode")
        try:
            size, sent, digest = sparse.receive_from(args["path"], session.stdin,
                                                     compress=args["zstd"],
                                                     progress=progress)
        except sparse.ChecksumError as err:
            raise ChecksumMismatch(str(err)) from None
        except sparse.StreamError as err:
            raise CommandFailed(str(err)) from None
        return {"size": size, "data_bytes": sent, "sha256": digest}
    if op == "lock_file":
        with local.lock_file(args["path"], args["holder"]):
            session.send({"result": LOCKED})
            session.closed.wait()  # held until the console closes the channel (or dies)
        return None
    raise ValueError(f"unknown request {op!r}")


# What ``os.stat_result``'s constructor takes after the ten sequence fields.
STAT_EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns",
              "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")

# Errors by the name the client turns back into the same class.
_ERRORS: tuple[tuple[type[StorageError], str], ...] = (
    (Cancelled, "cancelled"), (ChecksumMismatch, "checksum"), (CommandFailed, "command"),
    (ReadOnlyViolation, "read-only"), (VolumeBusy, "busy"), (StorageError, "storage"))


def error_record(err: BaseException) -> dict[str, Any]:
    if isinstance(err, OSError):
        return {"type": "os", "errno": err.errno, "strerror": err.strerror,
                "filename": None if err.filename is None else os.fsdecode(err.filename)}
    if isinstance(err, StorageError):
        kind = next(name for cls, name in _ERRORS if isinstance(err, cls))
        return {"type": kind, "what": err.what, "hint": err.hint}
    return {"type": "internal", "what": f"{type(err).__name__}: {err}"}


def _send_sparse(args: dict[str, Any]) -> None:
    """The sending end of a copy between hosts: stdout carries the stream itself, so a
    failure goes to stderr as an error record, with exit status 1."""
    sys.stdout.flush()
    try:
        sparse.send_to(args["path"], sys.stdout.fileno(), compress=args["zstd"])
    except Exception as err:
        if isinstance(err, sparse.StreamError):
            err = CommandFailed(str(err))
        sys.stderr.write(json.dumps({"error": error_record(err)}) + "\n")
        sys.stderr.flush()
        sys.exit(1)


def error_from_record(record: dict[str, Any], host: str) -> BaseException:
    """The exception an ``error_record`` stands for, raised again on the console."""
    kind = record.get("type")
    if kind == "os":
        if record.get("errno") is None:
            return OSError(record.get("strerror") or "error")
        if record.get("filename") is None:
            return OSError(record["errno"], record["strerror"])
        return OSError(record["errno"], record["strerror"], record["filename"])
    cls = next((c for c, name in _ERRORS if name == kind), CommandFailed)
    return cls(str(record.get("what")), host=host, hint=record.get("hint") or "")


# What a session does not serve: the streams own stdin or stdout, a lock is ``lock``
# there, and a scan forks best in a process with one thread (see scanner).
_NOT_IN_SESSION = frozenset({"send_sparse", "receive_sparse", "lock_file", "session",
                             "scan_directory"})


def _serve(session: _Session, local: LocalTransport) -> None:
    """A session: requests one at a time until the end of input, then the locks go."""
    session.requests = queue.Queue()
    session.watch()
    lifeline.enable()
    # Ready: the console sends its first request only after this line. Until then the
    # host's bootstrap may still be reading stdin for the agent's sources, and would
    # swallow a request sent ahead.
    session.send({"result": "serving"})
    locks: dict[str, contextlib.ExitStack] = {}
    try:
        while (line := session.requests.get()) is not None:
            request = json.loads(line)
            op, args = request["op"], request.get("args", {})
            try:
                if op == "lock":
                    held = contextlib.ExitStack()
                    held.enter_context(local.lock_file(args["path"], args["holder"]))
                    locks[args["path"]] = held
                    result: Any = LOCKED
                elif op == "unlock":
                    with contextlib.suppress(KeyError):
                        locks.pop(args["path"]).close()
                    result = None
                elif op in _NOT_IN_SESSION:
                    raise ValueError(f"{op!r} is not served in a session")
                else:
                    result = _run(op, args, local, session)
            except Exception as err:
                session.send({"error": error_record(err)})
                continue
            session.send({"result": result})
    finally:
        for held in locks.values():
            held.close()


def main() -> None:
    session = _Session(sys.stdin.buffer, sys.stdout.buffer)
    request = json.loads(session.stdin.readline())
    op = request["op"]
    if op == "send_sparse":
        _send_sparse(request.get("args", {}))
        return
    local = LocalTransport(request.get("host", "remote"),
                           read_only=bool(request.get("read_only")))
    if op == "session":
        _serve(session, local)
        return
    if op in _WATCHED:
        session.watch()
        # The agent's qemu-img or zstd dies with the agent (the console's cancel, or
        # its connection gone), not left writing on the host.
        lifeline.enable()
    try:
        result = _run(op, request.get("args", {}), local, session)
    except Exception as err:  # every failure goes back to the console as a record
        session.send({"error": error_record(err)})
        return
    if op != "lock_file":
        session.send({"result": result})
