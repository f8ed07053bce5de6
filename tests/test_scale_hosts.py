"""Many SSH hosts at once: 20 hosts x 200 volumes discovered concurrently through
``Inventory.refresh`` against the harness's real sshd (hosts h01..h20 on sshd "a" and
"b", each with a pool directory of its own), and the console answering keys while that
refresh runs, with one host whose sshd hangs and is then killed mid-refresh.

The benchmark (benchmarks/bench_hosts.py) does 1,000 volumes per host and times it;
these tests only check what happens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual.worker import Worker

from backends.contract import StorageError
from console.cache import Cache
from console.config import Config
from console.hosts import HostState
from console.inventory import Inventory
from console.ui.app import StorageConsoleApp
from tests.harness.sshd import Fleet, Sshd
from tests.test_ui import SIZE, make_app, table

HOSTS = 20
VOLUMES = 200


def host_names() -> list[str]:
    return [f"h{n:02d}" for n in range(1, HOSTS + 1)]


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """HOSTS directories of VOLUMES volumes each (raw, qcow2, qcow2 overlays of a raw
    base in the same directory), hard links to one set of files made by qemu-img."""
    import subprocess

    root = tmp_path_factory.mktemp("scale")
    template = root / "template"
    template.mkdir()

    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True)

    qemu_img("create", "-q", "-f", "raw", str(template / "base.raw"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", str(root / "plain.qcow2"), "64M")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw",
             str(root / "overlay.qcow2"), "16M")
    for i in range(1, VOLUMES):  # base.raw is the first
        name = f"vol-{i:04d}"
        if i % 3 == 0:
            shutil.copyfile(root / "overlay.qcow2", template / f"{name}.qcow2")
        elif i % 3 == 1:
            shutil.copyfile(root / "plain.qcow2", template / f"{name}.qcow2")
        else:
            with open(template / f"{name}.raw", "wb") as f:
                f.truncate(8 << 20)
    names = sorted(os.listdir(template))
    assert len(names) == VOLUMES
    dirs = []
    for host in host_names():
        d = root / host
        d.mkdir()
        for name in names:
            os.link(template / name, d / name)
        dirs.append(d)
    return dirs


@pytest.fixture
def lone_sshd(sshd_fleet: Fleet, tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of this test only (one host uses it), trusted through the console's own
    known_hosts file: it can hang and die without touching the shared fleet."""
    a = sshd_fleet["a"]
    sshd = Sshd("lone", tmp_path / "sshd", a.authorized_keys, a.env_path, a.address)
    sshd.start()
    try:
        yield sshd
    finally:
        sshd.stop()


def write_config(path: Path, fleet: Fleet, pools: list[Path],
                 last_uri: str | None = None) -> Path:
    """h01..h20 alternating between sshd a and b; the last one on ``last_uri``."""
    text = ""
    for n, (name, pool) in enumerate(zip(host_names(), pools, strict=True)):
        uri = fleet.uri("ab"[n % 2])
        if last_uri is not None and n == len(pools) - 1:
            uri = last_uri
        text += (f"[[host]]\nname = '{name}'\nuri = '{uri}'\n"
                 f"[[host.pool]]\nname = 'images'\npath = '{pool}'\n")
    path.write_text(text)
    return path


def assert_cached_once(cache: Cache, hosts: list[str]) -> None:
    """Every host has its VOLUMES volumes in the cache, each exactly once."""
    for host in hosts:
        rows = cache.volume_page(host, "images", limit=10 * VOLUMES)
        names = [r.name for r in rows]
        assert len(names) == VOLUMES, host
        assert len(set(names)) == VOLUMES, host
        assert cache.count_volumes(host, "images") == VOLUMES
        (pool_row,) = cache.pools(host)
        assert pool_row.volumes == VOLUMES and not pool_row.error, host
    backed = cache.volume(hosts[0], "images", "vol-0003.qcow2")
    assert backed is not None and backed.backing is not None
    assert backed.backing.endswith("base.raw")


