"""Fixed data for the UI tests: a cache filled with made-up volumes, and inventories.

Import what you need from here (``from tests.conftest_ui import ...``). The demo data is
deterministic (fixed ``last_seen`` and clock), so snapshots stay byte-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from backends.model import (
    Capacity,
    Chain,
    ChainLink,
    Health,
    HealthState,
    Host,
    ImageFormat,
    ImageInfo,
    LinkProblem,
    Pool,
    PoolScan,
    Volume,
)
from console.audit import AuditLog
from console.cache import Cache
from console.config import Config, HostConfig, journal_path
from console.inventory import Inventory
from console.jobs.journal import Journal
from console.jobs.runner import Runner

NOW = 1_700_000_000.0  # the fixed clock of UI tests
G = 1 << 30
M = 1 << 20


def clock() -> float:
    return NOW


def volume(pool: Pool, name: str, *, fmt: ImageFormat = ImageFormat.QCOW2,
           capacity: int = 20 * G, allocation: int = 200 * M, readonly: bool = False,
           chain: Sequence[tuple[str, str, int]] = (), problem: LinkProblem | None = None,
           problem_path: str | None = None, version: int = 3) -> Volume:
    """A volume of ``pool``; ``chain`` lists its backing links (path, format, capacity)."""
    path = os.path.join(pool.path, name)
    links = (ChainLink(path, str(fmt), capacity),
             *(ChainLink(p, f, c) for p, f, c in chain))
    backing = chain[0][0] if chain else problem_path
    backing_format = chain[0][1] if chain else None
    info = ImageInfo(format=fmt, virtual_size=capacity,
                     version=version if fmt == ImageFormat.QCOW2 else None,
                     backing_file=os.path.basename(backing) if backing else None,
                     backing_format=backing_format)
    return Volume(host=pool.host, pool=pool.name, name=name, path=path, format=fmt,
                  capacity=capacity, allocation=allocation, mtime=NOW - 86400, info=info,
                  chain=Chain(links, problem, problem_path), backing=backing,
                  backing_format=backing_format, readonly=readonly)


def fill(cache: Cache, pool: Pool, volumes: Sequence[tuple[Volume, Health]], *,
         capacity: Capacity, seen_at: float = NOW - 90) -> None:
    scan = PoolScan(replace(pool, capacity=capacity), tuple(v for v, _ in volumes))
    cache.replace_pool(scan, [h for _, h in volumes], seen_at=seen_at)


OK = Health(HealthState.OPTIMIZED)

IMAGES = Pool("local", "images", "dir", "/srv/images")
ISO = Pool("local", "iso", "dir", "/srv/iso")
SCRATCH = Pool("local", "scratch", "dir", "/srv/scratch")  # never scanned
GONE = Pool("local", "gone", "dir", "/srv/gone")  # its last refresh failed
ARCHIVE = Pool("backup", "archive", "dir", "/mnt/archive")  # stale and over-committed


def images_volumes() -> list[tuple[Volume, Health]]:
    base = "/srv/images/base-debian12.qcow2"
    return [
        (volume(IMAGES, "base-debian12.qcow2", readonly=True, allocation=1900 * M), OK),
        (volume(IMAGES, "web01.qcow2", allocation=812 * M,
                chain=[(base, "qcow2", 20 * G)]), OK),
        (volume(IMAGES, "web02.qcow2", allocation=640 * M,
                chain=[(base, "qcow2", 20 * G)]), OK),
        (volume(IMAGES, "db01.raw", fmt=ImageFormat.RAW, capacity=100 * G,
                allocation=42 * G), OK),
        (volume(IMAGES, "legacy-v2.qcow2", version=2, allocation=3 * G),
         Health(HealthState.DEGRADED,
                ("qcow2 compat 0.10 (v2): no zero clusters or lazy refcounts",))),
        (volume(IMAGES, "orphan.qcow2", problem=LinkProblem.MISSING,
                problem_path="/srv/images/deleted-base.qcow2"),
         Health(HealthState.BROKEN,
                ("backing file /srv/images/deleted-base.qcow2 is missing",))),
        (volume(IMAGES, "deep.qcow2", allocation=64 * M,
                chain=[("/srv/images/deep-3.qcow2", "qcow2", 20 * G),
                       ("/srv/images/deep-2.qcow2", "qcow2", 20 * G),
                       ("/srv/images/deep-1.qcow2", "qcow2", 20 * G),
                       (base, "qcow2", 20 * G)]),
         Health(HealthState.DEGRADED, ("chain of 5 images is deeper than 4",))),
        (volume(IMAGES, "reporting-database-replica-03-with-a-very-long-name.qcow2",
                capacity=500 * G, allocation=120 * G), OK),
        (volume(IMAGES, "scratch.img", fmt=ImageFormat.RAW, capacity=10 * G,
                allocation=0), OK),
        (volume(IMAGES, "esc\x1b[31mred.raw", fmt=ImageFormat.RAW, capacity=1 * G,
                allocation=0), OK),
    ]


def demo_cache(path: str | os.PathLike[str] | None = None) -> Cache:
    """Two hosts, five pools in every state a pool can be in; fixed times."""
    cache = Cache(os.fspath(path) if path is not None else None)
    fill(cache, IMAGES, images_volumes(),
         capacity=Capacity(900 * G, 310 * G, 590 * G, 700 * G))
    fill(cache, ISO, [
        (volume(ISO, "debian-12.7.0-amd64-netinst.iso", fmt=ImageFormat.ISO,
                capacity=631 * M, allocation=631 * M, readonly=True), OK),
        (volume(ISO, "virtio-win-0.1.262.iso", fmt=ImageFormat.ISO, capacity=708 * M,
                allocation=708 * M, readonly=True), OK),
    ], capacity=Capacity(100 * G, 60 * G, 40 * G, 2 * G))
    fill(cache, GONE, [(volume(GONE, "old.qcow2"), OK)],
         capacity=Capacity(50 * G, 10 * G, 40 * G, 20 * G), seen_at=NOW - 3 * 3600)
    cache.record_pool_error("local", "gone", "dir", "/srv/gone",
                            "host 'local', pool 'gone': directory /srv/gone does not exist "
                            "(create it or remove the pool from the config)")
    fill(cache, ARCHIVE, [
        (volume(ARCHIVE, f"backup-2024-{month:02d}.qcow2", capacity=400 * G,
                allocation=90 * G), OK) for month in range(1, 7)
    ], capacity=Capacity(1000 * G, 540 * G, 460 * G, 2400 * G), seen_at=NOW - 2 * 86400)
    for host in ("local", "backup"):
        cache.record_host(host, "local", "online", None, NOW - 90)
    return cache


def demo_config() -> Config:
    return Config((HostConfig(Host("local"), (IMAGES, ISO, SCRATCH, GONE)),
                   HostConfig(Host("backup"), (ARCHIVE,))), max_chain_depth=4)


def demo_inventory(*, read_only: bool = False,
                   path: str | os.PathLike[str] | None = None) -> Inventory:
    return Inventory(demo_config(), demo_cache(path), read_only=read_only)


BIG = Pool("local", "big", "dir", "/srv/big")


def big_name(index: int) -> str:
    return f"vm-{index:06d}.qcow2"


def big_inventory(count: int) -> Inventory:
    """One pool of ``count`` volumes, written with one ``replace_pool``."""
    cache = Cache(None)
    template = volume(BIG, big_name(0))
    volumes = tuple(replace(template, name=big_name(i), path=f"/srv/big/{big_name(i)}",
                            capacity=(i % 50 + 1) * G, allocation=(i % 7) * M)
                    for i in range(count))
    healths = [OK] * count
    cache.replace_pool(PoolScan(replace(BIG, capacity=Capacity(10_000 * G, 10 * G,
                                                               9_990 * G, 0)), volumes),
                       healths, seen_at=NOW - 30)
    config = Config((HostConfig(Host("local"), (BIG,)),))
    return Inventory(config, cache)


LONG_PATH = "/srv/storage/tenants/acme-corporation/production/vm-images/tier-1"


def long_path_inventory() -> Inventory:
    """Two pools named by their paths, one of them long (as a directory target is)."""
    cache = Cache(None)
    pools = (Pool("local", LONG_PATH, "dir", LONG_PATH), Pool("local", "/srv/iso", "dir",
                                                              "/srv/iso"))
    for pool in pools:
        volumes = tuple(volume(pool, f"vm-{i:02d}.qcow2") for i in range(3))
        cache.replace_pool(PoolScan(replace(pool, capacity=Capacity(100 * G, 30 * G,
                                                                    70 * G, 0)), volumes),
                           [OK] * len(volumes), seen_at=NOW - 30)
    return Inventory(Config((HostConfig(Host("local"), pools),)), cache)


def real_inventory(*dirs: str | os.PathLike[str], cache_path: str | os.PathLike[str],
                   read_only: bool = False, audit: bool = False) -> Inventory:
    """The real thing over directories on disk (pools named by their paths); ``audit``
    records every command in the audit log beside the (per-test XDG) journal."""
    config = Config.for_targets([str(d) for d in dirs])
    return Inventory(config, Cache(os.fspath(cache_path)), read_only=read_only,
                     audit=AuditLog(journal_path()) if audit else None)


def runner_for(inventory: Inventory, journal: str | os.PathLike[str] | None = None) -> Runner:
    """A runner over ``journal`` (default: the XDG one, which each test has of its own)."""
    return Runner(Journal(journal if journal is not None else journal_path()), inventory)


JOB_ROWS: tuple[dict[str, object], ...] = (
    {"id": 6, "kind": "delete", "params": {"host": "local", "pool": "images",
                                           "volume": "old.qcow2", "typed_name": None},
     "volume": "old.qcow2", "state": "aborted", "stage": 1, "stages": 2,
     "stage_label": "check", "error": "cancelled", "created": NOW - 600,
     "started": NOW - 600, "finished": NOW - 599},
    {"id": 7, "kind": "create", "params": {"host": "local", "pool": "images",
                                           "volume": "web03.qcow2", "format": "qcow2",
                                           "capacity": 20 * G, "backing": None},
     "volume": "web03.qcow2", "state": "done", "stage": 2, "stages": 2,
     "stage_label": "publish", "percent": 100.0, "created": NOW - 130,
     "started": NOW - 130, "finished": NOW - 128},
    {"id": 8, "kind": "copy", "params": {"host": "local", "pool": "images",
                                         "volume": "db01.raw", "dest_pool": "iso",
                                         "dest_name": "db01-copy.qcow2", "format": "qcow2",
                                         "overwrite": False},
     "volume": "db01.raw", "state": "running", "stage": 2, "stages": 3,
     "stage_label": "copy", "percent": 42.0, "done_bytes": 42 * G, "total_bytes": 100 * G,
     "throughput": 180.0 * M, "created": NOW - 240, "started": NOW - 239},
    {"id": 9, "kind": "resize", "params": {"host": "local", "pool": "images",
                                           "volume": "web01.qcow2", "capacity": 40 * G,
                                           "shrink": False},
     "volume": "web01.qcow2", "state": "failed", "stage": 2, "stages": 2,
     "stage_label": "resize",
     "error": "host 'local', pool 'images', volume 'web01.qcow2': a running QEMU has it "
              "open for writing: it is not resized (stop the VM (or qemu-nbd) using it "
              "first)", "created": NOW - 100, "started": NOW - 100, "finished": NOW - 99},
    {"id": 10, "kind": "copy", "params": {"host": "local", "pool": "images",
                                          "volume": "legacy-v2.qcow2", "dest_pool": "images",
                                          "dest_name": "legacy-v3.qcow2", "format": None,
                                          "overwrite": False},
     "volume": "legacy-v2.qcow2", "state": "interrupted", "stage": 2, "stages": 3,
     "stage_label": "copy", "percent": 17.0,
     "error": "interrupted while running: the process running it ended",
     "created": NOW - 90, "started": NOW - 90},
    {"id": 11, "kind": "delete", "params": {"host": "local", "pool": "images",
                                            "volume": "scratch.img", "typed_name": None},
     "volume": "scratch.img", "state": "pending", "stage": 0, "stages": 1,
     "created": NOW - 10},
)


def demo_journal(path: str | os.PathLike[str] | None = None) -> Journal:
    """A journal holding ``JOB_ROWS``: fixed times, every state. Active jobs name this
    process as their owner, so recovery leaves them alone."""
    journal = Journal(path if path is not None else journal_path())
    with journal.transaction() as conn:
        for row in JOB_ROWS:
            values = {"host": "local", "pool": "images", "who": "ops@console-1",
                      "owner": journal.owner if row["state"] in ("pending", "running")
                      else None, **row}
            values["params"] = json.dumps(values["params"])
            columns = ",".join(values)
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES "
                         f"({','.join('?' * len(values))})", list(values.values()))
    return journal


SLOW_DATA = 512 << 20


@pytest.fixture(scope="session")
def slow_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qcow2 holding 512 MiB of data written by qemu-io as compressed clusters: about
    a megabyte on disk, and a copy of it (decompressing) lasts long enough to be
    interrupted. Import it into a test module to use it; copy it before changing it."""
    path = tmp_path_factory.mktemp("slow") / "slow.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True,
                   capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -c -P 0x5a 0 {SLOW_DATA}",
                    str(path)], check=True, capture_output=True)
    return path


def chain_volumes() -> list[tuple[Volume, Health]]:
    """For the chain view: a chain of 3 across pools (an overlay on web01, itself on the
    base) and a snapshot nothing is based on."""
    base = "/srv/images/base-debian12.qcow2"
    return [
        (volume(SCRATCH, "web01-test.qcow2", allocation=12 * M,
                chain=[("/srv/images/web01.qcow2", "qcow2", 20 * G),
                       (base, "qcow2", 20 * G)]), OK),
        (volume(SCRATCH, "db01-before-upgrade.qcow2", readonly=True, allocation=5 * G), OK),
    ]


def chain_inventory() -> Inventory:
    """The demo inventory with ``chain_volumes`` in the scratch pool."""
    inventory = demo_inventory()
    fill(inventory.cache, SCRATCH, chain_volumes(),
         capacity=Capacity(200 * G, 6 * G, 194 * G, 40 * G))
    return inventory
