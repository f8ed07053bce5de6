"""The operations of the jobs issue end to end through a Runner, on real images in temp
directories: snapshot, clone, delete (wipe, dependants), create (preallocated,
interrupted), growfs, archive and restore. Results are checked with qemu-img compare,
check and info, and by reading the bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import archive
from backends.contract import InvalidRequest, VolumeExists
from backends.drivers.dir.driver import DirDriver
from backends.model import ImageFormat, Pool
from backends.transport.local import LocalTransport
from backends.transport.scanner import TEMP_PREFIX
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState, Journal
from console.jobs.operations import (
    OPERATIONS,
    ArchiveVolume,
    CloneVolume,
    CopyVolume,
    CreateVolume,
    DeleteVolume,
    GrowFilesystem,
    Operation,
    RestoreVolume,
    SnapshotVolume,
    snapshot_name,
)
from console.jobs.runner import Runner
from tests.conftest import PATIENCE, MakeImage, write_file

MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True)


def write(path: Path, fmt: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for command in commands:
        argv += ["-c", command]
    run(*argv, str(path))


def reads(path: Path, fmt: str, command: str) -> bool:
    """Whether ``qemu-io -r -c command`` (a ``read -P``) finds what it expects."""
    done = subprocess.run(["qemu-io", "-r", "-f", fmt, "-c", command, str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def info(path: Path, fmt: str) -> dict[str, object]:
    out = run("qemu-img", "info", "-U", "--output=json", "-f", fmt, str(path)).stdout
    data: dict[str, object] = json.loads(out)
    return data


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
                          capture_output=True).returncode == 0


def check_clean(path: Path) -> None:
    done = subprocess.run(["qemu-img", "check", "-U", "-f", "qcow2", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(*directories: Path) -> list[str]:
    return [n for d in directories for n in os.listdir(d) if n.startswith(TEMP_PREFIX)]


def volumes(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


class Engine:
    """A runner over two pools, ``pool`` and ``other``."""

    def __init__(self, tmp_path: Path, pool: Path, other: Path, *,
                 read_only: bool = False) -> None:
        self.pool_dir, self.other_dir = pool, other
        self.pool, self.other = str(pool.resolve()), str(other.resolve())
        self.inventory = Inventory(Config.for_targets([self.pool, self.other]), Cache(None),
                                   read_only=read_only)
        self.runner = Runner(Journal(tmp_path / f"journal-{read_only}.db"), self.inventory)

    def run(self, op: Operation, timeout: float = 60) -> JobRecord:
        return self.runner.wait(self.runner.submit(op).id, timeout)

    def ok(self, op: Operation, timeout: float = 60) -> JobRecord:
        job = self.run(op, timeout)
        assert (job.state, job.error) == (JobState.DONE, None)
        assert job.percent == 100
        return job

    def stopped_commands(self) -> list[tuple[str, ...]]:
        """The commands stopped before their end from now on (the audit's status -1):
        a cancel honoured mid-way stops one, a cancel seen after it ended does not."""
        stopped: list[tuple[str, ...]] = []

        def observe(host: str, argv: tuple[str, ...], status: int, seconds: float) -> None:
            if status == -1:
                stopped.append(argv)

        self.inventory.host_link("local").transport.observer = observe
        return stopped


@pytest.fixture
def engine(tmp_path: Path, pool_dir: Path) -> Iterator[Engine]:
    other = tmp_path / "other"
    other.mkdir()
    e = Engine(tmp_path, pool_dir, other)
    yield e
    e.runner.close()


@pytest.fixture
def nbd_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sc-nbd-") as d:  # short: a socket path
        yield Path(d)


def hold(image: Path, fmt: str, sockets: Path) -> int:
    """Open ``image`` for writing in a forked qemu-nbd (as a running VM would); its pid."""
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
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)


# -- snapshot -----------------------------------------------------------------------


def test_snapshot_of_a_qcow2_disk(engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    make_image(d / "base.raw", "raw", "16M")
    write(d / "base.raw", "raw", "write -P 1 0 1M")
    disk = make_image(d / "disk.qcow2", "qcow2", "16M", backing="base.raw", backing_fmt="raw")
    write(disk, "qcow2", "write -P 2 1M 1M")
    os.chmod(disk, 0o640)
    before = os.stat(disk)
    depth = engine.inventory.probe_volume("local", engine.pool, "disk.qcow2").chain_depth
    job = engine.ok(SnapshotVolume("local", engine.pool, "disk.qcow2"))
    snap = job.resume["snapshot"]
    assert re.fullmatch(r"disk\.qcow2\.snap-\d{8}-\d{6}", snap)
    snap_path = d / snap
    # The old file is the snapshot (same inode), read-only; the disk is a new overlay.
    assert os.stat(snap_path).st_ino == before.st_ino
    assert stat.S_IMODE(os.stat(snap_path).st_mode) == 0o440
    assert stat.S_IMODE(os.stat(disk).st_mode) == 0o640  # the disk keeps its permissions
    assert info(disk, "qcow2")["backing-filename"] == snap
    assert info(disk, "qcow2")["backing-filename-format"] == "qcow2"
    vol = engine.inventory.probe_volume("local", engine.pool, "disk.qcow2")
    assert vol.chain_depth == depth + 1 and vol.chain.problem is None and not vol.readonly
    assert engine.inventory.probe_volume("local", engine.pool, snap).readonly
    snap_sum = sha256(snap_path)
    write(disk, "qcow2", "write -P 3 0 2M")  # the disk stays writable
    assert sha256(snap_path) == snap_sum  # writes after the snapshot go to the overlay
    assert reads(snap_path, "qcow2", "read -P 1 0 1M")
    assert reads(snap_path, "qcow2", "read -P 2 1M 1M")
    assert reads(disk, "qcow2", "read -P 3 0 2M")
    check_clean(disk)
    check_clean(snap_path)
    assert temporaries(d) == []


def test_snapshot_of_a_raw_disk_makes_it_qcow2(engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    disk = make_image(d / "disk.img", "raw", "8M")
    write(disk, "raw", "write -P 5 0 4M")
    copy = d.parent / "copy.raw"
    run("cp", str(disk), str(copy))
    op = SnapshotVolume("local", engine.pool, "disk.img", name="before-upgrade")
    commands = op.commands(engine.inventory)
    assert commands[0] == ["ln", "--", str(disk), str(d / "before-upgrade")]
    assert commands[1][:9] == ["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                               "before-upgrade", "-F", "raw"]
    assert commands[3] == ["chmod", "a-w", "--", str(d / "before-upgrade")]
    engine.ok(op)
    assert info(disk, "qcow2")["format"] == "qcow2"  # the disk's format changed
    assert info(disk, "qcow2")["backing-filename-format"] == "raw"
    assert identical(copy, "raw", d / "before-upgrade", "raw")
    assert identical(copy, "raw", disk, "qcow2")
    write(disk, "qcow2", "write -P 6 0 1M")
    assert identical(copy, "raw", d / "before-upgrade", "raw")
    assert not identical(copy, "raw", disk, "qcow2")
    check_clean(disk)
    assert volumes(d) == ["before-upgrade", "disk.img"]


def test_snapshot_refused_in_use_and_on_a_taken_name(engine: Engine, make_image: MakeImage,
                                                     nbd_dir: Path) -> None:
    d = engine.pool_dir
    disk = make_image(d / "disk", "qcow2", "8M")
    make_image(d / "taken", "raw", "1M")
    inode = os.stat(disk).st_ino
    job = engine.run(SnapshotVolume("local", engine.pool, "disk", name="taken"))
    assert job.state == JobState.FAILED and job.error and "taken" in job.error
    pid = hold(disk, "qcow2", nbd_dir)
    try:
        job = engine.run(SnapshotVolume("local", engine.pool, "disk", name="s"))
    finally:
        release(pid)
    assert job.state == JobState.FAILED
    assert job.error and "in use by a running QEMU (its file lock)" in job.error
    assert volumes(d) == ["disk", "taken"] and temporaries(d) == []
    assert os.stat(disk).st_ino == inode and info(disk, "qcow2").get("backing-filename") is None


def test_snapshot_refused_for_a_base_of_others(engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    make_image(d / "base", "qcow2", "8M")
    make_image(d / "top", "qcow2", "8M", backing="base", backing_fmt="qcow2")
    job = engine.run(SnapshotVolume("local", engine.pool, "base", name="s"))
    assert job.state == JobState.FAILED and job.error and "based on it (top)" in job.error
    assert volumes(d) == ["base", "top"]


def test_snapshot_crash_points_are_settled(pool_dir: Path, make_image: MakeImage) -> None:
    """A crash after the link (the snapshot's name is a second name of the disk, an
    overlay half made) is undone; a crash after the switch is finished."""
    d = DirDriver(LocalTransport(), (str(pool_dir),))
    pool = Pool("local", "p", "dir", str(pool_dir))
    disk = make_image(pool_dir / "disk", "qcow2", "8M")
    inode = os.stat(disk).st_ino
    os.link(disk, pool_dir / "snap")
    write_file(pool_dir / f"{TEMP_PREFIX}7-disk", b"half an overlay")
    assert not d.settle_snapshot(pool, "disk", "snap", f"{TEMP_PREFIX}7-disk")
    assert os.listdir(pool_dir) == ["disk"] and os.stat(disk).st_ino == inode
    # After the switch: the disk is the overlay, the snapshot not yet read-only.
    os.rename(disk, pool_dir / "snap")
    make_image(pool_dir / "disk", "qcow2", "8M", backing="snap", backing_fmt="qcow2")
    assert d.settle_snapshot(pool, "disk", "snap", f"{TEMP_PREFIX}7-disk")
    assert os.stat(pool_dir / "snap").st_mode & 0o222 == 0
    # A file that merely has the snapshot's name is never touched.
    make_image(pool_dir / "other", "raw", "1M")
    assert not d.settle_snapshot(pool, "snap", "other", None)
    assert sorted(os.listdir(pool_dir)) == ["disk", "other", "snap"]


def test_resume_of_a_snapshot_interrupted_after_the_switch(engine: Engine,
                                                          make_image: MakeImage) -> None:
    """The process died between the switch and the chmod: resuming finishes the snapshot
    and takes no second one."""
    d = engine.pool_dir
    make_image(d / "snap", "qcow2", "8M")
    make_image(d / "disk", "qcow2", "8M", backing="snap", backing_fmt="qcow2")
    journal = engine.runner.journal
    op = SnapshotVolume("local", engine.pool, "disk")
    job = journal.submit(op.kind, op.params(), "local", engine.pool, "disk")
    journal.remember(job.id, snapshot="snap", temp=f"{TEMP_PREFIX}{job.id}-disk",
                     temp_pool=engine.pool)
    journal.set_state(job.id, JobState.INTERRUPTED)
    done = engine.runner.wait(engine.runner.resume(job.id).id, 30)
    assert (done.state, done.error) == (JobState.DONE, None)
    assert os.stat(d / "snap").st_mode & 0o222 == 0
    assert volumes(d) == ["disk", "snap"] and info(d / "disk", "qcow2")["backing-filename"] \
        == "snap"


def test_default_snapshot_name() -> None:
    import datetime

    when = datetime.datetime(2024, 1, 31, 23, 59, 58, tzinfo=datetime.UTC)
    assert snapshot_name("vm.qcow2", when) == "vm.qcow2.snap-20240131-235958"
    assert len(os.fsencode(snapshot_name("é" * 200, when))) <= 255


# -- clone ----------------------------------------------------------------------------


def test_clone_space_and_performance(engine: Engine, make_image: MakeImage) -> None:
    d, other = engine.pool_dir, engine.other_dir
    disk = make_image(d / "disk", "qcow2", "16M")
    write(disk, "qcow2", "write -P 7 0 4M")
    engine.ok(SnapshotVolume("local", engine.pool, "disk", name="gold"))
    gold = d / "gold"
    near = engine.ok(CloneVolume("local", engine.pool, "gold", dest_name="near"))
    assert near.resume["temp"].startswith(TEMP_PREFIX)
    assert info(d / "near", "qcow2")["backing-filename"] == "gold"  # by name, same dir
    engine.ok(CloneVolume("local", engine.pool, "gold", dest_pool=engine.other,
                          dest_name="far"))
    assert info(other / "far", "qcow2")["backing-filename"] == str(gold)  # by path
    engine.ok(CloneVolume("local", engine.pool, "gold", dest_pool=engine.other,
                          dest_name="full", strategy="performance"))
    assert info(other / "full", "qcow2").get("backing-filename") is None
    for clone, fmt in ((d / "near", "qcow2"), (other / "far", "qcow2"),
                       (other / "full", "qcow2")):
        assert identical(gold, "qcow2", clone, fmt)
        check_clean(clone)
        assert os.stat(clone).st_mode & 0o200  # a clone is a writable disk
    gold_sum = sha256(gold)
    write(d / "near", "qcow2", "write -P 8 0 1M")
    assert sha256(gold) == gold_sum and identical(gold, "qcow2", other / "far", "qcow2")
    # An overlay on a writable disk would change under the clone: refused.
    job = engine.run(CloneVolume("local", engine.pool, "disk", dest_name="bad"))
    assert job.state == JobState.FAILED and job.error and "not a snapshot" in job.error
    assert temporaries(d, other) == [] and not (d / "bad").exists()


def allocated_extents(path: Path, fmt: str) -> list[dict[str, object]]:
    out = run("qemu-img", "map", "--output=json", "-f", fmt, str(path)).stdout
    extents: list[dict[str, object]] = json.loads(out)
    return extents


def test_copy_strategies(engine: Engine, make_image: MakeImage) -> None:
    """performance: a full copy, every byte allocated; space: holes stay holes, and a
    snapshot copied within its pool is an overlay on it; no strategy: a sparse copy."""
    d, other = engine.pool_dir, engine.other_dir
    disk = make_image(d / "disk", "qcow2", "16M")
    write(disk, "qcow2", "write -P 7 0 2M", "write -P 8 10M 1M")
    engine.ok(SnapshotVolume("local", engine.pool, "disk", name="gold"))
    gold = d / "gold"

    fast = CopyVolume("local", engine.pool, "gold", dest_pool=engine.other,
                      dest_name="fast.raw", format="raw", strategy="performance")
    assert fast.space(engine.inventory) == (engine.other, 16 * MiB)  # every byte
    assert "preallocation=falloc" in fast.commands(engine.inventory)[0]
    assert fast.describe() == f"copy gold → fast.raw in {other.name} (performance)"
    engine.ok(fast)
    assert identical(gold, "qcow2", other / "fast.raw", "raw")
    assert os.stat(other / "fast.raw").st_blocks * 512 >= 16 * MiB  # preallocated
    engine.ok(CopyVolume("local", engine.pool, "gold", dest_pool=engine.other,
                         dest_name="fast.qcow2", strategy="performance"))
    assert identical(gold, "qcow2", other / "fast.qcow2", "qcow2")
    check_clean(other / "fast.qcow2")
    mapped = allocated_extents(other / "fast.qcow2", "qcow2")
    assert all(m["data"] for m in mapped) and sum(
        int(m["length"]) for m in mapped) == 16 * MiB  # type: ignore[call-overload]
    assert info(other / "fast.qcow2", "qcow2").get("backing-filename") is None

    thin = CopyVolume("local", engine.pool, "gold", dest_name="thin", strategy="space")
    assert thin.commands(engine.inventory)[0][:2] == ["qemu-img", "create"]
    assert thin.space(engine.inventory)[1] < MiB
    engine.ok(thin)
    assert info(d / "thin", "qcow2")["backing-filename"] == "gold"  # an overlay on it
    assert identical(gold, "qcow2", d / "thin", "qcow2") and check_clean(d / "thin") is None
    assert os.stat(d / "thin").st_blocks * 512 < MiB
    assert os.stat(d / "thin").st_mode & 0o200  # a writable disk

    # In another pool, or of a writable disk, "space" is a sparse standalone copy.
    for source, pool, name in (("gold", engine.other, "sparse.raw"),
                               ("disk", engine.pool, "disk-copy")):
        op = CopyVolume("local", engine.pool, source, dest_pool=pool, dest_name=name,
                        format="raw" if name.endswith(".raw") else None, strategy="space")
        assert op.commands(engine.inventory)[0][:2] == ["qemu-img", "convert"]
        engine.ok(op)
    assert identical(gold, "qcow2", other / "sparse.raw", "raw")
    assert os.stat(other / "sparse.raw").st_blocks * 512 <= 4 * MiB  # holes stay holes
    assert identical(disk, "qcow2", d / "disk-copy", "qcow2")
    assert info(d / "disk-copy", "qcow2").get("backing-filename") is None
    assert temporaries(d, other) == []


def test_copy_strategy_refusals(pool_dir: Path, make_image: MakeImage) -> None:
    d = DirDriver(LocalTransport(), (str(pool_dir),))
    pool = Pool("local", "p", "dir", str(pool_dir))
    make_image(pool_dir / "base", "qcow2", "1M")
    make_image(pool_dir / "top", "qcow2", "1M", backing="base", backing_fmt="qcow2")
    make_image(pool_dir / "img.vdi", "vdi", "1M")
    base = d.probe_volume(pool, "base")
    with pytest.raises(InvalidRequest, match="the strategy is space or performance"):
        d.copy_volume(pool, "top", pool, "x", strategy="fast")
    with pytest.raises(InvalidRequest, match="incremental copy is an overlay"):
        d.copy_volume(pool, "top", pool, "x", backing=base, strategy="performance")
    with pytest.raises(InvalidRequest, match="preallocated"):
        d.copy_volume(pool, "img.vdi", pool, "x", strategy="performance")
    assert volumes(pool_dir) == ["base", "img.vdi", "top"] and temporaries(pool_dir) == []


# -- delete -----------------------------------------------------------------------------


@pytest.mark.parametrize("wipe", ["zero", "random"])
def test_delete_with_wipe_overwrites_before_unlinking(engine: Engine, wipe: str) -> None:
    d = engine.pool_dir
    path = d / "huge.raw"
    secret = b"secret!!" * (MiB // 8)
    with open(path, "wb") as f:  # 1 TiB, 1 MiB of it allocated
        f.truncate(1 << 40)
        f.seek(300 << 30)
        f.write(secret)
    keep = os.open(path, os.O_RDONLY)  # to read the blocks after the name is gone
    try:
        op = DeleteVolume("local", engine.pool, "huge.raw", typed_name="huge.raw", wipe=wipe)
        assert op.commands(engine.inventory) == [
            ["overwrite", f"--with={wipe}", "--", str(path)], ["unlink", "--", str(path)]]
        started = time.monotonic()
        engine.ok(op)
        assert time.monotonic() - started < 10  # only the allocated MiB was written
        assert not path.exists()
        after = os.pread(keep, MiB, 300 << 30)
        assert len(after) == MiB and after != secret
        if wipe == "zero":
            assert after == bytes(MiB)
        else:
            assert after.count(0) < MiB // 64  # random bytes, hardly any zero
        assert os.fstat(keep).st_blocks * 512 <= 2 * MiB  # the holes stayed holes
    finally:
        os.close(keep)


def test_wipe_refuses_a_file_with_other_names(pool_dir: Path) -> None:
    d = DirDriver(LocalTransport(), (str(pool_dir),))
    pool = Pool("local", "p", "dir", str(pool_dir))
    write_file(pool_dir / "a", b"data" * 1024)
    os.link(pool_dir / "a", pool_dir / "b")
    with pytest.raises(Exception, match="other name"):
        d.delete_volume(pool, "a", wipe="zero")
    assert (pool_dir / "b").read_bytes() == b"data" * 1024


def chain_of_four(engine: Engine, make_image: MakeImage) -> None:
    """base.raw <- mid <- top, and far (in the other pool) <- mid."""
    d = engine.pool_dir
    make_image(d / "base.raw", "raw", "8M")
    write(d / "base.raw", "raw", "write -P 1 0 1M")
    make_image(d / "mid", "qcow2", "8M", backing="base.raw", backing_fmt="raw")
    make_image(d / "top", "qcow2", "8M", backing="mid", backing_fmt="qcow2")
    make_image(engine.other_dir / "far", "qcow2", "8M", backing=str(d / "mid"),
               backing_fmt="qcow2")


def test_delete_with_dependants_leaves_first(engine: Engine, make_image: MakeImage) -> None:
    chain_of_four(engine, make_image)
    d, other = engine.pool_dir, engine.other_dir
    job = engine.run(DeleteVolume("local", engine.pool, "base.raw", typed_name="base.raw"))
    assert job.state == JobState.FAILED and job.error and "based on it" in job.error
    op = DeleteVolume("local", engine.pool, "base.raw", typed_name="base.raw",
                      with_dependants=True)
    order = [argv[-1] for argv in op.commands(engine.inventory)]
    assert order == [str(other / "far"), str(d / "top"), str(d / "mid"), str(d / "base.raw")]
    engine.ok(op)
    assert volumes(d) == [] and volumes(other) == []


def test_delete_with_dependants_refused_when_one_is_in_use(
        engine: Engine, make_image: MakeImage, nbd_dir: Path) -> None:
    chain_of_four(engine, make_image)
    pid = hold(engine.pool_dir / "top", "qcow2", nbd_dir)
    try:
        job = engine.run(DeleteVolume("local", engine.pool, "base.raw", typed_name="base.raw",
                                      with_dependants=True, wipe="zero"))
    finally:
        release(pid)
    assert job.state == JobState.FAILED
    assert job.error and "in use by a running QEMU (its file lock): top" in job.error
    assert volumes(engine.pool_dir) == ["base.raw", "mid", "top"]
    assert volumes(engine.other_dir) == ["far"]
    assert reads(engine.pool_dir / "base.raw", "raw", "read -P 1 0 1M")  # never wiped


def test_plain_delete_refused_in_use(engine: Engine, make_image: MakeImage,
                                     nbd_dir: Path) -> None:
    make_image(engine.pool_dir / "r", "raw", "8M")
    pid = hold(engine.pool_dir / "r", "raw", nbd_dir)
    try:
        job = engine.run(DeleteVolume("local", engine.pool, "r"))
    finally:
        release(pid)
    assert job.state == JobState.FAILED and job.error and "running QEMU" in job.error
    assert volumes(engine.pool_dir) == ["r"]


# -- create ---------------------------------------------------------------------------


def unwritten(path: Path) -> bool:
    """Whether filefrag reports an extent of ``path`` allocated but never written."""
    return "unwritten" in run("filefrag", "-v", str(path)).stdout.decode()


def test_create_preallocated(engine: Engine) -> None:
    d, size = engine.pool_dir, 32 * MiB
    cases = {"falloc.raw": ("raw", "falloc", False), "full.raw": ("raw", "full", False),
             "zeroed.raw": ("raw", "falloc", True), "falloc.qcow2": ("qcow2", "falloc", False)}
    for name, (fmt, prealloc, zero) in cases.items():
        op = CreateVolume("local", engine.pool, name, format=fmt, capacity=size,
                          preallocation=prealloc, zero=zero)
        pool, need = op.space(engine.inventory)
        assert pool == engine.pool and need >= size and (fmt != "raw" or need == size)
        engine.ok(op)
        allocated = os.stat(d / name).st_blocks * 512
        assert size <= allocated <= size + 2 * MiB, (name, allocated)
        assert reads(d / name, fmt, f"read -P 0 0 {size}")  # every new volume reads zeroes
    # What is true on this file system: fallocate() leaves unwritten extents; ``zero``
    # (like ``full``) writes the zeroes, so none is left unwritten.
    assert unwritten(d / "falloc.raw")
    assert not unwritten(d / "zeroed.raw") and not unwritten(d / "full.raw")
    assert CreateVolume("local", engine.pool, "z", format="raw", capacity=size,
                        preallocation="falloc", zero=True).commands(engine.inventory)[0][5:7] \
        == ["-o", "preallocation=full"]
    sparse = CreateVolume("local", engine.pool, "sparse", format="raw", capacity=size, zero=True)
    job = engine.run(sparse)
    assert job.state == JobState.FAILED and job.error and "allocates nothing" in job.error
    assert volumes(d) == sorted(cases) and temporaries(d) == []


def children(pid: int) -> list[int]:
    """The pids of the processes ``pid`` (any of its threads) started."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


CREATE_CHILD = textwrap.dedent("""
    import sys
    from console.cache import Cache
    from console.config import Config
    from console.inventory import Inventory
    from console.jobs.journal import Journal
    from console.jobs.operations import CreateVolume
    from console.jobs.runner import Runner

    pool, journal = sys.argv[1], sys.argv[2]
    inv = Inventory(Config.for_targets([pool]), Cache(None))
    runner = Runner(Journal(journal), inv)
    job = runner.submit(CreateVolume("local", pool, "big.raw", format="raw",
                                     capacity=2 << 30, preallocation="full"))
    print(job.id, flush=True)
    runner.wait(job.id)
""")


def test_an_interrupted_create_is_rolled_back(tmp_path: Path, pool_dir: Path) -> None:
    """kill -9 while qemu-img writes a fully preallocated volume: the journaled temporary
    file is found and removed, and nothing ever had the final name."""
    pool = str(pool_dir.resolve())
    journal_path = tmp_path / "journal.db"
    child = subprocess.Popen([sys.executable, "-c", CREATE_CHILD, pool, str(journal_path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    job_id = int(child.stdout.readline())
    journal = Journal(journal_path)
    deadline = time.monotonic() + 30
    while not any(os.stat(pool_dir / n).st_blocks for n in temporaries(pool_dir)):
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    qemu_img = children(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for pid in qemu_img:  # as a crash of the machine would; else it writes on, orphaned
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not (pool_dir / "big.raw").exists()
    (temp,) = temporaries(pool_dir)
    assert journal.get(job_id).resume == {"temp": temp, "temp_pool": pool}
    runner = Runner(journal, Inventory(Config.for_targets([pool]), Cache(None)))
    (interrupted,) = runner.recover()
    assert interrupted.id == job_id
    assert runner.rollback(job_id).state == JobState.ABORTED
    runner.close()
    assert temporaries(pool_dir) == [] and volumes(pool_dir) == []


# -- growfs ---------------------------------------------------------------------------


def test_growfs_as_a_job(engine: Engine) -> None:
    image = write_file(engine.pool_dir / "fs.raw", size=48 * MiB)
    run("mkfs.ext4", "-q", "-F", str(image), "24M")
    op = GrowFilesystem("local", engine.pool, "fs.raw")
    assert [argv[0] for argv in op.commands(engine.inventory)] == ["e2fsck", "resize2fs"]
    engine.ok(op)
    out = run("dumpe2fs", "-h", str(image)).stdout.decode()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert int(fields["Block count"]) * int(fields["Block size"]) == 48 * MiB


# -- archive and restore -----------------------------------------------------------


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    d = tmp_path / "backup"
    d.mkdir()
    return d


def sources(engine: Engine, make_image: MakeImage) -> None:
    """disk.raw (data and holes) and top.qcow2 (on a backing: flattened when archived)."""
    d = engine.pool_dir
    make_image(d / "disk.raw", "raw", "64M")
    write(d / "disk.raw", "raw", "write -P 1 0 4M", "write -P 2 40M 1M", "write -P 3 63M 1M")
    make_image(d / "base.qcow2", "qcow2", "32M")
    write(d / "base.qcow2", "qcow2", "write -P 4 0 2M")
    make_image(d / "top.qcow2", "qcow2", "32M", backing="base.qcow2", backing_fmt="qcow2")
    write(d / "top.qcow2", "qcow2", "write -P 5 1M 2M")


@pytest.mark.parametrize(("name", "fmt"), [("disk.raw", "raw"), ("top.qcow2", "qcow2")])
def test_archive_and_restore_round_trip(engine: Engine, make_image: MakeImage, backup: Path,
                                        name: str, fmt: str) -> None:
    sources(engine, make_image)
    d, dest = engine.pool_dir, backup / f"{name}.zst"
    source = d / name
    job = engine.ok(ArchiveVolume("local", engine.pool, name, dest=str(dest)))
    sidecar = json.loads((backup / f"{name}.zst.json").read_text())
    raw = subprocess.run(["zstd", "-q", "-d", "-c", str(dest)], capture_output=True,
                         check=True).stdout
    size = int(info(source, fmt)["virtual-size"])  # type: ignore[call-overload]
    assert len(raw) == sidecar["virtual_size"] == size
    # The content is guarded by zstd's own checksum in the frame, the file by its sha256.
    assert sidecar["raw_sha256"] is None and sidecar["version"] == 2
    listing = subprocess.run(["zstd", "-lv", str(dest)], capture_output=True, text=True,
                             check=True).stdout
    assert re.search(r"Check:\s+XXH64", listing), listing
    assert sha256(dest) == sidecar["archive_sha256"] == job.resume["archive"]["archive_sha256"]
    data = {"disk.raw": 6 * MiB, "top.qcow2": 3 * MiB}[name]
    assert data <= sidecar["data_bytes"] <= data + MiB  # what is allocated, holes are not
    assert (sidecar["volume"], sidecar["format"], sidecar["kind"]) == (
        name, fmt, "storage-console archive")
    assert sidecar["producer"].startswith("storage-console ") and sidecar["created"]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600  # a disk's data: its owner's only
    assert os.path.getsize(dest) < 64 * 1024  # patterns and holes compress to nothing
    assert sorted(os.listdir(backup)) == [f"{name}.zst", f"{name}.zst.json"]

    engine.ok(RestoreVolume("local", engine.pool, "back.raw", archive=str(dest)))
    assert identical(source, fmt, d / "back.raw", "raw")
    assert os.stat(d / "back.raw").st_blocks * 512 < 12 * MiB  # holes stay holes
    engine.ok(RestoreVolume("local", engine.pool, "back.qcow2", archive=str(dest),
                            format="qcow2"))
    assert identical(source, fmt, d / "back.qcow2", "qcow2")
    check_clean(d / "back.qcow2")
    assert temporaries(d, backup) == []


def test_archive_space_and_refusals(engine: Engine, make_image: MakeImage,
                                    backup: Path) -> None:
    sources(engine, make_image)
    into_pool = ArchiveVolume("local", engine.pool, "top.qcow2",
                              dest=str(engine.other_dir / "top.zst"))
    pool, need = into_pool.space(engine.inventory)
    assert pool == engine.other and need >= 2 * 3 * MiB  # its data, and flattened
    elsewhere = ArchiveVolume("local", engine.pool, "disk.raw", dest=str(backup / "a.zst"))
    assert elsewhere.space(engine.inventory) == (engine.pool, 0)  # statvfs checks instead
    assert elsewhere.commands(engine.inventory) == [
        ["zstd", "-q", "-1", "-T0", "--check", "-c"]]
    assert into_pool.commands(engine.inventory)[0][:7] == [
        "qemu-img", "convert", "-p", "-f", "qcow2", "-O", "raw"]
    (backup / "taken.zst").write_bytes(b"keep")
    for dest, why in ((str(backup / "taken.zst"), "already exists"),
                      ("relative.zst", "not an absolute file path"),
                      (str(backup / "nodir" / "a.zst"), "is not a directory")):
        job = engine.run(ArchiveVolume("local", engine.pool, "disk.raw", dest=dest))
        assert job.state == JobState.FAILED and job.error and why in job.error, job.error
    assert (backup / "taken.zst").read_bytes() == b"keep"
    engine.ok(ArchiveVolume("local", engine.pool, "disk.raw", dest=str(backup / "taken.zst"),
                            overwrite=True, level=3))
    assert json.loads((backup / "taken.zst.json").read_text())["level"] == 3
    assert sorted(os.listdir(backup)) == ["taken.zst", "taken.zst.json"]


def test_restore_of_a_damaged_archive_fails_and_leaves_nothing(
        engine: Engine, make_image: MakeImage, backup: Path) -> None:
    sources(engine, make_image)
    dest = backup / "disk.zst"
    engine.ok(ArchiveVolume("local", engine.pool, "disk.raw", dest=str(dest)))
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    for fmt in (None, "qcow2"):
        job = engine.run(RestoreVolume("local", engine.pool, "back", archive=str(dest),
                                       format=fmt))
        assert job.state == JobState.FAILED and job.error
        assert "damaged" in job.error and "volume 'back'" in job.error
    assert volumes(engine.pool_dir) == ["base.qcow2", "disk.raw", "top.qcow2"]
    assert temporaries(engine.pool_dir) == []
    # Into an existing volume: refused before it is touched.
    target = make_image(engine.pool_dir / "target", "raw", "64M")
    write(target, "raw", "write -P 9 0 64M")
    before = sha256(target)
    job = engine.run(RestoreVolume("local", engine.pool, "target", archive=str(dest),
                                   into_existing=True))
    assert job.state == JobState.FAILED and job.error and "was not touched" in job.error
    assert sha256(target) == before
    # A sidecar that does not match its archive is caught the same way.
    engine.ok(ArchiveVolume("local", engine.pool, "disk.raw", dest=str(dest), overwrite=True))
    sidecar = json.loads((backup / "disk.zst.json").read_text())
    sidecar["raw_sha256"] = "0" * 64
    (backup / "disk.zst.json").write_text(json.dumps(sidecar))
    job = engine.run(RestoreVolume("local", engine.pool, "back", archive=str(dest)))
    assert job.state == JobState.FAILED and job.error and "sha256" in job.error
    assert temporaries(engine.pool_dir) == [] and not (engine.pool_dir / "back").exists()


def test_restore_of_a_version_1_archive_checks_its_raw_sha256(
        engine: Engine, make_image: MakeImage, backup: Path) -> None:
    """Archives made before version 2 carry the sha256 of the raw content: still read,
    and still checked."""
    sources(engine, make_image)
    dest = backup / "disk.zst"
    engine.ok(ArchiveVolume("local", engine.pool, "disk.raw", dest=str(dest)))
    sidecar = json.loads((backup / "disk.zst.json").read_text())
    raw = subprocess.run(["zstd", "-q", "-d", "-c", str(dest)], capture_output=True,
                         check=True).stdout
    sidecar.update(version=1, raw_sha256=hashlib.sha256(raw).hexdigest())
    (backup / "disk.zst.json").write_text(json.dumps(sidecar))
    engine.ok(RestoreVolume("local", engine.pool, "back.raw", archive=str(dest)))
    assert identical(engine.pool_dir / "disk.raw", "raw", engine.pool_dir / "back.raw", "raw")
    sidecar["raw_sha256"] = hashlib.sha256(raw + b"x").hexdigest()
    (backup / "disk.zst.json").write_text(json.dumps(sidecar))
    job = engine.run(RestoreVolume("local", engine.pool, "again.raw", archive=str(dest)))
    assert job.state == JobState.FAILED and job.error and "data's sha256" in job.error
    assert not (engine.pool_dir / "again.raw").exists() and temporaries(engine.pool_dir) == []
    del sidecar["raw_sha256"]  # version 1 without it is not a sidecar this reads
    (backup / "disk.zst.json").write_text(json.dumps(sidecar))
    job = engine.run(RestoreVolume("local", engine.pool, "again.raw", archive=str(dest)))
    assert job.state == JobState.FAILED and job.error and "raw_sha256" in job.error


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_restore_into_an_existing_volume(engine: Engine, make_image: MakeImage,
                                         backup: Path, fmt: str) -> None:
    sources(engine, make_image)
    d, dest = engine.pool_dir, backup / "top.zst"
    engine.ok(ArchiveVolume("local", engine.pool, "top.qcow2", dest=str(dest)))  # 32 MiB
    target = make_image(d / "target", fmt, "48M")
    write(target, fmt, "write -P 9 0 48M")  # old data everywhere, past 32 MiB too
    engine.ok(RestoreVolume("local", engine.pool, "target", archive=str(dest),
                            into_existing=True))
    assert int(info(target, fmt)["virtual-size"]) == 48 * MiB  # type: ignore[call-overload]
    assert info(target, fmt)["format"] == fmt
    # compare: equal only if the larger image holds nothing but zeroes past the smaller.
    assert identical(d / "top.qcow2", "qcow2", target, fmt)
    assert reads(target, fmt, f"read -P 0 32M {16 * MiB}")
    if fmt == "qcow2":
        check_clean(target)
    small = make_image(d / "small", fmt, "16M")
    write(small, fmt, "write -P 9 0 1M")
    before = sha256(small)
    job = engine.run(RestoreVolume("local", engine.pool, "small", archive=str(dest),
                                   into_existing=True))
    assert job.state == JobState.FAILED and job.error and "smaller" in job.error
    assert sha256(small) == before and temporaries(d) == []


def test_cancel_an_archive_mid_way_removes_its_temporary_files(
        engine: Engine, backup: Path) -> None:
    with open(engine.pool_dir / "big.raw", "wb") as f:  # 8 GiB: seconds of zstd on zeroes
        f.truncate(8 << 30)
        f.write(b"x" * MiB)
    stopped = engine.stopped_commands()
    job = engine.runner.submit(ArchiveVolume("local", engine.pool, "big.raw",
                                             dest=str(backup / "big.zst")))
    deadline = time.monotonic() + PATIENCE
    while engine.runner.journal.get(job.id).done_bytes < 256 * MiB:
        assert time.monotonic() < deadline, engine.runner.journal.get(job.id)
        time.sleep(0.01)
    assert os.listdir(backup) == [f"{TEMP_PREFIX}{job.id}-big.zst"]  # under way
    engine.runner.cancel(job.id)
    done = engine.runner.wait(job.id, PATIENCE)
    assert (done.state, done.error) == (JobState.ABORTED, "cancelled")
    assert [argv[0] for argv in stopped] == ["zstd"]  # stopped mid-way, not waited out
    assert os.listdir(backup) == []


def test_prefetch_asks_for_data_just_ahead_and_never_holes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sparse.raw"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.write(b"a" * (4 * MiB))
        f.seek(40 * MiB)
        f.write(b"b" * MiB)
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: asked.append(
        (offset, length)) if advice == os.POSIX_FADV_WILLNEED else None)
    monkeypatch.setattr(archive, "PREFETCH", 8 * MiB)
    monkeypatch.setattr(archive, "PREFETCH_STEP", 4 * MiB)
    # The data just written is in the page cache: as if it were not (a cold read).
    monkeypatch.setattr(archive._Prefetch, "_cached", lambda self, start, end: False)
    fd = os.open(path, os.O_RDONLY)
    try:
        prefetch = archive._Prefetch(fd, 64 * MiB)
        for position in (0, 0, 30 * MiB, 36 * MiB):
            prefetch.advance(position)
        assert asked == [(0, 4 * MiB)]  # the hole up to 40 MiB is never asked for
        prefetch.advance(37 * MiB)  # 40 MiB is within a step now
        prefetch.advance(60 * MiB)
        assert asked == [(0, 4 * MiB), (40 * MiB, MiB)]
    finally:
        os.close(fd)


def test_prefetch_skips_what_is_cached_already(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "warm.raw"
    path.write_bytes(b"w" * (2 * MiB))  # just written: in the page cache
    asked: list[int] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: asked.append(
        offset) if advice == os.POSIX_FADV_WILLNEED else None)
    fd = os.open(path, os.O_RDONLY)
    try:
        prefetch = archive._Prefetch(fd, 2 * MiB)
        assert prefetch._cached(0, 2 * MiB)
        prefetch.advance(0)
        assert asked == []
    finally:
        os.close(fd)


def test_zstd_argv() -> None:
    assert archive.compress_argv() == ["zstd", "-q", "-1", "-T0", "--check", "-c"]
    assert archive.compress_argv(19) == ["zstd", "-q", "-19", "-T0", "--check", "-c"]
    assert archive.decompress_argv() == ["zstd", "-q", "-d", "-c"]
    for bad in (0, 20, True):
        with pytest.raises(ValueError, match="level"):
            archive.compress_argv(bad)


def test_sidecar_is_checked(pool_dir: Path, tmp_path: Path) -> None:
    d = DirDriver(LocalTransport(), (str(pool_dir),))
    write_file(tmp_path / "a.zst", b"x")
    with pytest.raises(InvalidRequest, match="sidecar"):
        d.read_archive(str(tmp_path / "a.zst"))
    for bad in (b"{}", b"[1]", b"not json", json.dumps(
            {"kind": archive.SIDECAR_KIND, "version": 1, "volume": "v"}).encode()):
        (tmp_path / "a.zst.json").write_bytes(bad)
        with pytest.raises(InvalidRequest, match="is not an archive's sidecar"):
            d.read_archive(str(tmp_path / "a.zst"))
    with pytest.raises(InvalidRequest, match="no archive"):
        d.read_archive(str(tmp_path / "none.zst"))


def test_orphan_sidecar_is_replaced_but_a_foreign_file_is_not(
        engine: Engine, make_image: MakeImage, backup: Path) -> None:
    """A crash between publishing the sidecar and the archive leaves a sidecar alone:
    the next archive replaces it. A file of someone else's under that name stays."""
    make_image(engine.pool_dir / "v", "raw", "1M")
    (backup / "v.zst.json").write_bytes(json.dumps({"kind": archive.SIDECAR_KIND}).encode())
    engine.ok(ArchiveVolume("local", engine.pool, "v", dest=str(backup / "v.zst")))
    (backup / "w.zst.json").write_text("mine")
    job = engine.run(ArchiveVolume("local", engine.pool, "v", dest=str(backup / "w.zst")))
    assert job.state == JobState.FAILED and job.error and "already exists" in job.error
    assert (backup / "w.zst.json").read_text() == "mine"


# -- the job layer ---------------------------------------------------------------------


def test_every_new_operation_is_registered_and_refused_read_only(
        tmp_path: Path, pool_dir: Path, make_image: MakeImage, backup: Path) -> None:
    make_image(pool_dir / "v", "raw", "1M")
    other = tmp_path / "o"
    other.mkdir()
    engine = Engine(tmp_path, pool_dir, other, read_only=True)
    pool = engine.pool
    ops: list[Operation] = [
        SnapshotVolume("local", pool, "v"), CloneVolume("local", pool, "v", dest_name="c"),
        GrowFilesystem("local", pool, "v"),
        ArchiveVolume("local", pool, "v", dest=str(backup / "a.zst")),
        RestoreVolume("local", pool, "r", archive=str(backup / "a.zst")),
        DeleteVolume("local", pool, "v", typed_name="v", wipe="zero"),
        CreateVolume("local", pool, "n", format="raw", capacity=MiB, preallocation="full")]
    for op in ops:
        assert OPERATIONS[op.kind] is type(op)
        with pytest.raises(Exception, match="read-only"):
            engine.runner.submit(op)
    assert engine.runner.journal.jobs() == [] and volumes(pool_dir) == ["v"]
    engine.runner.close()


def test_driver_refuses_bad_options(pool_dir: Path, make_image: MakeImage) -> None:
    d = DirDriver(LocalTransport(), (str(pool_dir),))
    pool = Pool("local", "p", "dir", str(pool_dir))
    base = make_image(pool_dir / "b", "raw", "1M")
    with pytest.raises(InvalidRequest, match="preallocation is falloc or full"):
        d.create_volume(pool, "x", ImageFormat.RAW, MiB, preallocation="metadata")
    with pytest.raises(InvalidRequest, match="cannot be preallocated"):
        d.create_volume(pool, "x", ImageFormat.QCOW2, MiB, preallocation="full",
                        backing=d.probe_volume(pool, base.name))
    with pytest.raises(InvalidRequest, match="a wipe is zero or random"):
        d.delete_volume(pool, "b", wipe="shred")
    with pytest.raises(InvalidRequest, match="strategy"):
        d.clone_volume(pool, "b", pool, "c", strategy="fast")
    (pool_dir / "b2").touch()
    with pytest.raises(VolumeExists):
        d.snapshot_volume(pool, "b", "b2")
    assert sorted(os.listdir(pool_dir)) == ["b", "b2"]
