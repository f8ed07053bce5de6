"""A file copied from one host to another, sparse and (with zstd on both ends)
compressed on the wire.

Each end runs the console's agent (``backends.transport.bundle``) through its transport's
``spawn``: on the source host it sends the file as a sparse stream
(``backends.transport.sparse``), on the target host it writes that stream into a new
file. This process pumps the sender's stdout into the receiver's stdin, as ``scp -3``
does, counting the bytes that cross, and follows the receiver's progress. The hosts
never talk to each other: only this machine needs to reach both.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from backends.contract import (
    ByteProgress,
    CancelCheck,
    Cancelled,
    CommandFailed,
    Process,
    StorageError,
    Transport,
)
from backends.transport.agent import error_from_record
from backends.transport.bundle import agent_argv, agent_script
from backends.transport.sparse import COMPRESS, DECOMPRESS

POLL_SECONDS = 0.1
END_SECONDS = 30.0  # for the receiver to fsync and answer once the stream has ended

_ZSTD: weakref.WeakKeyDictionary[Transport, bool] = weakref.WeakKeyDictionary()


def has_zstd(transport: Transport) -> bool:
    """Whether the host has a working ``zstd`` (asked once per transport)."""
    known = _ZSTD.get(transport)
    if known is None:
        try:
            known = transport.run(["zstd", "--version"], timeout=30).returncode == 0
        except CommandFailed:
            known = False
        _ZSTD[transport] = known
    return known


def start_agent(transport: Transport, op: str, args: dict[str, Any], *,
                audit_as: list[str]) -> Process:
    """The agent on the transport's host, running ``op``; its stdin carries whatever
    follows the request (a stream to receive)."""
    python = transport.agent_python
    if python is None:
        raise CommandFailed("cannot copy between hosts: the host has no python3",
                            host=transport.host, hint="install python3 on the host")
    proc = transport.spawn(agent_argv(python), audit_as=audit_as)
    try:
        script = agent_script()
        request = json.dumps({"op": op, "args": args, "read_only": transport.read_only,
                              "host": transport.host}) + "\n"
        proc.write(b"%d\n" % len(script) + script + request.encode())
    except BaseException:
        proc.close()
        raise
    return proc


@dataclass(frozen=True)
class TransferResult:
    size: int  # the file's size
    data_bytes: int  # bytes of data that travelled (before compression)
    wire_bytes: int  # bytes that crossed this machine, compressed or not
    sha256: str  # of the stream, as both ends computed it
    compressed: bool
    seconds: float


class _Pump(threading.Thread):
    """Copies the sender's stdout into the receiver's stdin, then ends its input."""

    def __init__(self, sender: Process, receiver: Process) -> None:
        super().__init__(daemon=True, name="transfer-pump")
        self.sender = sender
        self.receiver = receiver
        self.wire = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.sender.read(POLL_SECONDS)
                if data is None:
                    continue
                if not data:
                    break
                self.receiver.write(data)
                self.wire += len(data)
            self.receiver.close_stdin()
        except BaseException as err:  # seen by the caller, which stops both ends
            self.error = err


def copy_file(source: Transport, source_path: str, target: Transport, target_path: str, *,
              compress: bool, progress: ByteProgress | None = None,
              should_cancel: CancelCheck | None = None) -> TransferResult:
    """Copy the regular file ``source_path`` of ``source``'s host into the new file
    ``target_path`` (never an existing name) on ``target``'s host: only allocated ranges
    travel and holes stay holes; through ``zstd -1 -T0`` and ``zstd -d`` on the hosts
    when ``compress``. The new file is fsynced and checked against the stream's
    checksum. ``progress`` gets (bytes of the file's extents done, in all).

    On a failure or a cancel (``Cancelled``) both ends are stopped, and the receiver
    removes the new file if it got to; a receiver killed hard may leave it, so the
    caller journals ``target_path`` beforehand and removes it on rollback.
    """
    started = time.monotonic()
    sending = ["sparse-send", source_path] + (["|", *COMPRESS] if compress else [])
    receiving = ([*DECOMPRESS, "|"] if compress else []) + ["sparse-receive", target_path]
    with contextlib.ExitStack() as stack:
        # Both ends start at once: each start is a round trip and a python3 on its host.
        with ThreadPoolExecutor(2, thread_name_prefix="transfer-start") as both:
            sending_end = both.submit(start_agent, source, "send_sparse",
                                      {"path": source_path, "zstd": compress},
                                      audit_as=sending)
            receiving_end = both.submit(start_agent, target, "receive_sparse",
                                        {"path": target_path, "zstd": compress},
                                        audit_as=receiving)
        for end in (sending_end, receiving_end):  # the one that started is closed
            if end.exception() is None:
                stack.enter_context(end.result())
        sender, receiver = sending_end.result(), receiving_end.result()
        pump = _Pump(sender, receiver)
        pump.start()
        try:
            try:
                answer = _follow(receiver, pump, target.host, progress, should_cancel)
            except StorageError:
                # A sender that failed ends the stream early: its reason is the one to give.
                with contextlib.suppress(StorageError):
                    failed = sender.wait(2.0)
                    if failed != 0:
                        raise _sender_error(sender, source.host, failed) from None
                raise
            pump.join()
            status = sender.wait(END_SECONDS)
            receiver.wait(END_SECONDS)  # it answered: it exits, and is recorded so
        except BaseException:
            pump.stop.set()
            sender.kill()
            receiver.kill()
            pump.join(5)
            raise
        if status != 0:
            raise _sender_error(sender, source.host, status)
    return TransferResult(size=int(answer["size"]), data_bytes=int(answer["data_bytes"]),
                          wire_bytes=pump.wire, sha256=str(answer["sha256"]),
                          compressed=compress, seconds=time.monotonic() - started)


def _follow(receiver: Process, pump: _Pump, host: str, progress: ByteProgress | None,
            should_cancel: CancelCheck | None) -> dict[str, Any]:
    """Read the receiver's progress lines up to its answer, watching for a cancel and
    for the pump failing."""
    buffer = b""
    ended_at: float | None = None
    while True:
        if should_cancel is not None and should_cancel():
            raise Cancelled("the copy between hosts was stopped", host=host)
        if pump.error is not None and not isinstance(pump.error, BrokenPipeError):
            raise pump.error
        if not pump.is_alive() and ended_at is None:
            ended_at = time.monotonic()
        data = receiver.read(POLL_SECONDS)
        if data is None:
            if ended_at is not None and time.monotonic() - ended_at > END_SECONDS:
                raise CommandFailed("the receiving end did not answer after the stream "
                                    "ended", host=host)
            continue
        if not data:
            raise CommandFailed(f"the receiving end stopped: {_last_line(receiver)}",
                                host=host)
        buffer += data
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            record = json.loads(line)
            if "progress" in record:
                if progress is not None:
                    progress(*record["progress"])
            elif "error" in record:
                raise error_from_record(record["error"], host)
            else:
                result: dict[str, Any] = record["result"]
                return result


def _sender_error(sender: Process, host: str, status: int) -> BaseException:
    for line in reversed(sender.stderr.splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "error" in record:
                return error_from_record(record["error"], host)
    return CommandFailed(f"the sending end failed (exit status {status}): "
                         f"{_last_line(sender)}", host=host)


def _last_line(proc: Process) -> str:
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"

