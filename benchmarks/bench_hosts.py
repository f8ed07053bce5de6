"""20 SSH hosts x 1,000 volumes discovered concurrently: refresh time, key latency in
the console while it happens, and memory.

The hosts h01..h20 of a scratch config are ``ssh://`` URIs to two sshd instances on
127.0.0.1 (started here, stopped at the end; a 2-core machine does not run 20), each
host with a pool directory of its own: bench_listing's 1,000-volume dataset hard-linked
into 20 directories (mixed raw/qcow2, chains kept). Measured:

(a) ``Inventory.refresh`` of all 20 hosts into an SQLite cache file, headless (first
    refresh: connects and an empty cache; then a second one, connected);
(b) the real console (Textual's Pilot, 120x40) pressing j/k while ``r`` refreshes all
    hosts: time from a key press to the volume table's cursor moving (p50/p95/max);
(c) the process's peak RSS (VmHWM) before and after, per 1,000 volumes cached.

No pass/fail on timings; exit status 1 on a wrong result (not every volume cached once,
a host not online).

    .venv/bin/python benchmarks/bench_hosts.py [--quick] [--hosts N] [--volumes N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual import events
from textual.app import App

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the project and its test harness

from bench_listing import Dataset, prepare_dataset  # noqa: E402
from bench_ssh_listing import SshHosts, home_of, ssh_hosts  # noqa: E402
from common import (  # noqa: E402
    BenchError,
    data_root,
    heading,
    note,
    print_table,
    quick_requested,
    record_target,
)

BENCH = "hosts"
FULL = {"hosts": 20, "volumes": 1_000, "keys": 200}
QUICK = {"hosts": 20, "volumes": 200, "keys": 60}
SSHDS = ("s1", "s2")
SIZE = (120, 40)
KEY_TARGET_MS = 100.0  # what a user expects of a key press


def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmHWM in /proc/self/status")


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmRSS in /proc/self/status")


def host_pools(ds: Dataset, root: Path, hosts: int) -> list[Path]:
    """``hosts`` directories each holding the dataset's files as hard links."""
    names = sorted(os.listdir(ds.pool))
    dirs = []
    for n in range(1, hosts + 1):
        d = root / f"h{n:02d}"
        d.mkdir(parents=True)
        for name in names:
            os.link(ds.pool / name, d / name)
        dirs.append(d)
    return dirs


def write_config(path: Path, hosts: SshHosts, pools: list[Path]) -> list[str]:
    names = []
    lines = []
    for n, pool in enumerate(pools, start=1):
        name = f"h{n:02d}"
        names.append(name)
        lines.append(f"[[host]]\nname = '{name}'\nuri = '{hosts.uri(SSHDS[n % len(SSHDS)])}'\n"
                     f"[[host.pool]]\nname = 'images'\npath = '{pool}'\n")
    path.write_text("".join(lines))
    return names


def check_cache(cache_path: Path, names: list[str], volumes: int) -> list[str]:
    """Every host has every volume exactly once in the cache file."""
    import sqlite3

    problems = []
    with sqlite3.connect(cache_path) as db:
        for name in names:
            total, distinct = db.execute(
                "SELECT count(*), count(DISTINCT name) FROM volumes WHERE host = ? "
                "AND pool = 'images'", (name,)).fetchone()
            if total != volumes or distinct != volumes:
                problems.append(f"{name}: {total} rows, {distinct} distinct, "
                                f"expected {volumes}")
    return problems


def headless_refresh(conf: Path, cache_path: Path, known_hosts: str,
                     names: list[str]) -> tuple[float, float, list[str]]:
    """(first refresh seconds, second refresh seconds, hosts not online)."""
    from console.cache import Cache
    from console.config import Config
    from console.hosts import HostState
    from console.inventory import Inventory

    inv = Inventory(Config.load(conf), Cache(cache_path), read_only=True,
                    known_hosts=known_hosts)
    try:
        start = time.perf_counter()
        inv.refresh()
        first = time.perf_counter() - start
        start = time.perf_counter()
        inv.refresh()
        second = time.perf_counter() - start
        offline = [f"{n}: {inv.host_status(n).state.value} {inv.host_status(n).error or ''}"
                   for n in names if inv.host_status(n).state != HostState.ONLINE]
    finally:
        inv.close()
    return first, second, offline


