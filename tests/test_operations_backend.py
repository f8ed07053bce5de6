"""The backend half of jobs on real images: resize, growfs, copy (full, incremental,
overwrite, cancelled, out of space), measure, in-use detection, the ext superblock
parser, and cancellable streaming commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends import filesystems
from backends.contract import (
    Cancelled,
    CommandFailed,
    InvalidRequest,
    NoSpace,
    NotSupported,
    ReadOnlyViolation,
    StorageError,
    VolumeBusy,
    VolumeExists,
)
from backends.drivers.dir.driver import DirDriver
from backends.model import ImageFormat, Pool, Progress
from backends.transport.local import LocalTransport
from backends.transport.scanner import TEMP_PREFIX
from tests.conftest import PATIENCE, MakeImage, write_file

MiB = 1 << 20


def driver_for(*roots: Path) -> DirDriver:
    return DirDriver(LocalTransport(), tuple(str(r) for r in roots))


def pool_at(path: Path, name: str = "p") -> Pool:
    return Pool("local", name, "dir", str(path))


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True)


def info(path: Path, fmt: str) -> dict[str, object]:
    out = run("qemu-img", "info", "-U", "--output=json", "-f", fmt, str(path)).stdout
    data: dict[str, object] = json.loads(out)
    return data


def write(path: Path, fmt: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for command in commands:
        argv += ["-c", command]
    run(*argv, str(path))


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
                          capture_output=True).returncode == 0


def temporaries(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


def mkfs(path: Path, kind: str = "ext4", size: str | None = None, *options: str) -> None:
    run(f"mkfs.{kind}", "-q", "-F", *options, str(path), *([size] if size else []))


def dumpe2fs_size(path: Path) -> int:
    out = run("dumpe2fs", "-h", str(path)).stdout.decode()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


# -- the ext superblock -----------------------------------------------------------


def reader(path: Path) -> filesystems.Read:
    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    return read


@pytest.mark.parametrize(("kind", "options", "block_size"), [
    ("ext2", (), 1024), ("ext3", ("-b", "2048"), 2048),
    ("ext4", ("-O", "^64bit", "-b", "4096"), 4096), ("ext4", ("-O", "64bit", "-b", "1024"), 1024)])
def test_ext_superblock_of_real_filesystems(tmp_path: Path, kind: str,
                                            options: tuple[str, ...], block_size: int) -> None:
    image = write_file(tmp_path / "fs.img", size=48 * MiB)
    mkfs(image, kind, "40M", *options)  # the file system ends before the image does
    fs = filesystems.ext_filesystem(reader(image))
    assert fs is not None and fs.kind == kind and fs.block_size == block_size
    assert fs.size == 40 * MiB == dumpe2fs_size(image)
    assert fs.bits64 == ("64bit" in options)  # e2fsprogs 1.47 makes ext4 64bit by default
    assert filesystems.ext_filesystem_size(reader(image)) == 40 * MiB


def test_ext_superblock_64bit_high_half(tmp_path: Path) -> None:
    """The block count's high 32 bits count only with the 64bit feature."""
    image = write_file(tmp_path / "fs.img", size=8 * MiB)
    mkfs(image, "ext4", None, "-O", "64bit")
    sb = bytearray(reader(image)(1024, 1024))
    sb[0x150:0x154] = (1).to_bytes(4, "little")
    fs = filesystems.parse_ext_superblock(bytes(sb))
    assert fs is not None and fs.block_count == (1 << 32) + 8 * MiB // fs.block_size
    sb[0x60:0x64] = (int.from_bytes(sb[0x60:0x64], "little") & ~0x80).to_bytes(4, "little")
    narrow = filesystems.parse_ext_superblock(bytes(sb))
    assert narrow is not None and narrow.size == 8 * MiB


def test_no_ext_filesystem(tmp_path: Path, make_image: MakeImage) -> None:
    assert filesystems.ext_filesystem_size(reader(write_file(tmp_path / "z", size=MiB))) is None
    assert filesystems.ext_filesystem_size(reader(write_file(tmp_path / "short", b"x"))) is None
    qcow2 = make_image(tmp_path / "q", "qcow2", "8M")
    assert filesystems.ext_filesystem_size(reader(qcow2)) is None
    sb = bytearray(1024)
    sb[0x38:0x3A] = b"\x53\xef"
    sb[0x04:0x08] = (100).to_bytes(4, "little")
    sb[0x18:0x1C] = (30).to_bytes(4, "little")  # 1 GiB blocks: not ext
    assert filesystems.parse_ext_superblock(bytes(sb)) is None


