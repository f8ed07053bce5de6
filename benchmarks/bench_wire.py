"""Quiet on the wire: bytes the console writes to its terminal per second, idle and
with 8 jobs running, beside what a user would otherwise keep open in the same terminal
(``watch -n2 ls -l POOL`` and ``top -d 2``).

The real ``storage-console`` runs in a pty of 80x24 (TERM=xterm-256color), as over SSH;
every byte read from the pty's master side is what an SSH session would carry. The 8
jobs are real copies (``storage-console copy``, other processes sharing the journal) of
an image whose data is compressed clusters, so each lasts a while.

Idle is measured twice: in the first seconds (the pool's and the details' "seen 20s
ago" count by 10 s) and after a minute (the table's ages move on by the minute), which
is what a console left open costs. Target (issue 6): idle near zero (under 50 B/s once
past the first minute). The console sends only the cells that change
(console/ui/wire.py); to see which, log what the pty receives per burst.
Run: .venv/bin/python benchmarks/bench_wire.py [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # run as a script: sys.path is set just above

ROWS, COLS = 24, 80
IDLE_TARGET = 50.0  # bytes per second
JOBS = 8


class Terminal:
    """One program in a pty of ROWS x COLS; ``count`` drains and counts its output."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the program, the pty its terminal
            try:
                os.execvpe(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.tail = b""

    def count(self, seconds: float) -> int:
        """Bytes written in the next ``seconds`` (read as they come, so it never blocks)."""
        total = 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the program ended
                break
            total += len(data)
            self.tail = (self.tail + data)[-4096:]
        return total

    def settle(self, quiet: float = 2.0, limit: float = 30.0) -> None:
        """Until ``quiet`` seconds pass without output (start-up painting is done)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.count(quiet) == 0:
                return
        raise common.BenchError(f"the terminal never went quiet in {limit:.0f}s; last "
                                f"output: {self.tail[-300:]!r}")

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            for _ in range(20):
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    os.close(self.fd)
                    return
                time.sleep(0.1)
        os.close(self.fd)


def rate(argv: Sequence[str], env: Mapping[str, str], seconds: float) -> float:
    term = Terminal(argv, env)
    try:
        term.count(3.0)  # its first screen
        return term.count(seconds) / seconds
    finally:
        term.close()


def make_pool(root: Path) -> tuple[Path, list[Path]]:
    """A pool with a few volumes, and a slow source image for each copy (a volume is
    locked while a job reads it)."""
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for n in range(12):
        common.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool / f"disk-{n:02}.qcow2"),
                    "8G"], timeout=30)
    slow = pool / "slow.qcow2"
    common.run(["qemu-img", "create", "-q", "-f", "qcow2", str(slow), "4G"], timeout=30)
    common.run(["qemu-io", "-f", "qcow2", "-c", "write -c -P 0x5a 0 1G",
                "-c", "write -c -P 0x5a 1G 1G", str(slow)],
               timeout=300)
    sources = [slow]
    for n in range(1, JOBS):  # its data is compressed clusters: a few MiB to copy
        sources.append(pool / f"slow-{n}.qcow2")
        shutil.copyfile(slow, sources[-1])
    return pool, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    parser.add_argument("--seconds", type=float, help="seconds per window (default 30)")
    args = parser.parse_args(argv)
    quick = args.quick or common.quick_requested()
    seconds = args.seconds or (12.0 if quick else 30.0)
    try:
        for tool in ("qemu-img", "qemu-io", "watch", "top"):
            common.require_tool(tool)
        exe = common.storage_console_exe()
        with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
            root = Path(tmp)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
                   "TERM": "xterm-256color", "LANG": "C.UTF-8",
                   **{f"XDG_{k}_HOME": str(root / k.lower())
                      for k in ("CONFIG", "CACHE", "DATA", "STATE")}}
            pool, sources = make_pool(root)
            rows = measure(exe, env, pool, sources, seconds, quick)
    except common.BenchError as err:
        print(f"bench_wire: {err}", file=sys.stderr)
        return 1
    common.heading(f"Bytes per second written to an {COLS}x{ROWS} terminal "
                   f"({seconds:.0f} s windows)")
    watch = rows["watch -n2 ls -l POOL"]
    common.print_table(["what runs in the terminal", "B/s", "vs watch"],
                       [[name, f"{value:.1f}", f"{value / watch:.3f}x" if watch else "-"]
                        for name, value in rows.items()])
    idle = rows.get("storage-console, idle (after a minute, 60 s)",
                    rows["storage-console, idle (first seconds)"])
    common.record_target("wire", "idle bytes per second", idle < IDLE_TARGET,
                         f"{idle:.1f} B/s idle (target < {IDLE_TARGET:.0f}); "
                         f"{idle / watch:.3f}x watch -n2")
    return 0


def measure(exe: str, env: dict[str, str], pool: Path, sources: list[Path],
            seconds: float, quick: bool) -> dict[str, float]:
    rows: dict[str, float] = {}
    rows["watch -n2 ls -l POOL"] = rate(["watch", "-n2", "ls", "-l", str(pool)], env, seconds)
    rows["top -d 2"] = rate(["top", "-d", "2"], env, seconds)
    term = Terminal([exe, str(pool)], env)
    copies: list[subprocess.Popen[bytes]] = []
    try:
        term.settle()
        rows["storage-console, idle (first seconds)"] = term.count(seconds) / seconds
        if not quick:  # ages then move on by the minute: a window of a whole minute
            term.count(max(0.0, 75.0 - seconds))
            rows["storage-console, idle (after a minute, 60 s)"] = term.count(60.0) / 60.0
        for n, source in enumerate(sources):
            copies.append(subprocess.Popen(
                [exe, "copy", "--no-auto-fix", str(source), f"{pool}/copy-{n}.qcow2"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        term.count(2.0)  # the panel opens, the first progress comes in
        start = time.monotonic()
        busy = 0
        # While every copy runs: the rate of 8 jobs, not of a panel of finished ones.
        while time.monotonic() - start < seconds and all(c.poll() is None for c in copies):
            busy += term.count(0.5)
        elapsed = time.monotonic() - start
        failed = [c for c in copies if c.poll() not in (None, 0)]
        if failed:
            assert failed[0].stderr is not None
            raise common.BenchError(f"a copy failed: {failed[0].stderr.read().decode()}")
        if elapsed < 2:
            raise common.BenchError(f"the copies ended within {elapsed:.1f} s: too short "
                                    "to measure")
        rows[f"storage-console, {JOBS} jobs running ({elapsed:.0f} s)"] = busy / elapsed
        if "Traceback" in term.tail.decode("utf-8", "replace"):
            raise common.BenchError(f"the console failed: {term.tail[-500:]!r}")
    finally:
        for copy in copies:
            if copy.poll() is None:
                copy.send_signal(signal.SIGINT)
        for copy in copies:
            try:
                copy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                copy.kill()
        term.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