async def console_refresh(conf: Path, cache_path: Path, known_hosts: str,
                          keys: int) -> tuple[float, list[float], int]:
    """(refresh seconds in the console, key latencies, keys pressed before it ended)."""
    from console.cache import Cache
    from console.config import Config
    from console.inventory import Inventory
    from console.ui.app import StorageConsoleApp
    from console.ui.widgets.volume_table import VolumeTable

    inv = Inventory(Config.load(conf), Cache(cache_path), read_only=True,
                    known_hosts=known_hosts)
    app = StorageConsoleApp(inv, refresh_on_start=False, cursor_blink=False,
                            select=("h01", "images"))
    latencies: list[float] = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(VolumeTable)
            table.focus()
            await pilot.pause()
            moved = [0.0]
            original = table._set_cursor

            def set_cursor(index: int, *, force: bool = False) -> None:
                before = table.cursor
                original(index, force=force)
                if table.cursor != before:
                    moved[0] = time.perf_counter()

            table._set_cursor = set_cursor  # type: ignore[method-assign]
            start = time.perf_counter()
            await pilot.press("r")
            worker = next(w for w in app.workers if w.group == "refresh")
            n = 0
            while not worker.is_finished:
                if n < keys:
                    key = "j" if (n // 10) % 2 == 0 else "k"
                    moved[0] = 0.0
                    pressed = time.perf_counter()
                    send_key(app, key)
                    while moved[0] == 0.0 and time.perf_counter() - pressed < 10:
                        await asyncio.sleep(0.001)
                    latencies.append((moved[0] or time.perf_counter()) - pressed)
                    n += 1
                await asyncio.sleep(0.02)  # a user presses a key every 20 ms or so
            took = time.perf_counter() - start
            await pilot.pause()
    finally:
        inv.close()
    return took, latencies, n


def send_key(app: App[Any], key: str) -> None:
    """What the terminal driver does with a key press. Pilot's ``press`` would also
    wait for the app to go idle, which a refresh in flight delays: not a user's view."""
    event = events.Key(key, key)
    event.set_sender(app)
    assert app._driver is not None
    app._driver.send_message(event)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_hosts.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 hosts x 200 volumes")
    p.add_argument("--dir", help="dataset root (shared with bench_listing)")
    p.add_argument("--hosts", type=int)
    p.add_argument("--volumes", type=int, help="volumes per host")
    p.add_argument("--keys", type=int, help="key presses at most during the refresh")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick or quick_requested() else FULL
    hosts_n = args.hosts or defaults["hosts"]
    volumes = args.volumes or defaults["volumes"]
    keys = args.keys or defaults["keys"]
    heading(f"hosts: {hosts_n} SSH hosts x {volumes:,} volumes, discovered concurrently")
    note(f"{os.cpu_count()} CPUs, load average "
         + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    root = data_root(args.dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        ds = prepare_dataset(root, volumes, 1, regenerate=False)
    except (BenchError, OSError) as err:
        print(f"  ERROR: cannot prepare the dataset: {err}")
        return 1
    with tempfile.TemporaryDirectory(prefix="sc-bench-hosts-", dir=root) as tmp:
        scratch = Path(tmp)
        try:
            pools = host_pools(ds, scratch / "pools", hosts_n)
            with ssh_hosts(scratch / "sshd", SSHDS) as hosts, home_of(hosts):
                return measure(hosts, pools, scratch, volumes, keys)
        except BenchError as err:
            print(f"  ERROR: {err}")
            return 1


def measure(hosts: SshHosts, pools: list[Path], scratch: Path, volumes: int,
            keys: int) -> int:
    conf = scratch / "config.toml"
    names = write_config(conf, hosts, pools)
    known_hosts = str(hosts.home / ".ssh" / "known_hosts")
    total = len(names) * volumes
    import console.ui.app  # noqa: F401  (imports out of the memory figures)

    rss_before, hwm_before = vm_rss_mb(), vm_hwm_mb()
    note(f"{len(names)} hosts on {len(SSHDS)} sshd instances; (a) headless refresh x2 ...")
    cache_path = scratch / "cache.db"
    first, second, offline = headless_refresh(conf, cache_path, known_hosts, names)
    hwm_headless = vm_hwm_mb()
    status = 0
    problems = offline + check_cache(cache_path, names, volumes)
    note(f"(b) the console: r, then j/k while it refreshes (at most {keys} keys) ...")
    took, latencies, pressed = asyncio.run(console_refresh(conf, cache_path, known_hosts,
                                                           keys))
    hwm_after, rss_after = vm_hwm_mb(), vm_rss_mb()
    problems += check_cache(cache_path, names, volumes)
    if problems:
        print("  ERROR: wrong result:\n" + "\n".join(f"    - {x}" for x in problems))
        status = 1
    else:
        note(f"correct: {len(names)} hosts online, {total:,} volumes in the cache, each once")
    ms = [v * 1000 for v in latencies]
    print()
    print_table(["measure", "value", "notes"], [
        ["(a) refresh, first (connect + scan + cache)", f"{first:.2f} s",
         f"{total / first:,.0f} volumes/s"],
        ["(a) refresh, again (connected)", f"{second:.2f} s",
         f"{total / second:,.0f} volumes/s"],
        ["(b) refresh in the console", f"{took:.2f} s", f"{pressed} keys pressed during it"],
        ["(b) key -> cursor moved, p50", f"{pct(ms, 50):.1f} ms", ""],
        ["(b) key -> cursor moved, p95", f"{pct(ms, 95):.1f} ms", ""],
        ["(b) key -> cursor moved, max", f"{max(ms, default=float('nan')):.1f} ms", ""],
        ["(c) peak RSS before (imports done)", f"{hwm_before:.0f} MiB",
         f"RSS {rss_before:.0f} MiB"],
        ["(c) peak RSS after headless refreshes", f"{hwm_headless:.0f} MiB",
         f"+{(hwm_headless - hwm_before) / (total / 1000):.1f} MiB per 1k volumes"],
        ["(c) peak RSS after the console", f"{hwm_after:.0f} MiB",
         f"+{(hwm_after - hwm_before) / (total / 1000):.1f} MiB per 1k volumes; "
         f"RSS now {rss_after:.0f} MiB"],
    ], right=(1,))
    print()
    if ms:
        record_target(BENCH, f"key p95 during refresh < {KEY_TARGET_MS:.0f} ms",
                      pct(ms, 95) < KEY_TARGET_MS, f"p95 {pct(ms, 95):.1f} ms, "
                      f"max {max(ms):.1f} ms over {len(ms)} keys")
    else:
        record_target(BENCH, f"key p95 during refresh < {KEY_TARGET_MS:.0f} ms", None,
                      "the refresh ended before a key was pressed")
    return status


if __name__ == "__main__":
    sys.exit(main())
