"""Fixes run as jobs (``console.jobs.fixing.RunFix``) end to end through a Runner, on
real images whose faults are made for real: refcounts raised or zeroed in the qcow2
refcount block, the dirty bit set in the header, deep chains, moved backings. Results
are checked with qemu-img check (exit 0) and qemu-img compare where data must not
change."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import qemuimg
from backends.contract import InvalidRequest, ReadOnlyViolation
from backends.transport.scanner import TEMP_PREFIX
from console.fixes import Fix, FixType, Risk
from console.jobs.fixing import BACKUP_MARK, RunFix
from console.jobs.journal import JobRecord, JobState
from console.jobs.operations import OPERATIONS, describe_job, operation_from
from tests.conftest import PATIENCE, MakeImage
from tests.test_jobs_operations import (
    Engine,
    check_clean,
    hold,
    identical,
    info,
    release,
    sha256,
    temporaries,
    write,
)

MiB = 1 << 20
L_MASK = 0x00FFFFFFFFFFFE00


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


def fix(engine: Engine, code: str, name: str, fix_type: str = "clean",
        **params: object) -> RunFix:
    return RunFix("local", engine.pool, name, fix_type=fix_type, code=code,
                  fix_params={"name": name, **params})


def failed(engine: Engine, op: RunFix) -> JobRecord:
    job = engine.run(op)
    assert job.state == JobState.FAILED, (job.state, job.error)
    assert job.error
    return job


def qemu_check(path: Path, fmt: str = "qcow2") -> int:
    return subprocess.run(["qemu-img", "check", "-U", "-f", fmt, str(path)],
                          capture_output=True).returncode


# -- qcow2 surgery ------------------------------------------------------------------


def _u(path: Path, offset: int, fmt: str) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        size = struct.calcsize(fmt)
        value: int = struct.unpack(fmt, f.read(size))[0]
        return value


def _put(path: Path, offset: int, fmt: str, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def first_data_cluster(path: Path) -> int:
    """The host offset of guest cluster 0 (it must have been written)."""
    l1 = _u(path, 40, ">Q")
    l2 = _u(path, l1, ">Q") & L_MASK
    data = _u(path, l2, ">Q") & L_MASK
    assert data, "guest cluster 0 is not allocated"
    return data


def set_refcount(path: Path, host_offset: int, value: int) -> None:
    """Write the refcount of the cluster at ``host_offset`` (16-bit refcounts)."""
    assert _u(path, 96, ">I") == 4  # refcount_order: 16 bits
    cluster_bits = _u(path, 20, ">I")
    block = _u(path, _u(path, 48, ">Q"), ">Q") & L_MASK
    _put(path, block + 2 * (host_offset >> cluster_bits), ">H", value)


def leak_a_cluster(path: Path) -> None:
    """Grow the file by two clusters and count the first in use: nothing refers to it."""
    cluster = 1 << _u(path, 20, ">I")
    end = -(-os.path.getsize(path) // cluster) * cluster
    os.truncate(path, end + 2 * cluster)
    set_refcount(path, end, 1)


def set_dirty(path: Path) -> None:
    _put(path, 72, ">Q", _u(path, 72, ">Q") | 1)


# -- clean --------------------------------------------------------------------------


def test_leftover_temporary_is_removed_unless_its_job_is_active(engine: Engine) -> None:
    d = engine.pool_dir
    left = d / f"{TEMP_PREFIX}999-disk.qcow2"
    left.write_bytes(b"x" * MiB)
    job = engine.ok(fix(engine, "leftover-temporary", left.name))
    assert not left.exists()
    assert job.resume["after"] == {"status": "removed"}
    assert job.resume["before"]["bytes"] >= MiB
    # A job still pending in the journal: its output in flight is left alone.
    active = engine.runner.journal.submit("create", {}, "local", engine.pool, "x.qcow2")
    busy = d / f"{TEMP_PREFIX}{active.id}-x.qcow2"
    busy.write_bytes(b"y")
    job = failed(engine, fix(engine, "leftover-temporary", busy.name))
    assert "pending" in (job.error or "") and busy.exists()
    # Only ever a job's temporary file.
    (d / "disk.raw").write_bytes(b"z")
    job = failed(engine, fix(engine, "leftover-temporary", "disk.raw"))
    assert "temporary" in (job.error or "") and (d / "disk.raw").exists()


def test_leaked_clusters_are_repaired_and_data_unchanged(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    disk = make_image(d / "disk.qcow2", "qcow2", "16M")
    write(disk, "qcow2", "write -P 7 0 2M")
    leak_a_cluster(disk)
    assert qemu_check(disk) == 3  # leaked clusters only
    reference = shutil.copy(disk, engine.other_dir / "reference.qcow2")
    job = engine.ok(fix(engine, "leaked-clusters", "disk.qcow2", format="qcow2"))
    assert job.resume["before"]["status"] == "leaks" and job.resume["before"]["leaks"] == 1
    assert job.resume["after"]["status"] == "clean"
    assert qemu_check(disk) == 0
    assert identical(disk, "qcow2", Path(reference), "qcow2")
    assert job.stages == 3 and describe_job(job) == \
        "fix disk.qcow2: leaked-clusters (clean)"


def test_zeroed_ranges_become_holes_with_the_same_data(engine: Engine) -> None:
    disk = engine.pool_dir / "disk.raw"
    with open(disk, "wb") as f:
        f.write(b"\1" * MiB)
        f.write(bytes(8 * MiB))  # written zeroes: allocated
        f.write(b"\2" * MiB)
    os.fsync(os.open(disk, os.O_RDONLY))
    reference = shutil.copy(disk, engine.other_dir / "reference.raw")
    before = os.stat(disk).st_blocks * 512
    assert before >= 10 * MiB
    job = engine.ok(fix(engine, "zeroed-ranges", "disk.raw"))
    after = os.stat(disk).st_blocks * 512
    assert after <= 2 * MiB + 64 * 1024
    assert job.resume["freed"] == before - after
    assert job.resume["after"]["status"] == "unsupported"  # raw: no check to run
    assert identical(disk, "raw", Path(reference), "raw")
    assert os.path.getsize(disk) == 10 * MiB


def test_zeroed_ranges_refuse_a_qcow2_image(engine: Engine, make_image: MakeImage) -> None:
    make_image(engine.pool_dir / "disk.qcow2", "qcow2", "4M")
    job = failed(engine, fix(engine, "zeroed-ranges", "disk.qcow2"))
    assert "raw" in (job.error or "")


def test_unreferenced_snapshot_dropped_only_when_marked_and_unreferenced(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    snap = make_image(d / "old.snap", "qcow2", "4M")
    write(snap, "qcow2", "write -P 1 0 1M")
    os.chmod(snap, 0o440)
    job = failed(engine, fix(engine, "snapshot-unreferenced", "old.snap"))
    assert "marked" in (job.error or "") and snap.exists()
    kept = make_image(d / "kept.snap", "qcow2", "4M")
    make_image(d / "disk.qcow2", "qcow2", "4M", backing="kept.snap", backing_fmt="qcow2")
    job = failed(engine, fix(engine, "snapshot-unreferenced", "kept.snap", marked=True))
    assert "based on it" in (job.error or "") and kept.exists()
    job = engine.ok(fix(engine, "snapshot-unreferenced", "old.snap", marked=True))
    assert not snap.exists() and job.resume["after"] == {"status": "removed"}


# -- optimize -----------------------------------------------------------------------


def deep_chain(engine: Engine, make_image: MakeImage, depth: int = 5) -> Path:
    d = engine.pool_dir
    base = make_image(d / "base.raw", "raw", "16M")
    write(base, "raw", "write -P 1 0 4M")
    below, below_fmt = "base.raw", "raw"
    for i in range(1, depth):
        top = make_image(d / f"s{i}.qcow2", "qcow2", "16M", backing=below,
                         backing_fmt=below_fmt)
        write(top, "qcow2", f"write -P {i + 1} {i}M 1M")
        below, below_fmt = top.name, "qcow2"
    return d / below


def test_deep_chain_is_flattened_in_place(engine: Engine, make_image: MakeImage) -> None:
    top = deep_chain(engine, make_image)
    os.chmod(top, 0o640)
    reference = engine.other_dir / "reference.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(top),
                    str(reference)], check=True)
    assert engine.inventory.probe_volume("local", engine.pool, top.name).chain_depth == 5
    job = engine.ok(fix(engine, "chain-too-deep", top.name, "optimize", format="qcow2"))
    assert "backing-filename" not in info(top, "qcow2")
    assert identical(top, "qcow2", reference, "qcow2")
    check_clean(top)
    assert stat.S_IMODE(os.stat(top).st_mode) == 0o640
    assert job.resume["before"] == {"depth": 5} and job.resume["after"]["depth"] == 1
    assert temporaries(engine.pool_dir) == []
    assert job.stages == 5


def test_cancel_mid_flatten_leaves_no_temporary_and_the_volume_whole(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    base = d / "base.raw"
    with open(base, "wb") as f:  # 2 GiB of data: seconds of qemu-img convert
        chunk = b"data" * (MiB // 4)
        for _ in range(2048):
            f.write(chunk)
    make_image(d / "disk.qcow2", "qcow2", "2G", backing="base.raw", backing_fmt="raw")
    write(d / "disk.qcow2", "qcow2", "write -P 5 0 1M")
    before = sha256(d / "disk.qcow2")
    stopped = engine.stopped_commands()
    job = engine.runner.submit(fix(engine, "chain-too-deep", "disk.qcow2", "optimize",
                                   format="qcow2"))
    deadline = time.monotonic() + PATIENCE
    while engine.runner.journal.get(job.id).done_bytes == 0:
        assert time.monotonic() < deadline, engine.runner.journal.get(job.id)
        time.sleep(0.01)
    assert temporaries(d) == [f"{TEMP_PREFIX}{job.id}-disk.qcow2"]  # under way
    engine.runner.cancel(job.id)
    done = engine.runner.wait(job.id, PATIENCE)
    assert (done.state, done.error) == (JobState.ABORTED, "cancelled")
    # qemu-img was stopped mid-way, not waited out (how fast is not for a busy machine)
    assert [argv[:2] for argv in stopped] == [("qemu-img", "convert")]
    assert temporaries(d) == []
    assert sha256(d / "disk.qcow2") == before
    assert info(d / "disk.qcow2", "qcow2")["backing-filename"] == "base.raw"


def test_compat_010_is_amended_to_11(engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    disk = d / "old.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10",
                    str(disk), "8M"], check=True)
    write(disk, "qcow2", "write -P 3 1M 1M")
    reference = shutil.copy(disk, engine.other_dir / "reference.qcow2")
    job = engine.ok(fix(engine, "compat-0.10", "old.qcow2", "optimize"))
    assert info(disk, "qcow2")["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
    assert job.resume["before"] == {"version": 2} and job.resume["after"]["version"] == 3
    assert identical(disk, "qcow2", Path(reference), "qcow2")
    check_clean(disk)


# -- merge --------------------------------------------------------------------------


def test_merge_drops_the_intermediate_snapshot_by_a_safe_rebase(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    base = make_image(d / "base.raw", "raw", "8M")
    write(base, "raw", "write -P 1 0 8M")
    snap = make_image(d / "snap.qcow2", "qcow2", "8M", backing="base.raw", backing_fmt="raw")
    write(snap, "qcow2", "write -P 2 1M 2M")
    top = make_image(d / "top.qcow2", "qcow2", "8M", backing="snap.qcow2",
                     backing_fmt="qcow2")
    write(top, "qcow2", "write -P 3 2M 1M")
    reference = engine.other_dir / "reference.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(top),
                    str(reference)], check=True)
    other = make_image(d / "other.qcow2", "qcow2", "8M", backing="snap.qcow2",
                       backing_fmt="qcow2")
    job = failed(engine, fix(engine, "merge-snapshot", "top.qcow2", "merge",
                             base="snap.qcow2"))
    assert "other.qcow2" in (job.error or "")
    assert info(top, "qcow2")["backing-filename"] == "snap.qcow2"
    other.unlink()
    job = engine.ok(fix(engine, "merge-snapshot", "top.qcow2", "merge", base="snap.qcow2"))
    assert info(top, "qcow2")["backing-filename"] == "base.raw"
    assert info(top, "qcow2")["backing-filename-format"] == "raw"
    assert identical(top, "qcow2", reference, "raw")
    check_clean(top)
    assert snap.exists()  # left unreferenced, for a snapshot-unreferenced fix
    assert job.resume["before"]["depth"] == 3 and job.resume["after"]["depth"] == 2
    assert engine.inventory.dependants("local", str(snap)) == []


def writable_pair(engine: Engine, make_image: MakeImage, base_fmt: str = "qcow2") -> Path:
    """``base`` (writable, its own data) under ``top`` (data of its own over part of it);
    the top's guest view saved as ``reference.raw`` in the other pool."""
    d = engine.pool_dir
    base = make_image(d / f"base.{base_fmt}", base_fmt, "8M")
    write(base, base_fmt, "write -P 1 0 8M")
    top = make_image(d / "top.qcow2", "qcow2", "8M", backing=base.name, backing_fmt=base_fmt)
    write(top, "qcow2", "write -P 2 1M 2M", "write -z 6M 1M")
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(top),
                    str(engine.other_dir / "reference.raw")], check=True)
    return top