def test_twenty_hosts_discovered_concurrently(ssh_home: Path, sshd_fleet: Fleet,
                                              tmp_path: Path, pools: list[Path]) -> None:
    conf = write_config(tmp_path / "config.toml", sshd_fleet, pools)
    inv = Inventory(Config.load(conf), Cache(None), read_only=True)
    pooled: list[tuple[str, StorageError | None]] = []
    hosted: list[tuple[str, StorageError | None]] = []
    try:
        inv.refresh(lambda p, e: pooled.append((p.host, e)),
                    lambda h, e: hosted.append((h, e)))
        for host in host_names():
            assert inv.host_status(host).state == HostState.ONLINE, host
        assert sorted(h for h, _ in pooled) == host_names()  # one pool each, once
        assert all(e is None for _, e in pooled + hosted), [e for _, e in pooled + hosted if e]
        assert_cached_once(inv.cache, host_names())
        assert {row.name: row.state for row in inv.cache.hosts()} == \
            dict.fromkeys(host_names(), "online")
        # A second refresh replaces the rows: still each volume once.
        inv.refresh()
        assert_cached_once(inv.cache, host_names())
    finally:
        inv.close()


def send_key(app: StorageConsoleApp, key: str) -> None:
    """A key as the terminal driver sends it (Pilot's press also waits for idle)."""
    event = events.Key(key, key)
    event.set_sender(app)
    assert app._driver is not None
    app._driver.send_message(event)


async def until(condition: object, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_keys_answer_while_twenty_hosts_refresh_and_one_dies(
        ssh_home: Path, sshd_fleet: Fleet, lone_sshd: Sshd, tmp_path: Path,
        pools: list[Path]) -> None:
    known_hosts = tmp_path / "console_known_hosts"
    known_hosts.write_text(lone_sshd.known_hosts_line())
    lone_uri = f"ssh://root@{lone_sshd.address}:{lone_sshd.port}"
    conf = write_config(tmp_path / "config.toml", sshd_fleet, pools, last_uri=lone_uri)
    cache_path = tmp_path / "cache.db"
    # The last session's cache, so the table has rows to move through at start.
    first = Inventory(Config.load(conf), Cache(cache_path), known_hosts=str(known_hosts))
    try:
        first.refresh()
        assert_cached_once(first.cache, host_names())
    finally:
        first.close()

    inv = Inventory(Config.load(conf), Cache(cache_path), known_hosts=str(known_hosts))
    app = make_app(inv, select=("h01", "images"))
    others, doomed = host_names()[:-1], host_names()[-1]
    try:
        async with app.run_test(size=SIZE) as pilot:
            volumes = table(app)
            volumes.focus()
            await pilot.pause()
            assert volumes.row_count == VOLUMES
            # The key is handled while the refresh worker runs: note its state then.
            running_when_moved: list[bool] = []
            original = volumes._set_cursor

            def set_cursor(index: int, *, force: bool = False) -> None:
                before = volumes.cursor
                original(index, force=force)
                if volumes.cursor != before:
                    running_when_moved.append(refresh_running(app))

            volumes._set_cursor = set_cursor  # type: ignore[method-assign]
            lone_sshd.pause()  # h20 hangs: the refresh cannot end before it is killed
            await pilot.press("r")
            assert refresh_running(app)
            for key in "jjjk":
                send_key(app, key)
                count = len(running_when_moved)
                await until(lambda count=count: len(running_when_moved) > count)  # type: ignore[misc]
            assert running_when_moved == [True] * 4
            assert volumes.cursor == 2
            # The other hosts finish while h20 hangs.
            await until(lambda: all(inv.host_status(h).state == HostState.ONLINE
                                    for h in others))
            die(lone_sshd)
            await until(lambda: not refresh_running(app))
            await pilot.pause()
            assert inv.host_status(doomed).state == HostState.OFFLINE
            assert all(inv.host_status(h).state == HostState.ONLINE for h in others)
            assert_cached_once(inv.cache, others)
            # h20's rows stay (stale, with why) and the console still answers keys.
            assert inv.cache.count_volumes(doomed, "images") == VOLUMES
            (stale,) = inv.cache.pools(doomed)
            assert stale.error and "offline" in stale.error
            send_key(app, "k")
            await until(lambda: len(running_when_moved) == 5)
            assert volumes.cursor == 1 and running_when_moved[-1] is False
    finally:
        inv.close()


def die(sshd: Sshd) -> None:
    """A hung host dies: SIGKILL while stopped. (``Sshd.kill`` resumes first, and the
    listener may then accept the waiting connection and fork a session it misses.)"""
    for pid in sshd.paused:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sshd.paused = []
    sshd.stop()


def refresh_running(app: StorageConsoleApp) -> bool:
    workers: list[Worker[object]] = [w for w in app.workers if w.group == "refresh"]
    return any(not w.is_finished for w in workers)

