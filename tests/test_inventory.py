"""The inventory's actions: each re-probes on disk, refuses what is unsafe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends.contract import InvalidRequest, ReadOnlyViolation, VolumeBusy
from backends.model import ImageFormat
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from tests.conftest import MakeImage


def inventory(pool_dir: Path, *, read_only: bool = False) -> tuple[Inventory, str]:
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None), read_only=read_only)
    return inv, str(pool_dir.resolve())


def test_create_on_backing_and_refresh(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "3M")
    inv, pool = inventory(pool_dir)
    vol = inv.create_volume("local", pool, "disk", ImageFormat.QCOW2, 0, backing="base.raw")
    assert vol.capacity == 3 << 20 and vol.backing == str(pool_dir.resolve() / "base.raw")
    info = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2",
                           str(pool_dir / "disk")], capture_output=True, text=True, check=True)
    assert '"backing-filename": "base.raw"' in info.stdout
    assert '"backing-filename-format": "raw"' in info.stdout
    row = inv.cache.volume("local", pool, "disk")
    assert row is not None and row.chain_depth == 2


def test_create_smaller_than_backing_refused(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "3M")
    inv, pool = inventory(pool_dir)
    with pytest.raises(InvalidRequest, match="smaller than the backing"):
        inv.create_volume("local", pool, "disk", ImageFormat.QCOW2, 1 << 20,
                          backing="base.raw")
    assert not (pool_dir / "disk").exists()


def test_delete_plans(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "1M")
    make_image(pool_dir / "top", "qcow2", "1M", backing="base.raw", backing_fmt="raw")
    make_image(pool_dir / "empty", "qcow2", "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", str(pool_dir / "top")],
                   check=True, capture_output=True)
    inv, pool = inventory(pool_dir)
    base = inv.plan_delete("local", pool, "base.raw")
    assert base.refused and "top" in base.refused
    with pytest.raises(VolumeBusy, match="based on it"):
        inv.delete_volume("local", pool, "base.raw", typed_name="base.raw")
    assert (pool_dir / "base.raw").exists()
    top = inv.plan_delete("local", pool, "top")
    assert top.holds_data and not top.refused
    with pytest.raises(InvalidRequest, match="holds data"):
        inv.delete_volume("local", pool, "top", typed_name="to")
    assert (pool_dir / "top").exists()
    inv.delete_volume("local", pool, "top", typed_name="top")
    assert not (pool_dir / "top").exists()
    assert not inv.plan_delete("local", pool, "empty").holds_data
    inv.delete_volume("local", pool, "empty")
    assert sorted(p.name for p in pool_dir.iterdir()) == ["base.raw"]
    assert [r.name for r in inv.cache.volume_page("local", pool)] == ["base.raw"]


def test_dependant_in_another_pool_blocks_delete(tmp_path: Path, make_image: MakeImage) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_image(a / "base.raw", "raw", "1M")
    make_image(b / "top", "qcow2", "1M", backing=str(a / "base.raw"), backing_fmt="raw")
    inv = Inventory(Config.for_targets([str(a), str(b)]), Cache(None))
    plan = inv.plan_delete("local", str(a.resolve()), "base.raw")
    assert plan.dependants == (str(b.resolve() / "top"),)


def test_read_only_refuses_below_the_ui(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "keep", "qcow2")
    inv, pool = inventory(pool_dir, read_only=True)
    assert not inv.capabilities(inv.pool("local", pool)).create
    with pytest.raises(ReadOnlyViolation, match="read-only"):
        inv.create_volume("local", pool, "new", ImageFormat.RAW, 4096)
    with pytest.raises(ReadOnlyViolation):
        inv.delete_volume("local", pool, "keep", typed_name="keep")
    assert sorted(p.name for p in pool_dir.iterdir()) == ["keep"]
    inv.refresh()  # reading is fine
    assert inv.cache.count_volumes("local", pool) == 1