def test_commit_into_base_keeps_the_top_as_an_empty_overlay(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    top = writable_pair(engine, make_image)
    base, reference = d / "base.qcow2", engine.other_dir / "reference.raw"
    os.chmod(top, 0o640)
    other = make_image(d / "other.qcow2", "qcow2", "8M", backing="base.qcow2",
                       backing_fmt="qcow2")
    before = sha256(base)
    job = failed(engine, fix(engine, "commit-into-base", "top.qcow2", "merge",
                             base="base.qcow2"))
    assert "other.qcow2" in (job.error or "") and sha256(base) == before
    other.unlink()
    os.chmod(base, 0o440)  # a snapshot is never written
    job = failed(engine, fix(engine, "commit-into-base", "top.qcow2", "merge",
                             base="base.qcow2"))
    assert "read-only" in (job.error or "") and sha256(base) == before
    os.chmod(base, 0o640)
    op = fix(engine, "commit-into-base", "top.qcow2", "merge", base="base.qcow2")
    assert op.stages == ("check", "commit", "verify", "empty", "re-check")
    assert op.locked_volumes() == [(engine.pool, "top.qcow2"), (engine.pool, "base.qcow2")]
    job = engine.ok(op)
    assert identical(base, "qcow2", reference, "raw")  # the base holds the data now
    assert identical(top, "qcow2", reference, "raw")
    assert info(top, "qcow2")["backing-filename"] == "base.qcow2"
    assert os.stat(top).st_blocks * 512 < 1 * MiB  # emptied: nothing of its own
    assert stat.S_IMODE(os.stat(top).st_mode) == 0o640
    check_clean(top)
    check_clean(base)
    assert job.resume["before"]["depth"] == 2 and job.resume["after"]["depth"] == 2
    assert temporaries(d) == []


def test_commit_into_a_raw_base_drops_the_top(engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    top = writable_pair(engine, make_image, "raw")
    leaf = make_image(d / "leaf.qcow2", "qcow2", "8M", backing="top.qcow2",
                      backing_fmt="qcow2")
    job = failed(engine, fix(engine, "commit-into-base", "top.qcow2", "merge",
                             base="base.raw", drop=True))
    assert "leaf.qcow2" in (job.error or "") and top.exists()
    leaf.unlink()
    op = fix(engine, "commit-into-base", "top.qcow2", "merge", base="base.raw", drop=True)
    assert op.commands(engine.inventory)[:3] == [
        ["qemu-img", "commit", "-p", "-d", "-f", "qcow2", "--", str(top)],
        ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", "--", str(top),
         f"{engine.pool}/base.raw"],
        ["unlink", "--", str(top)]]
    job = engine.ok(op)
    assert not top.exists()
    assert identical(d / "base.raw", "raw", engine.other_dir / "reference.raw", "raw")
    assert job.resume["after"]["top"] == "removed"
    assert job.resume["after"]["status"] == "unsupported"  # raw: no check to run


def test_commit_into_base_refused_on_a_base_in_use(engine: Engine, make_image: MakeImage,
                                                  nbd_dir: Path) -> None:
    writable_pair(engine, make_image)
    base = engine.pool_dir / "base.qcow2"
    before = sha256(base)
    pid = hold(base, "qcow2", nbd_dir)
    try:
        job = failed(engine, fix(engine, "commit-into-base", "top.qcow2", "merge",
                                 base="base.qcow2"))
        assert "base.qcow2" in (job.error or "") and "in use" in (job.error or "")
    finally:
        release(pid)
    assert sha256(base) == before


# -- optimize under the performance strategy ----------------------------------------


def test_performance_layout_converts_to_a_preallocated_image_of_the_preferred_format(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    disk = make_image(d / "disk.img", "raw", "16M")
    write(disk, "raw", "write -P 3 2M 1M")
    os.chmod(disk, 0o600)
    reference = shutil.copy(disk, engine.other_dir / "reference.raw")
    assert os.stat(disk).st_blocks * 512 < 2 * MiB
    op = fix(engine, "performance-layout", "disk.img", "optimize", format="raw",
             output_format="qcow2")
    assert op.commands(engine.inventory)[0] == [
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", "-W", "-m", "16", "-o",
        "preallocation=falloc", "--", str(disk), f"{engine.pool}/{TEMP_PREFIX}0-disk.img"]
    job = engine.ok(op)
    assert info(disk, "qcow2")["format"] == "qcow2"
    assert identical(disk, "qcow2", Path(reference), "raw")
    assert os.stat(disk).st_blocks * 512 >= 16 * MiB  # preallocated
    assert stat.S_IMODE(os.stat(disk).st_mode) == 0o600
    check_clean(disk)
    assert job.resume["before"]["format"] == "raw"
    assert temporaries(d) == []
    # Something based on it reads it as qcow2 now: it is not rewritten under it.
    make_image(d / "over.qcow2", "qcow2", "16M", backing="disk.img", backing_fmt="qcow2")
    job = failed(engine, fix(engine, "performance-layout", "disk.img", "optimize",
                             format="qcow2", output_format="raw"))
    assert "over.qcow2" in (job.error or "")


# -- mend ---------------------------------------------------------------------------


def test_corruption_is_repaired_only_when_confirmed_and_after_a_backup(
        engine: Engine, make_image: MakeImage) -> None:
    d = engine.pool_dir
    disk = make_image(d / "disk.qcow2", "qcow2", "16M")
    write(disk, "qcow2", "write -P 7 0 2M")
    set_refcount(disk, first_data_cluster(disk), 0)  # referenced, counted as free
    assert qemu_check(disk) == 2
    corrupt = sha256(disk)
    reference = engine.other_dir / "reference.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk),
                    str(reference)], check=True)
    job = failed(engine, fix(engine, "corruption", "disk.qcow2", "mend", format="qcow2",
                             backup=True))
    assert "confirmed" in (job.error or "")
    assert sha256(disk) == corrupt and temporaries(d) == []
    assert [n for n in os.listdir(d) if BACKUP_MARK in n] == []
    job = engine.ok(RunFix.from_fix(Fix(
        FixType.MEND, "local", engine.pool, "disk.qcow2", "corruption", "2 corruptions",
        0, Risk.HIGH, (), {"name": "disk.qcow2", "format": "qcow2", "backup": True},
        needs_confirmation=True), confirmed=True))
    assert qemu_check(disk) == 0
    assert identical(disk, "qcow2", reference, "raw")
    backups = [n for n in os.listdir(d) if BACKUP_MARK in n]
    assert backups == [job.resume["backup"]]
    assert sha256(d / backups[0]) == corrupt  # the file as it was, byte for byte
    assert job.resume["before"]["status"] == "corrupt"
    assert job.resume["after"]["status"] == "clean"
    assert temporaries(d) == []


