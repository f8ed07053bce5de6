"""Health from real images: every reason the foundation issue names."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from backends.drivers.dir.driver import DirDriver
from backends.model import Health, HealthState, Pool
from backends.transport.local import LocalTransport
from console.health import assess
from tests.conftest import MakeImage


def health_of(pool_dir: Path, max_depth: int = 8) -> dict[str, Health]:
    scan = DirDriver(LocalTransport(), (str(pool_dir),)).scan_pool(
        Pool("local", "p", "dir", str(pool_dir)))
    return {v.name: assess(v, max_depth) for v in scan.volumes}


def set_incompatible_bits(path: Path, bits: int) -> None:
    with open(path, "r+b") as f:
        f.seek(72)
        (old,) = struct.unpack(">Q", f.read(8))
        f.seek(72)
        f.write(struct.pack(">Q", old | bits))


def test_clean_images_are_optimized(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "a.raw", "raw")
    make_image(pool_dir / "b.qcow2", "qcow2", backing="a.raw", backing_fmt="raw")
    h = health_of(pool_dir)
    assert h["a.raw"] == Health(HealthState.OPTIMIZED, ("header clean, no backing",))
    assert h["b.qcow2"].state == HealthState.OPTIMIZED
    assert h["b.qcow2"].reasons == ("header clean, chain of 2",)


def test_broken_reasons(pool_dir: Path, make_image: MakeImage,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pool_dir)  # qemu-img resolves data_file against the cwd
    make_image(pool_dir / "corrupt", "qcow2")
    set_incompatible_bits(pool_dir / "corrupt", 2)
    make_image(pool_dir / "unknown-bit", "qcow2")
    set_incompatible_bits(pool_dir / "unknown-bit", 1 << 40)
    make_image(pool_dir / "truncated", "qcow2")
    os.truncate(pool_dir / "truncated", 40)
    make_image(pool_dir / "ext", "qcow2", options="data_file=ext.bin")
    h = health_of(pool_dir)
    assert h["corrupt"].state == HealthState.BROKEN
    assert any("corrupt bit" in r for r in h["corrupt"].reasons)
    assert h["unknown-bit"].state == HealthState.BROKEN
    assert any("0x10000000000" in r for r in h["unknown-bit"].reasons)
    assert h["truncated"].state == HealthState.BROKEN
    assert any("truncated" in r for r in h["truncated"].reasons)
    assert h["ext"].state == HealthState.BROKEN
    assert any("external data file 'ext.bin'" in r for r in h["ext"].reasons)
    assert h["ext.bin"].state == HealthState.OPTIMIZED  # the data file itself is raw


def test_degraded_reasons(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "dirty", "qcow2", options="lazy_refcounts=on")
    set_incompatible_bits(pool_dir / "dirty", 1)
    make_image(pool_dir / "old", "qcow2", options="compat=0.10")
    make_image(pool_dir / "l0", "raw")
    for i in range(1, 5):
        make_image(pool_dir / f"l{i}", "qcow2", backing=f"l{i - 1}",
                   backing_fmt="raw" if i == 1 else "qcow2")
    h = health_of(pool_dir, max_depth=3)
    assert h["dirty"].state == HealthState.DEGRADED
    assert any("dirty bit" in r for r in h["dirty"].reasons)
    assert h["old"].state == HealthState.DEGRADED
    assert any("compat 0.10" in r for r in h["old"].reasons)
    assert h["l2"].state == HealthState.OPTIMIZED
    assert h["l4"].state == HealthState.DEGRADED
    assert h["l4"].reasons == ("chain of 5 images is deeper than 3",)