# -- resize -----------------------------------------------------------------------


def test_grow_raw_and_qcow2(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "r", "raw", "16M")
    make_image(pool_dir / "q", "qcow2", "16M")
    seen: list[Progress] = []
    for name, fmt in (("r", "raw"), ("q", "qcow2")):
        vol = d.resize_volume(pool, name, 48 * MiB, progress=seen.append)
        assert vol.capacity == 48 * MiB
        assert info(pool_dir / name, fmt)["virtual-size"] == 48 * MiB
    assert seen[-1].done == seen[-1].total == 48 * MiB
    assert d.resize_volume(pool, "q", 48 * MiB).capacity == 48 * MiB  # nothing to do
    assert temporaries(pool_dir) == []


def test_bad_sizes_and_shrink_without_flag_refused(pool_dir: Path,
                                                   make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "r", "raw", "32M")
    for size in (0, -1):
        with pytest.raises(InvalidRequest, match="larger than 0"):
            d.resize_volume(pool, "r", size)
    with pytest.raises(InvalidRequest, match="shrink") as err:
        d.resize_volume(pool, "r", 16 * MiB)
    assert "volume 'r'" in str(err.value)
    assert os.path.getsize(pool_dir / "r") == 32 * MiB
    make_image(pool_dir / "q", "qcow2", "1M")
    with pytest.raises(InvalidRequest, match="multiple of 512"):
        d.resize_volume(pool, "q", 2000001)
    assert d.resize_volume(pool, "r", 40000001).capacity == 40000001  # raw: any size


def test_shrink_raw_keeps_its_ext4(pool_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    image = write_file(pool_dir / "fs.raw", size=64 * MiB)
    mkfs(image, "ext4", "32M")
    with pytest.raises(InvalidRequest, match=r"ext4 file system takes 33554432 bytes") as err:
        d.resize_volume(pool, "fs.raw", 16 * MiB, shrink=True)
    assert "resize2fs" in str(err.value)
    assert os.path.getsize(image) == 64 * MiB
    assert d.resize_volume(pool, "fs.raw", 40 * MiB, shrink=True).capacity == 40 * MiB
    assert d.resize_volume(pool, "fs.raw", 32 * MiB, shrink=True).capacity == 32 * MiB
    run("e2fsck", "-f", "-n", str(image))  # intact


def test_shrink_qcow2(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "q", "qcow2", "64M")
    write(pool_dir / "q", "qcow2", "write -P 7 0 1M")
    assert d.resize_volume(pool, "q", 32 * MiB, shrink=True).capacity == 32 * MiB
    assert info(pool_dir / "q", "qcow2")["virtual-size"] == 32 * MiB
    # An ext4 inside a qcow2 is read through qemu-img dd, and kept whole too.
    raw = write_file(pool_dir / "fs.raw", size=64 * MiB)
    mkfs(raw, "ext4", "48M")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(pool_dir / "fs.q"))
    with pytest.raises(InvalidRequest, match="ext4 file system takes 50331648 bytes"):
        d.resize_volume(pool, "fs.q", 32 * MiB, shrink=True)
    assert d.resize_volume(pool, "fs.q", 48 * MiB, shrink=True).capacity == 48 * MiB
    assert temporaries(pool_dir) == []


def test_a_preallocated_raw_file_stays_preallocated_when_grown(pool_dir: Path,
                                                              make_image: MakeImage) -> None:
    """A grow that left a hole would let the pool fill under a running guest later: a
    raw file whose every byte was allocated is grown allocated; a sparse one stays sparse."""
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    (pool_dir / "full.raw").write_bytes(b"\1" * (4 * MiB))
    make_image(pool_dir / "sparse.raw", "raw", "4M")
    assert d.measure_resize(pool, "full.raw", 12 * MiB) == 8 * MiB
    assert d.measure_resize(pool, "sparse.raw", 12 * MiB) == 0
    grown = d.resize_volume(pool, "full.raw", 12 * MiB)
    assert grown.capacity == 12 * MiB and grown.allocation >= 12 * MiB
    assert (pool_dir / "full.raw").read_bytes()[:4 * MiB] == b"\1" * (4 * MiB)
    assert d.resize_volume(pool, "sparse.raw", 12 * MiB).allocation < MiB
    # A qcow2 takes a new L1 table only past what its table maps (512M a cluster of 64K).
    make_image(pool_dir / "q.qcow2", "qcow2", "8M")
    assert d.measure_resize(pool, "q.qcow2", 512 * MiB) == 0
    assert d.measure_resize(pool, "q.qcow2", 1024 * MiB) == 64 * 1024