def test_dirty_bit_is_cleared_through_a_check(engine: Engine) -> None:
    disk = engine.pool_dir / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
                    str(disk), "8M"], check=True)
    write(disk, "qcow2", "write -P 4 0 1M")
    reference = shutil.copy(disk, engine.other_dir / "reference.qcow2")
    set_dirty(disk)
    assert info(disk, "qcow2")["dirty-flag"] is True
    assert engine.inventory.probe_volume("local", engine.pool, "disk.qcow2").info.dirty
    job = engine.ok(fix(engine, "dirty-bit", "disk.qcow2", "mend", format="qcow2"))
    assert _u(disk, 72, ">Q") & 1 == 0
    assert job.resume["after"]["dirty"] is False
    assert qemu_check(disk) == 0
    assert identical(disk, "qcow2", Path(reference), "qcow2")


def test_moved_backing_is_relinked_to_the_one_same_sized_namesake(
        engine: Engine, make_image: MakeImage) -> None:
    d, other = engine.pool_dir, engine.other_dir
    base = make_image(d / "base.raw", "raw", "8M")
    write(base, "raw", "write -P 1 0 8M")
    disk = make_image(d / "disk.qcow2", "qcow2", "8M", backing="base.raw", backing_fmt="raw")
    write(disk, "qcow2", "write -P 2 1M 1M")
    reference = engine.pool_dir.parent / "reference.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk),
                    str(reference)], check=True)
    hidden = engine.pool_dir.parent / "hidden.raw"
    shutil.move(base, hidden)
    problem = engine.inventory.probe_volume("local", engine.pool, "disk.qcow2").chain.problem
    assert problem == "missing"
    # A same-named image of another size is not its backing.
    (other / "base.raw").write_bytes(bytes(4 * MiB))
    job = failed(engine, fix(engine, "backing-moved", "disk.qcow2", "mend",
                             new_backing=str(other / "base.raw"), backing_format="raw"))
    assert "not its backing" in (job.error or "")
    shutil.move(hidden, other / "base.raw")
    job = engine.ok(fix(engine, "backing-moved", "disk.qcow2", "mend",
                        new_backing=str(other / "base.raw"), backing_format="raw"))
    assert info(disk, "qcow2")["backing-filename"] == str((other / "base.raw").resolve())
    assert identical(disk, "qcow2", reference, "raw")
    assert job.resume["after"]["chain_problem"] is None
    check_clean(disk)


