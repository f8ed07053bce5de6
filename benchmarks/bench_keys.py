"""Key latency with 100,000 volumes while 16 jobs report progress, beside the same keys
with no job running.

The jobs are 16 threads standing in for the runner's workers: each reports a copy into
the shown pool through the runner's own hook (``on_update``, the app's ``job_updated``)
at the runner's rate (10 a second), its percent and bytes moving on steadily, so the
jobs panel, the pinned output rows of the table and the summary repaint as with real
copies. Latency is key press to the table's next painted line (bench_console's timer).

Target (issue 6): p95 with 16 jobs under 50 ms, and within 2x of the p95 without jobs.
Run: .venv/bin/python benchmarks/bench_keys.py [--rows N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_console  # run as a script: sys.path is set just above
import common
from textual import events

from backends.model import Host, Pool
from console.cache import Cache
from console.config import Config, HostConfig
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState
from console.ui.app import StorageConsoleApp
from console.ui.widgets.jobs_panel import JobsPanel
from console.ui.widgets.volume_table import VolumeTable

JOBS = 16
UPDATE_HZ = 10.0  # the runner's default update_hz
# Each moves the cursor (the measure waits for that): the list is long enough.
KEYS = ["pagedown"] * 20 + ["j"] * 20 + ["end", "home"] * 5 + ["ctrl+d", "ctrl+u"] * 5
GIB = 1 << 30


class Progress:
    """``JOBS`` copies reporting at the runner's rate until stopped."""

    def __init__(self, app: StorageConsoleApp) -> None:
        self.app = app
        self.stop = threading.Event()
        self.updates = 0
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in range(JOBS)]

    def run(self, n: int) -> None:
        started = time.time()
        total = (4 + n) * GIB
        while not self.stop.is_set():
            elapsed = time.time() - started
            done = min(total, int(elapsed * 200e6))
            job = JobRecord(id=1000 + n, kind="copy", host="local", pool="pool",
                            volume=f"vm-{n:06d}-disk.qcow2", state=JobState.RUNNING,
                            params={"host": "local", "pool": "pool",
                                    "volume": f"vm-{n:06d}-disk.qcow2", "dest_pool": "pool",
                                    "dest_name": f"copy-{n:02d}.qcow2", "format": "qcow2"},
                            stage=1, stages=2, stage_label="copy",
                            percent=100.0 * done / total, done_bytes=done, total_bytes=total,
                            throughput=200e6, created=started, started=started)
            self.app.job_updated(job)  # as the runner's on_update, from its thread
            self.updates += 1
            self.stop.wait(1.0 / UPDATE_HZ)

    def __enter__(self) -> Progress:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


async def key_latencies(app: StorageConsoleApp, timer: bench_console.Timer,
                       keys: list[str]) -> list[float]:
    """Key to the first painted line after the table took it (its cursor moved). Keys
    are posted as the terminal driver does; Pilot's press would wait for every message
    queue to go quiet, which 16 reporting jobs never let happen."""
    table = app.query_one(VolumeTable)
    out = []
    for key in keys:
        before = (table.cursor, table.scroll_y)
        start = time.perf_counter()
        app.post_message(events.Key(key, key if len(key) == 1 else None))
        moved: float | None = None
        while time.perf_counter() - start < 5:
            await asyncio.sleep(0.0005)
            if moved is None and (table.cursor, table.scroll_y) != before:
                moved = time.perf_counter()
            if moved is not None and timer.last_paint >= moved:
                break
        else:
            raise common.BenchError(f"key {key!r} moved nothing or painted nothing in 5 s")
        out.append(timer.last_paint - start)
    return out


async def latencies(cache: Cache, *, jobs: bool) -> tuple[list[float], int]:
    """Key latencies (seconds), and how many progress reports came in meanwhile."""
    config = Config((HostConfig(Host("local"), (Pool("local", "pool", "dir",
                                                     bench_console.POOL_PATH),)),))
    inventory = Inventory(config, cache)
    timer = bench_console.Timer(VolumeTable)
    app = StorageConsoleApp(inventory, select=("local", "pool"), refresh_on_start=False,
                            clock=time.time)
    async with app.run_test(size=bench_console.SIZE) as pilot:
        await pilot.pause()
        app.query_one(VolumeTable).focus()
        if not jobs:
            return await key_latencies(app, timer, KEYS), 0
        with Progress(app) as progress:
            await asyncio.sleep(1.0)  # every job is in the panel, reporting
            panel = app.screen.query_one(JobsPanel)
            if len(panel.rows) != JOBS:
                raise common.BenchError(f"the jobs panel shows {len(panel.rows)} jobs, "
                                        f"not {JOBS}: the stand-in jobs are not reported")
            app.query_one(VolumeTable).focus()
            out = await key_latencies(app, timer, KEYS)
            return out, progress.updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 rows")
    args = parser.parse_args(argv)
    rows = 10_000 if args.quick or common.quick_requested() else args.rows
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cache = bench_console.build_cache(Path(tmp) / "cache.db", rows)
            quiet, _ = asyncio.run(latencies(cache, jobs=False))
            busy, updates = asyncio.run(latencies(cache, jobs=True))
    except common.BenchError as err:
        print(f"bench_keys: {err}", file=sys.stderr)
        return 1
    common.heading(f"Key latency, {rows:,} volumes, {len(KEYS)} keys "
                   f"({updates:,} progress reports from {JOBS} jobs during the busy run)")
    measures = {"p50 (ms)": statistics.median, "p95 (ms)": bench_console.p95,
                "max (ms)": max}
    table = []
    for name, measure in measures.items():
        q, b = measure(quiet) * 1000, measure(busy) * 1000
        table.append([name, f"{q:.1f}", f"{b:.1f}", f"{b / q:.2f}x" if q else "-"])
    common.print_table(["measure", "no jobs", f"{JOBS} jobs", "ratio"], table, right=(1, 2, 3))
    p95_busy, p95_quiet = bench_console.p95(busy) * 1000, bench_console.p95(quiet) * 1000
    common.record_target("keys", f"p95 key latency with {JOBS} jobs",
                         p95_busy < 50 and p95_busy < 2 * max(p95_quiet, 1.0),
                         f"{p95_busy:.1f} ms (target < 50, and < 2x the {p95_quiet:.1f} ms "
                         "without jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