def test_resize_refuses_snapshots_and_broken_chains(pool_dir: Path,
                                                    make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "snap", "qcow2", "8M")
    os.chmod(pool_dir / "snap", 0o444)
    with pytest.raises(InvalidRequest, match="snapshot"):
        d.resize_volume(pool, "snap", 16 * MiB)
    make_image(pool_dir / "b", "raw", "8M")
    make_image(pool_dir / "top", "qcow2", "8M", backing="b", backing_fmt="raw")
    os.unlink(pool_dir / "b")
    with pytest.raises(InvalidRequest, match="backing chain is broken"):
        d.resize_volume(pool, "top", 16 * MiB)


# -- growfs -----------------------------------------------------------------------


def test_growfs_fills_the_image(pool_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    image = write_file(pool_dir / "fs.raw", size=32 * MiB)
    mkfs(image, "ext4")
    d.resize_volume(pool, "fs.raw", 80 * MiB)
    assert dumpe2fs_size(image) == 32 * MiB
    labels: list[str] = []
    vol = d.growfs_volume(pool, "fs.raw", progress=lambda p: labels.append(p.label))
    assert dumpe2fs_size(image) == 80 * MiB and vol.capacity == 80 * MiB
    assert labels[0] == "e2fsck" and labels[-1] == "resize2fs"
    assert d.growfs_volume(pool, "fs.raw").capacity == 80 * MiB  # fills it already


def test_growfs_not_supported(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "q", "qcow2", "8M")
    with pytest.raises(NotSupported, match="raw images only"):
        d.growfs_volume(pool, "q")
    write_file(pool_dir / "empty.raw", size=8 * MiB)
    with pytest.raises(NotSupported, match="no ext2/3/4 file system starts at offset 0"):
        d.growfs_volume(pool, "empty.raw")
    mbr = bytearray(4096)
    mbr[510:512] = b"\x55\xaa"
    write_file(pool_dir / "disk.raw", bytes(mbr), size=8 * MiB)
    with pytest.raises(NotSupported, match="partition table"):
        d.growfs_volume(pool, "disk.raw")


def test_growfs_refuses_a_mounted_image(pool_dir: Path, tmp_path: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    image = write_file(pool_dir / "fs.raw", size=16 * MiB)
    mkfs(image, "ext4", "8M")
    with mounted(image, tmp_path / "mnt"), pytest.raises(VolumeBusy, match="mounted"):
        d.growfs_volume(pool, "fs.raw")
    assert dumpe2fs_size(image) == 8 * MiB


# -- copy -------------------------------------------------------------------------


def test_copy_raw_to_qcow2_to_raw_stays_sparse(tmp_path: Path, pool_dir: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    d = driver_for(pool_dir, other)
    pool, dest = pool_at(pool_dir), pool_at(other, "o")
    src = write_file(pool_dir / "src.raw", size=1 << 30)
    write(src, "raw", "write -P 1 0 1M", "write -P 2 512M 1M", "write -P 3 1023M 1M")
    q = d.copy_volume(pool, "src.raw", dest, "c.qcow2", fmt=ImageFormat.QCOW2)
    assert q.format == ImageFormat.QCOW2 and q.capacity == 1 << 30
    back = d.copy_volume(dest, "c.qcow2", pool, "back.raw", fmt=ImageFormat.RAW)
    assert back.format == ImageFormat.RAW
    assert identical(src, "raw", other / "c.qcow2", "qcow2")
    assert identical(src, "raw", pool_dir / "back.raw", "raw")
    assert os.stat(pool_dir / "back.raw").st_blocks * 512 < 8 * MiB  # holes stay holes
    assert os.stat(other / "c.qcow2").st_blocks * 512 < 8 * MiB
    same = d.copy_volume(pool, "src.raw", pool, "same")  # the format is kept
    assert same.format == ImageFormat.RAW and same.allocation < 8 * MiB
    assert temporaries(pool_dir) == temporaries(other) == []


def test_copy_onto_existing_name_refused(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "src", "qcow2", "8M")
    write_file(pool_dir / "taken", b"precious")
    before = os.stat(pool_dir / "taken")
    with pytest.raises(VolumeExists, match="overwrite"):
        d.copy_volume(pool, "src", pool, "taken")
    after = os.stat(pool_dir / "taken")
    assert (pool_dir / "taken").read_bytes() == b"precious"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(os.listdir(pool_dir)) == ["src", "taken"]
    with pytest.raises(InvalidRequest, match="onto itself"):
        d.copy_volume(pool, "src", pool, "src", overwrite=True)
    with pytest.raises(InvalidRequest, match="temporary name"):
        d.copy_volume(pool, "src", pool, "new", temp_name="no-prefix")


def test_overwrite_replaces_only_at_the_end(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    src = make_image(pool_dir / "src", "raw", "64M")
    write(src, "raw", "write -P 9 0 32M")
    target = write_file(pool_dir / "target", b"old data", size=MiB)
    inode = os.stat(target).st_ino
    during: list[tuple[bytes, int]] = []

    def watch(p: Progress) -> None:
        during.append((target.read_bytes()[:8], os.stat(target).st_ino))

    vol = d.copy_volume(pool, "src", pool, "target", overwrite=True, progress=watch,
                        temp_name=f"{TEMP_PREFIX}7-target")
    assert during and all(seen == (b"old data", inode) for seen in during)
    assert vol.capacity == 64 * MiB and identical(src, "raw", target, "raw")
    assert os.stat(target).st_ino != inode  # renamed over, never rewritten in place
    assert temporaries(pool_dir) == []


def test_a_crashed_attempts_leftover_is_replaced(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "src", "qcow2", "8M")
    write_file(pool_dir / f"{TEMP_PREFIX}3-new", b"half a copy")
    d.copy_volume(pool, "src", pool, "new", temp_name=f"{TEMP_PREFIX}3-new")
    assert sorted(os.listdir(pool_dir)) == ["new", "src"]


def test_copy_refuses_to_replace_what_it_reads(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "base", "raw", "8M")
    make_image(pool_dir / "top", "qcow2", "8M", backing="base", backing_fmt="raw")
    with pytest.raises(VolumeBusy, match="backing chain"):
        d.copy_volume(pool, "top", pool, "base", overwrite=True)
    assert temporaries(pool_dir) == []


def test_incremental_copy_onto_a_copy_of_the_base(tmp_path: Path, pool_dir: Path,
                                                  make_image: MakeImage) -> None:
    other = tmp_path / "other"
    other.mkdir()
    d = driver_for(pool_dir, other)
    pool, dest = pool_at(pool_dir), pool_at(other, "o")
    base = make_image(pool_dir / "base.raw", "raw", "64M")
    write(base, "raw", "write -P 1 0 16M")
    top = make_image(pool_dir / "top", "qcow2", "64M", backing="base.raw", backing_fmt="raw")
    write(top, "qcow2", "write -P 2 4M 1M", "write -z 8M 1M", "write -P 3 40M 1M")
    run("cp", "--sparse=always", str(base), str(other / "base-copy.raw"))
    copy_of_base = d.probe_volume(dest, "base-copy.raw")
    vol = d.copy_volume(pool, "top", dest, "top", backing=copy_of_base)
    assert vol.format == ImageFormat.QCOW2 and vol.chain.problem is None
    assert [link.path for link in vol.chain.links] == [str(other / "top"),
                                                       str(other / "base-copy.raw")]
    assert info(other / "top", "qcow2")["backing-filename"] == "base-copy.raw"
    assert identical(top, "qcow2", other / "top", "qcow2")
    assert vol.allocation < 4 * MiB  # the difference only, not the base's 16 MiB
    assert temporaries(other) == []


def test_incremental_copy_onto_a_deeper_base(tmp_path: Path, pool_dir: Path,
                                             make_image: MakeImage) -> None:
    """qemu-img convert -B copies only the source's top image, so a base two links down
    needs the rebase path: the middle image's data must not be lost."""
    other = tmp_path / "other"
    other.mkdir()
    d = driver_for(pool_dir, other)
    pool, dest = pool_at(pool_dir), pool_at(other, "o")
    base = make_image(pool_dir / "base.raw", "raw", "16M")
    write(base, "raw", "write -P 1 0 4M")
    mid = make_image(pool_dir / "mid", "qcow2", "16M", backing="base.raw", backing_fmt="raw")
    write(mid, "qcow2", "write -P 2 2M 1M")
    top = make_image(pool_dir / "top", "qcow2", "16M", backing="mid", backing_fmt="qcow2")
    write(top, "qcow2", "write -P 3 8M 1M")
    run("cp", str(base), str(other / "base.raw"))
    copy_of_base = d.probe_volume(dest, "base.raw")
    labels: list[float] = []
    vol = d.copy_volume(pool, "top", dest, "top", backing=copy_of_base, base_depth=2,
                        progress=lambda p: labels.append(p.percent))
    assert vol.chain.depth == 2 and vol.chain.problem is None
    assert identical(top, "qcow2", other / "top", "qcow2")
    assert labels[-1] == 100.0
    with pytest.raises(InvalidRequest, match="no backing 3 link"):
        d.copy_volume(pool, "top", dest, "x", backing=copy_of_base, base_depth=3)
    make_image(other / "small.raw", "raw", "8M")
    with pytest.raises(InvalidRequest, match="cannot be a copy of"):
        d.copy_volume(pool, "top", dest, "x", backing=d.probe_volume(dest, "small.raw"),
                      base_depth=2)
    assert temporaries(other) == []


def test_progress_rises_to_100(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    src = make_image(pool_dir / "src", "raw", "256M")
    write(src, "raw", *(f"write -P {i + 1} {i * 32}M 16M" for i in range(8)))
    seen: list[Progress] = []
    d.copy_volume(pool, "src", pool, "dst", fmt=ImageFormat.QCOW2, progress=seen.append)
    percents = [p.percent for p in seen]
    assert len(percents) > 3
    assert percents == sorted(set(percents)) and percents[-1] == 100.0
    assert all(p.total == 256 * MiB and (p.stage, p.stages) == (1, 1) for p in seen)
    assert seen[-1].done == 256 * MiB


@pytest.fixture(scope="module")
def gib_of_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "data.raw"
    block = bytes(range(256)) * 4096  # 1 MiB, no zero block: all of it is copied
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(block)
    return path


def test_cancel_stops_a_copy_within_a_second(pool_dir: Path, gib_of_data: Path) -> None:
    os.link(gib_of_data, pool_dir / "big.raw")
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    flipped: list[float] = []

    def progress(p: Progress) -> None:
        if p.percent >= 5 and not flipped:
            flipped.append(time.monotonic())

    stopped: list[tuple[str, ...]] = []
    d.transport.observer = lambda host, argv, code, secs: (  # type: ignore[attr-defined]
        stopped.append(argv) if code == -1 else None)
    with pytest.raises(Cancelled) as err:
        d.copy_volume(pool, "big.raw", pool, "copy.raw", progress=progress,
                      should_cancel=lambda: bool(flipped),
                      temp_name=f"{TEMP_PREFIX}9-copy.raw")
    # qemu-img stopped mid-way, not waited out; how fast is the benchmarks' business.
    assert [argv[:2] for argv in stopped] == [("qemu-img", "convert")]
    assert "volume 'copy.raw'" in str(err.value)
    assert sorted(os.listdir(pool_dir)) == ["big.raw"]


def test_cancel_before_start_changes_nothing(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "r", "raw", "8M")
    with pytest.raises(Cancelled):
        d.resize_volume(pool, "r", 16 * MiB, should_cancel=lambda: True)
    with pytest.raises(Cancelled):
        d.copy_volume(pool, "r", pool, "c", should_cancel=lambda: True)
    assert os.listdir(pool_dir) == ["r"] and os.path.getsize(pool_dir / "r") == 8 * MiB


@contextlib.contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    """A loop mount of ``image`` at ``where``, unmounted on the way out."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop file system needs root")
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_copy_into_a_full_pool(tmp_path: Path, pool_dir: Path, make_image: MakeImage) -> None:
    fs_image = write_file(tmp_path / "small.img", size=20 * MiB)
    mkfs(fs_image, "ext4")
    src = make_image(pool_dir / "src.raw", "raw", "64M")
    write(src, "raw", "write -P 5 0 40M")
    before = run("sha256sum", str(src)).stdout
    with mounted(fs_image, tmp_path / "mnt") as small:
        free = os.statvfs(small).f_bfree
        d = driver_for(pool_dir, small)
        with pytest.raises(NoSpace, match="no space left") as err:
            d.copy_volume(pool_at(pool_dir), "src.raw", pool_at(small, "small"), "copy.raw")
        assert "pool 'small'" in str(err.value) and "removed" in str(err.value)
        assert sorted(os.listdir(small)) == ["lost+found"]
        assert os.statvfs(small).f_bfree >= free - 16  # the space is free again
    assert run("sha256sum", str(src)).stdout == before


def test_measure_copy(pool_dir: Path, make_image: MakeImage) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    src = make_image(pool_dir / "src.raw", "raw", "64M")
    write(src, "raw", "write -P 1 0 4M")
    raw = d.measure_copy(pool, "src.raw")
    assert raw == os.stat(src).st_blocks * 512 and 4 * MiB <= raw < 8 * MiB
    to_qcow2 = d.measure_copy(pool, "src.raw", ImageFormat.QCOW2)
    assert 4 * MiB < to_qcow2 < 6 * MiB
    d.copy_volume(pool, "src.raw", pool, "q", fmt=ImageFormat.QCOW2)
    assert d.measure_copy(pool, "q", ImageFormat.RAW) == 64 * MiB  # raw: no holes known


# -- in use -----------------------------------------------------------------------


@pytest.fixture
def nbd_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sc-nbd-") as d:  # short: a socket path
        yield Path(d)


def hold(image: Path, fmt: str, sockets: Path) -> int:
    """Open ``image`` for writing in a forked qemu-nbd; its pid."""
    pidfile = sockets / f"{image.name}.pid"
    run("qemu-nbd", "--persistent", "--fork", f"--socket={sockets / image.name}.sock",
        f"--pid-file={pidfile}", "-f", fmt, str(image))
    return int(pidfile.read_text())


def release(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return  # exited, not yet reaped: its locks are gone
        except FileNotFoundError:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)


def test_in_use_seen_through_qemus_lock(pool_dir: Path, make_image: MakeImage,
                                        nbd_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "q", "qcow2", "8M")
    make_image(pool_dir / "r", "raw", "8M")
    vols = {n: d.probe_volume(pool, n) for n in ("q", "r")}
    assert not d.volume_in_use(vols["q"]) and not d.volume_in_use(vols["r"])
    pids = [hold(pool_dir / "q", "qcow2", nbd_dir), hold(pool_dir / "r", "raw", nbd_dir)]
    try:
        assert d.volume_in_use(vols["q"]) and d.volume_in_use(vols["r"])
        for name in ("q", "r"):
            with pytest.raises(VolumeBusy, match="running QEMU"):
                d.resize_volume(pool, name, 16 * MiB)
            with pytest.raises(VolumeBusy, match="torn"):
                d.copy_volume(pool, name, pool, f"{name}-copy")
        make_image(pool_dir / "other", "raw", "8M")
        with pytest.raises(VolumeBusy, match="not replaced"):
            d.copy_volume(pool, "other", pool, "r", overwrite=True)
    finally:
        for pid in pids:
            release(pid)
    assert not d.volume_in_use(vols["q"]) and not d.volume_in_use(vols["r"])
    assert sorted(os.listdir(pool_dir)) == ["other", "q", "r"]
    assert d.probe_volume(pool, "r").capacity == 8 * MiB


# -- the transport: cancellable streaming commands ----------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("code", [
    "import time; print('up', flush=True); time.sleep(3000)",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(3000)"], ids=["sigterm", "sigterm-ignored"])
def test_run_cancel_is_quick(code: str) -> None:
    """Only the kill ends these: returning at all is the proof (not a stopwatch)."""
    heard: list[bytes] = []
    with pytest.raises(Cancelled, match="was stopped"):
        LocalTransport().run(python(code), on_output=heard.append,
                             should_cancel=lambda: bool(heard))


def test_run_streams_output_as_it_comes(tmp_path: Path) -> None:
    """The command writes its second part only once the first has reached us (or after
    ``PATIENCE``, when the run would hold output back until the end)."""
    gate = tmp_path / "gate"
    arrivals: list[bytes] = []

    def on_output(chunk: bytes) -> None:
        arrivals.append(chunk)
        gate.touch()

    result = LocalTransport().run(
        python("import os, sys, time\nsys.stdout.write('a\\r'); sys.stdout.flush()\n"
               f"end = time.monotonic() + {PATIENCE}\n"
               f"while not os.path.exists({str(gate)!r}) and time.monotonic() < end:\n"
               "    time.sleep(0.01)\n"
               "sys.stdout.write('b\\r')"),
        on_output=on_output, should_cancel=lambda: False)
    assert result.returncode == 0 and result.stdout == b"a\rb\r"
    assert arrivals == [b"a\r", b"b\r"]


def test_run_chatty_stderr_and_failures() -> None:
    t = LocalTransport()
    noisy = t.run(python("import sys; sys.stderr.write('e' * 3000000); print('done')"),
                  should_cancel=lambda: False)
    assert noisy.stdout == b"done\n" and len(noisy.stderr) == 3000000
    with pytest.raises(CommandFailed, match=r"did not finish within 0\.3 s"):
        t.run(python("import time; time.sleep(10)"), timeout=0.3, should_cancel=lambda: False)
    with pytest.raises(CommandFailed, match="did not finish"):
        t.run(python("import time; time.sleep(10)"), timeout=0.3)
    for kwargs in ({}, {"on_output": lambda c: None}):
        with pytest.raises(CommandFailed, match="cannot run") as err:
            t.run(["/nonexistent/qemu-img", "info"], **kwargs)  # type: ignore[arg-type]
        assert isinstance(err.value, StorageError)


def test_run_never_leaves_a_process_behind_a_failing_callback() -> None:
    pids: list[int] = []

    def boom(chunk: bytes) -> None:
        pids.append(int(chunk))
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError):
        LocalTransport().run(python("import os, time; print(os.getpid(), flush=True); "
                                    "time.sleep(30)"), on_output=boom)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_run_does_not_wait_for_a_child_left_holding_stdout() -> None:
    result = LocalTransport().run(
        python("import subprocess; child = subprocess.Popen(['sleep', '600']); "
               "print(child.pid); print('parent done')"),
        should_cancel=lambda: False)
    pid, done = result.stdout.decode().splitlines()
    try:
        assert done == "parent done"
        os.kill(int(pid), 0)  # still there, holding the pipe: the run did not wait for it
    finally:
        os.kill(int(pid), signal.SIGKILL)


HOSTILE = ["-leading-dash", "nbd:x", "json:{}", "with space", "new\nline", "quote'\""]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_resized_and_copied(pool_dir: Path, make_image: MakeImage,
                                          name: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, other = tmp_path / "cwd", tmp_path / "other"
    cwd.mkdir()
    other.mkdir()
    monkeypatch.chdir(cwd)  # a name read relative to the cwd would land here
    d, pool, dest = driver_for(pool_dir, other), pool_at(pool_dir), pool_at(other, "o")
    make_image(pool_dir / name, "qcow2", "8M")
    write(pool_dir / name, "qcow2", "write -P 4 0 64k")
    assert d.resize_volume(pool, name, 16 * MiB).capacity == 16 * MiB
    copy = d.copy_volume(pool, name, pool, f"{name}.copy", fmt=ImageFormat.RAW)
    assert copy.capacity == 16 * MiB
    assert identical(pool_dir / name, "qcow2", pool_dir / f"{name}.copy", "raw")
    top = d.create_volume(pool, f"{name}.top", ImageFormat.QCOW2, 0,
                          backing=d.probe_volume(pool, name))
    write(Path(top.path), "qcow2", "write -P 5 1M 64k")
    base_copy = d.copy_volume(pool, name, dest, name)
    inc = d.copy_volume(pool, top.name, dest, top.name, backing=base_copy)
    assert inc.chain.problem is None and inc.chain.depth == 2
    assert identical(Path(top.path), "qcow2", Path(inc.path), "qcow2")
    assert os.listdir(cwd) == []


def test_read_only_refuses_every_operation(pool_dir: Path, make_image: MakeImage) -> None:
    d = DirDriver(LocalTransport(read_only=True), (str(pool_dir),))
    pool = pool_at(pool_dir)
    image = write_file(pool_dir / "fs.raw", size=16 * MiB)
    mkfs(image, "ext4", "8M")
    before = os.stat(image)
    with pytest.raises(ReadOnlyViolation):
        d.resize_volume(pool, "fs.raw", 32 * MiB)
    with pytest.raises(ReadOnlyViolation):
        d.growfs_volume(pool, "fs.raw")
    with pytest.raises(ReadOnlyViolation):
        d.copy_volume(pool, "fs.raw", pool, "copy")
    assert d.measure_copy(pool, "fs.raw") > 0  # reads are fine
    assert not d.volume_in_use(d.probe_volume(pool, "fs.raw"))
    assert os.listdir(pool_dir) == ["fs.raw"]
    assert os.stat(image).st_mtime_ns == before.st_mtime_ns


def test_cancel_from_another_thread(pool_dir: Path, gib_of_data: Path) -> None:
    """How the runner cancels: an event set by another thread."""
    os.link(gib_of_data, pool_dir / "big.raw")
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    cancel = threading.Event()
    timer = threading.Timer(0.1, cancel.set)

    def progress(p: Progress) -> None:
        if not timer.is_alive() and not cancel.is_set():
            timer.start()  # once the copy is under way

    with pytest.raises(Cancelled):
        d.copy_volume(pool, "big.raw", pool, "c", fmt=ImageFormat.QCOW2, progress=progress,
                      should_cancel=cancel.is_set)
    timer.join()
    assert os.listdir(pool_dir) == ["big.raw"]


# -- wipe, archive, restore: cancel, space, in use -----------------------------------


def test_cancelled_wipe_leaves_the_volume(pool_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    data = os.urandom(MiB) * 64
    write_file(pool_dir / "v.raw", data)
    seen: list[Progress] = []
    with pytest.raises(Cancelled, match="partly overwritten and was not deleted") as err:
        d.delete_volume(pool, "v.raw", wipe="zero", progress=seen.append,
                        should_cancel=lambda: bool(seen))
    assert "volume 'v.raw'" in str(err.value)
    left = (pool_dir / "v.raw").read_bytes()
    assert len(left) == len(data) and left[:MiB] == bytes(MiB) and left[-MiB:] == data[-MiB:]
    assert seen[0].label == "wipe" and seen[0].total == 64 * MiB


def test_archive_and_restore_cancelled_remove_their_files(tmp_path: Path, pool_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    with open(pool_dir / "big.raw", "wb") as f:
        f.truncate(2 << 30)
        f.write(b"\x01" * MiB)
    backup = tmp_path / "backup"
    backup.mkdir()

    def after(limit: int) -> tuple[list[Progress], Callable[[], bool]]:
        seen: list[Progress] = []
        return seen, lambda: bool(seen) and seen[-1].done >= limit

    seen, stop = after(64 * MiB)
    with pytest.raises(Cancelled, match="temporary files were removed"):
        d.archive_volume(pool, "big.raw", str(backup / "big.zst"), progress=seen.append,
                         should_cancel=stop)
    assert os.listdir(backup) == []
    d.archive_volume(pool, "big.raw", str(backup / "big.zst"))
    for fmt in (None, ImageFormat.QCOW2):
        seen, stop = after(64 * MiB)
        with pytest.raises(Cancelled, match="restore cancelled"):
            d.restore_volume(pool, str(backup / "big.zst"), "back", fmt=fmt,
                             progress=seen.append, should_cancel=stop)
        assert sorted(os.listdir(pool_dir)) == ["big.raw"]


def test_archive_refused_up_front_without_space(tmp_path: Path, pool_dir: Path) -> None:
    fs_image = write_file(tmp_path / "small.img", size=16 * MiB)
    mkfs(fs_image, "ext4")
    src = write_file(pool_dir / "src.raw", os.urandom(MiB) * 24)
    with mounted(fs_image, tmp_path / "mnt") as small:
        d = driver_for(pool_dir)
        with pytest.raises(NoSpace, match=r"may need .* which has .* free"):
            d.archive_volume(pool_at(pool_dir), "src.raw", str(small / "src.zst"))
        assert sorted(os.listdir(small)) == ["lost+found"]
    assert src.stat().st_size == 24 * MiB


def test_archive_and_restore_refused_in_use(tmp_path: Path, pool_dir: Path,
                                            make_image: MakeImage, nbd_dir: Path) -> None:
    d, pool = driver_for(pool_dir), pool_at(pool_dir)
    make_image(pool_dir / "q", "qcow2", "8M")
    make_image(pool_dir / "r", "raw", "8M")
    d.archive_volume(pool, "r", str(tmp_path / "r.zst"))
    pid = hold(pool_dir / "q", "qcow2", nbd_dir)
    try:
        with pytest.raises(VolumeBusy, match="torn"):
            d.archive_volume(pool, "q", str(tmp_path / "q.zst"))
        with pytest.raises(VolumeBusy, match=r"in use by a running QEMU \(its file lock\)"):
            d.restore_volume(pool, str(tmp_path / "r.zst"), "q", into_existing=True)
        with pytest.raises(VolumeBusy, match="running QEMU"):
            d.snapshot_volume(pool, "q", "s")
        with pytest.raises(VolumeBusy, match="running QEMU"):
            d.delete_volume(pool, "q", wipe="random")
    finally:
        release(pid)
    assert sorted(os.listdir(pool_dir)) == ["q", "r"]
    assert not (tmp_path / "q.zst").exists()