# -- refusals and the journal -------------------------------------------------------


def test_refused_on_an_image_in_use(engine: Engine, make_image: MakeImage,
                                    nbd_dir: Path) -> None:
    disk = make_image(engine.pool_dir / "disk.qcow2", "qcow2", "16M")
    write(disk, "qcow2", "write -P 7 0 1M")
    leak_a_cluster(disk)
    before = sha256(disk)
    pid = hold(disk, "qcow2", nbd_dir)
    try:
        job = failed(engine, fix(engine, "leaked-clusters", "disk.qcow2", format="qcow2"))
        assert "in use" in (job.error or "")
        assert sha256(disk) == before
    finally:
        release(pid)
    assert qemu_check(disk) == 3


def test_read_only_mode_refuses_a_fix(tmp_path: Path, pool_dir: Path,
                                      make_image: MakeImage) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_image(pool_dir / "old.qcow2", "qcow2", "4M")
    e = Engine(tmp_path, pool_dir, other, read_only=True)
    try:
        with pytest.raises(ReadOnlyViolation):
            e.runner.submit(fix(e, "compat-0.10", "old.qcow2", "optimize"))
        assert e.runner.journal.jobs() == []
    finally:
        e.runner.close()


def test_the_journal_rebuilds_a_fix_and_unknown_codes_are_refused(engine: Engine) -> None:
    op = fix(engine, "merge-snapshot", "top.qcow2", "merge", base="snap.qcow2")
    assert OPERATIONS["fix"] is RunFix
    assert operation_from("fix", op.params()) == op
    assert op.locked_volumes() == [(engine.pool, "top.qcow2"), (engine.pool, "snap.qcow2")]
    assert op.stages == ("check", "rebase", "re-check")
    with pytest.raises(InvalidRequest):
        fix(engine, "no-such-code", "x")
    with pytest.raises(InvalidRequest):
        RunFix("local", engine.pool, "a", fix_type="clean", code="leaked-clusters",
               fix_params={"name": "b"})


