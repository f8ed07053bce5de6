"""The cache: one transaction per pool refresh, rebuilt after deletion or corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends.model import (
    Capacity,
    Chain,
    ChainLink,
    Health,
    HealthState,
    ImageFormat,
    ImageInfo,
    Pool,
    PoolScan,
    Volume,
)
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from tests.conftest import MakeImage

POOL = Pool("local", "p", "dir", "/p", Capacity(100, 50, 50, 10))
OK = Health(HealthState.OPTIMIZED, ("fine",))


def vol(name: str, capacity: int = 1, backing: str | None = None) -> Volume:
    path = f"/p/{name}"
    links = [ChainLink(path, "qcow2", capacity)]
    if backing:
        links.append(ChainLink(backing, "raw", capacity))
    info = ImageInfo(ImageFormat.QCOW2, capacity)
    return Volume("local", "p", name, path, ImageFormat.QCOW2, capacity, 0, 0.0, info,
                  Chain(tuple(links)), backing=backing, backing_format="raw" if backing else None)


def scan(*names: str) -> PoolScan:
    return PoolScan(POOL, tuple(vol(n) for n in names))


def test_refresh_replaces_rows(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.db")
    cache.replace_pool(scan("a", "b", "c"), [OK] * 3, seen_at=1.0)
    cache.replace_pool(scan("b", "d"), [OK] * 2, seen_at=2.0)
    assert [r.name for r in cache.volume_page("local", "p")] == ["b", "d"]
    (pool,) = cache.pools()
    assert (pool.volumes, pool.capacity, pool.committed, pool.last_seen) == (2, 100, 10, 2.0)


def test_refresh_is_one_transaction(tmp_path: Path) -> None:
    """A refresh that fails midway leaves the previous rows exactly as they were."""
    cache = Cache(tmp_path / "c.db")
    cache.replace_pool(scan(*[f"v{i:04}" for i in range(500)]), [OK] * 500, seen_at=1.0)
    bad = PoolScan(POOL, tuple(vol(f"w{i}") for i in range(300)))
    healths = [OK] * 300

    class Boom(Exception):
        pass

    original = cache._volume_values

    def exploding(v: Volume, h: Health) -> tuple[object, ...]:
        if v.name == "w250":
            raise Boom
        return original(v, h)

    cache._volume_values = exploding  # type: ignore[method-assign]
    with pytest.raises(Boom):
        cache.replace_pool(bad, healths, seen_at=2.0)
    other = Cache(tmp_path / "c.db")  # another connection sees the committed state
    assert other.count_volumes("local", "p") == 500


def test_unchanged_rows_are_not_rewritten(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.db")
    cache.replace_pool(scan("a", "b", "c"), [OK] * 3, seen_at=1.0)
    before = cache.conn.total_changes
    degraded = Health(HealthState.DEGRADED, ("dirty",))
    cache.replace_pool(scan("a", "b", "d"), [OK, degraded, OK], seen_at=2.0)
    # b rewritten, d inserted, c deleted, a's last_seen moved, the pool row, and one
    # sample of the pool's usage history: 6 changes.
    assert cache.conn.total_changes - before == 6
    rows = {r.name: r for r in cache.volume_page("local", "p")}
    assert sorted(rows) == ["a", "b", "d"]
    assert {r.last_seen for r in rows.values()} == {2.0}
    assert rows["b"].health == "degraded"


def test_filter_sort_page(tmp_path: Path) -> None:
    cache = Cache(None)
    vols = tuple(vol(n, c) for n, c in [("alpha", 3), ("beta", 1), ("gamma_1", 2),
                                          ("100%", 5)])
    cache.replace_pool(PoolScan(POOL, vols), [OK] * 4, seen_at=1.0)
    assert cache.count_volumes("local", "p", "a") == 3
    assert cache.count_volumes("local", "p", "%") == 1  # LIKE wildcards are literal
    assert cache.count_volumes("local", "p", "_") == 1
    page = cache.volume_page("local", "p", sort="capacity", descending=True, limit=2)
    assert [r.name for r in page] == ["100%", "alpha"]
    page = cache.volume_page("local", "p", sort="capacity", offset=1, limit=2)
    assert [r.name for r in page] == ["gamma_1", "alpha"]
    with pytest.raises(ValueError):
        cache.volume_page("local", "p", sort="name; DROP TABLE volumes")


def test_rows_round_trip(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.db")
    v = vol("top", 7, backing="/p/base\udcff")
    cache.replace_pool(PoolScan(POOL, (v,)), [Health(HealthState.DEGRADED, ("x", "y"))],
                       seen_at=3.0)
    row = cache.volume("local", "p", "top")
    assert row is not None
    assert (row.path, row.backing, row.chain_depth, row.health, row.reasons) == (
        "/p/top", "/p/base\udcff", 2, "degraded", ("x", "y"))
    assert [link.path for link in row.chain] == ["/p/base\udcff"]
    assert [r.name for r in cache.dependants("local", "/p/base\udcff")] == ["top"]


def test_rebuilt_after_delete(tmp_path: Path, pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "a.qcow2")
    path = tmp_path / "cache.db"
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(path))
    inv.refresh()
    inv.cache.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    cache = Cache(path)
    assert cache.pools() == []
    Inventory(Config.for_targets([str(pool_dir)]), cache).refresh()
    assert [r.name for r in cache.volume_page("local", str(pool_dir))] == ["a.qcow2"]


def test_corrupt_cache_moved_aside_and_rebuilt(tmp_path: Path, pool_dir: Path,
                                               make_image: MakeImage) -> None:
    make_image(pool_dir / "a.qcow2")
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not a database" * 100)
    cache = Cache(path)
    assert cache.warning and "moved it to" in cache.warning
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    Inventory(Config.for_targets([str(pool_dir)]), cache).refresh()
    assert cache.count_volumes("local", str(pool_dir)) == 1


def test_other_schema_version_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE volumes (x)")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    cache = Cache(path)
    cache.replace_pool(scan("a"), [OK], seen_at=1.0)
    assert cache.count_volumes("local", "p") == 1


def test_failed_refresh_keeps_rows_and_error(tmp_path: Path, pool_dir: Path,
                                             make_image: MakeImage) -> None:
    make_image(pool_dir / "a.qcow2")
    cache = Cache(tmp_path / "c.db")
    inv = Inventory(Config.for_targets([str(pool_dir)]), cache)
    inv.refresh()
    pool_dir.rename(pool_dir.with_name("gone"))
    errors: list[str] = []
    inv.refresh(lambda pool, err: errors.append(str(err)))
    assert len(errors) == 1 and "does not exist" in errors[0]
    (row,) = cache.pools()
    assert row.error and "does not exist" in row.error
    assert cache.count_volumes("local", str(pool_dir)) == 1  # stale, still shown


def test_domains_using_a_volume_round_trip(tmp_path: Path) -> None:
    from dataclasses import replace

    from backends.model import Health, HealthState

    cache = Cache(tmp_path / "c.db")
    used = replace(vol("disk"), used_by=("web", "db"), used_by_running=("db",), in_use=True)
    cache.replace_pool(PoolScan(Pool("local", "p", "dir", "/p"), (used, vol("free"))),
                       [Health(HealthState.OPTIMIZED)] * 2)
    row = cache.volume("local", "p", "disk")
    assert row is not None and row.used_by == (("web", False), ("db", True)) and row.in_use
    free = cache.volume("local", "p", "free")
    assert free is not None and free.used_by == ()