def test_the_commands_shown_before_a_fix_runs(engine: Engine, make_image: MakeImage) -> None:
    top = deep_chain(engine, make_image, depth=3)
    p = engine.pool
    op = fix(engine, "chain-too-deep", top.name, "optimize", format="qcow2")
    temp = f"{p}/{TEMP_PREFIX}0-{top.name}"
    assert op.commands(engine.inventory) == [
        ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "qcow2", "--", str(top), temp],
        ["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", "--", str(top), temp],
        ["mv", "-T", "--", temp, str(top)],
        qemuimg.check(str(top), "qcow2")]  # the re-check (its argv: test_qemuimg)
    op = fix(engine, "merge-snapshot", top.name, "merge", base="s1.qcow2")
    assert op.commands(engine.inventory)[0] == [
        "qemu-img", "rebase", "-p", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "--",
        str(top)]
    assert fix(engine, "zeroed-ranges", "base.raw").commands(engine.inventory)[0] == [
        "fallocate", "--dig-holes", "--", f"{p}/base.raw"]
    assert fix(engine, "leaked-clusters", "s1.qcow2").commands(engine.inventory)[0] == \
        qemuimg.check(f"{p}/s1.qcow2", "qcow2", repair="leaks")
    shown = fix(engine, "corruption", "s1.qcow2", "mend").commands(engine.inventory)
    assert shown[0][:4] == ["cp", "--sparse=always", "--no-preserve=all", "--"]
    assert shown[2] == qemuimg.check(f"{p}/s1.qcow2", "qcow2", repair="all")
    assert fix(engine, "backing-moved", "s1.qcow2", "mend", new_backing="/x/base.raw",
               backing_format="raw").commands(engine.inventory)[0] == [
        "qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "/x/base.raw", "-F", "raw", "--",
        f"{p}/s1.qcow2"]
