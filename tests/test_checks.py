"""Checks against real images: each case built for real (qcow2 tables edited in place,
a qemu-io holding an image, a journal with a killed job), found with the right code."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import qemuimg
from backends.contract import NotSupported
from backends.drivers.dir.driver import DirDriver
from backends.model import HealthState, Pool
from backends.transport.local import LocalTransport
from console.checks import CheckReport, check_pools
from console.cli import main
from console.config import Config
from console.fixes import Finding, Fix, FixType, Risk, Severity
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from tests.conftest import MakeImage, write_file

MiB = 1 << 20


def _check(*dirs: Path, depth: int | None = None, journal: Journal | None = None,
           deep: bool = True) -> CheckReport:
    config = Config.for_targets([str(d) for d in dirs])
    if depth is not None:
        config = dataclasses.replace(config, max_chain_depth=depth)
    inventory = Inventory(config, None, read_only=True)
    try:
        pools = [inventory.pool("local", os.path.realpath(dirs[0]))]
        return check_pools(inventory, pools, deep=deep, journal=journal)
    finally:
        inventory.close()


def _found(report: CheckReport, volume: str | None, code: str) -> Finding:
    hits = [f for f in report.findings if f.volume == volume and f.code == code]
    assert len(hits) == 1, (code, report.findings)
    return hits[0]


def _fix(report: CheckReport, volume: str | None, code: str) -> Fix:
    hits = [f for f in report.fixes if f.volume == volume and f.code == code]
    assert len(hits) == 1, (code, report.fixes)
    return hits[0]


def _health(report: CheckReport, name: str) -> HealthState:
    return next(v.health.state for v in report.volumes if v.volume.name == name)


def _written(path: Path, make_image: MakeImage) -> Path:
    """A 1 MiB qcow2 with its first 128 KiB written (clusters in use)."""
    make_image(path)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 128k", str(path)],
                   check=True, capture_output=True)
    return path


def _set_refcount(path: Path, cluster: int, value: int) -> None:
    """Edit the 16-bit refcount of ``cluster`` in the first refcount block."""
    with open(path, "r+b") as f:
        f.seek(48)
        (table,) = struct.unpack(">Q", f.read(8))
        f.seek(table)
        (block,) = struct.unpack(">Q", f.read(8))
        f.seek(block + 2 * cluster)
        f.write(struct.pack(">H", value))


def _leak(path: Path) -> None:
    """A cluster past the image's end, counted as used and referenced by nothing."""
    clusters = -(-path.stat().st_size // 65536)
    with open(path, "r+b") as f:
        f.truncate((clusters + 1) * 65536)
    _set_refcount(path, clusters, 1)


def _set_incompatible(path: Path, bits: int, lazy_refcounts: bool = False) -> None:
    with open(path, "r+b") as f:
        f.seek(72)
        (incompatible, compatible) = struct.unpack(">QQ", f.read(16))
        f.seek(72)
        f.write(struct.pack(">QQ", incompatible | bits, compatible | int(lazy_refcounts)))


def _qemu_check_status(path: Path) -> int:
    return subprocess.run(qemuimg.check(str(path), "qcow2"), capture_output=True).returncode


def test_leaked_clusters_and_corruptions_are_found_by_qemu_img_check(
        pool_dir: Path, make_image: MakeImage) -> None:
    leaky = _written(pool_dir / "leaky.qcow2", make_image)
    _leak(leaky)
    corrupt = _written(pool_dir / "corrupt.qcow2", make_image)
    _set_refcount(corrupt, 0, 0)  # the header's cluster, in use, counted 0
    assert (_qemu_check_status(leaky), _qemu_check_status(corrupt)) == (3, 2)
    report = _check(pool_dir)
    leak = _found(report, "leaky.qcow2", "leaked-clusters")
    assert leak.severity == Severity.DEGRADED and not leak.possibly_inconsistent
    fix = _fix(report, "leaky.qcow2", "leaked-clusters")
    assert (fix.type, fix.risk, fix.space_change) == (FixType.CLEAN, Risk.LOW, -65536)
    assert fix.commands == (tuple(qemuimg.check(str(leaky), "qcow2", repair="leaks")),)
    assert fix.params == {"volume": "leaky.qcow2", "format": "qcow2", "repair": "leaks"}
    assert _found(report, "corrupt.qcow2", "corruptions").severity == Severity.BROKEN
    mend = _fix(report, "corrupt.qcow2", "corruptions")
    assert (mend.type, mend.risk, mend.needs_confirmation) == (FixType.MEND, Risk.HIGH, True)
    assert mend.commands[0][:2] == ("cp", "--sparse=always")
    assert mend.commands[1] == tuple(qemuimg.check(str(corrupt), "qcow2", repair="all"))
    assert mend.params["backup"] == "corrupt.qcow2.before-repair"
    assert _health(report, "corrupt.qcow2") == HealthState.BROKEN
    assert _health(report, "leaky.qcow2") == HealthState.DEGRADED
    checked = {v.volume.name: v.checked for v in report.volumes}
    assert checked["corrupt.qcow2"] is not None and checked["corrupt.qcow2"].corruptions >= 1
    # Ranked: broken first.
    assert report.findings[0].severity == Severity.BROKEN
    assert report.fixes[0].code == "corruptions"
    # Running the proposed repair leaves qemu-img check clean.
    subprocess.run(fix.commands[0], check=True, capture_output=True)
    assert _qemu_check_status(leaky) == 0
    # Quick: no qemu-img check, so neither is found.
    quick = _check(pool_dir, deep=False)
    assert not [f for f in quick.findings if f.code in ("leaked-clusters", "corruptions")]


def test_dirty_and_corrupt_bits(pool_dir: Path, make_image: MakeImage) -> None:
    dirty = _written(pool_dir / "dirty.qcow2", make_image)
    _set_incompatible(dirty, 1, lazy_refcounts=True)
    bad = _written(pool_dir / "bad.qcow2", make_image)
    _set_incompatible(bad, 2)
    report = _check(pool_dir)
    assert _found(report, "dirty.qcow2", "dirty-bit").severity == Severity.DEGRADED
    fix = _fix(report, "dirty.qcow2", "dirty-bit")
    assert (fix.type, fix.risk) == (FixType.MEND, Risk.LOW)
    assert fix.commands == (tuple(qemuimg.check(str(dirty), "qcow2", repair="leaks")),)
    assert _found(report, "bad.qcow2", "corrupt-bit").severity == Severity.BROKEN
    assert _fix(report, "bad.qcow2", "corrupt-bit").needs_confirmation
    subprocess.run(fix.commands[0], capture_output=True, check=False)
    assert not [f for f in _check(pool_dir).findings if f.volume == "dirty.qcow2"]


def test_deep_chain_is_flattened_and_compat_010_amended(pool_dir: Path,
                                                        make_image: MakeImage) -> None:
    make_image(pool_dir / "c0.qcow2")
    for i in range(1, 4):
        make_image(pool_dir / f"c{i}.qcow2", backing=f"c{i - 1}.qcow2", backing_fmt="qcow2")
    make_image(pool_dir / "old.qcow2", options="compat=0.10")
    report = _check(pool_dir, depth=3)
    assert _found(report, "c3.qcow2", "chain-too-deep").reason.startswith("chain of 4")
    flat = _fix(report, "c3.qcow2", "chain-too-deep")
    assert (flat.type, flat.risk) == (FixType.OPTIMIZE, Risk.MEDIUM)
    assert flat.commands[0][:2] == ("qemu-img", "convert") and "-O" in flat.commands[0]
    assert flat.params["temp"] == ".sc-tmp-{job}-c3.qcow2" and flat.space_change > 0 - MiB
    amend = _fix(report, "old.qcow2", "compat-0.10")
    assert amend.commands == (("qemu-img", "amend", "-f", "qcow2", "-o", "compat=1.1", "--",
                               str(pool_dir / "old.qcow2")),)
    assert (amend.type, amend.risk) == (FixType.OPTIMIZE, Risk.LOW)


def test_missing_backing_relinked_to_an_identical_base_moved_to_another_pool(
        tmp_path: Path, make_image: MakeImage) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_image(a / "base.raw", fmt="raw")
    make_image(a / "top.qcow2", backing="base.raw", backing_fmt="raw")
    os.rename(a / "base.raw", b / "base.raw")
    report = _check(a, b)
    assert _found(report, "top.qcow2", "backing-missing").severity == Severity.BROKEN
    relink = _fix(report, "top.qcow2", "backing-missing")
    assert relink.params["backing"] == str(b / "base.raw")
    assert relink.commands == (("qemu-img", "rebase", "-f", "qcow2", "-u", "-b",
                                str(b / "base.raw"), "-F", "raw", "--", str(a / "top.qcow2")),)
    assert (relink.type, relink.risk) == (FixType.MEND, Risk.LOW)
    subprocess.run(relink.commands[0], check=True)
    assert not [f for f in _check(a, b).findings if f.volume == "top.qcow2"]


def test_leftover_of_a_killed_job_is_cleaned_a_running_jobs_is_left(
        tmp_path: Path, pool_dir: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    pool = os.path.realpath(pool_dir)
    killed = journal.submit("copy", {}, "local", pool, "x.raw")
    journal.start(killed.id, 2)
    journal.set_state(killed.id, JobState.INTERRUPTED, "the process running it ended")
    running = journal.submit("copy", {}, "local", pool, "y.raw")
    journal.start(running.id, 2)  # owned by this process: alive
    write_file(pool_dir / f".sc-tmp-{killed.id}-x.raw", b"x" * 8192)
    write_file(pool_dir / f".sc-tmp-{running.id}-y.raw", b"y" * 8192)
    unclaimed = write_file(pool_dir / ".sc-tmp-9999-z.raw", b"z")
    os.utime(unclaimed, (1, 1))  # long ago: nobody's
    report = _check(pool_dir, journal=journal)
    left = _fix(report, f".sc-tmp-{killed.id}-x.raw", "leftover-temporary")
    assert (left.type, left.risk, left.space_change) == (FixType.CLEAN, Risk.NONE, -8192)
    assert left.commands == (("rm", "-f", "--", os.path.join(pool, f".sc-tmp-{killed.id}-x.raw")),)
    assert left.params == {"path": f".sc-tmp-{killed.id}-x.raw", "job": killed.id}
    assert _found(report, f".sc-tmp-{running.id}-y.raw",
                  "temporary-in-progress").severity == Severity.INFO
    assert not [f for f in report.fixes if f.volume == f".sc-tmp-{running.id}-y.raw"]
    assert _fix(report, ".sc-tmp-9999-z.raw", "leftover-temporary").params["job"] is None
    journal.close()


def test_in_use_image_checked_with_force_share_is_possibly_inconsistent(
        pool_dir: Path, make_image: MakeImage) -> None:
    disk = _written(pool_dir / "busy.qcow2", make_image)
    _leak(disk)
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", str(disk)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        driver = DirDriver(LocalTransport())
        pool = Pool("local", str(pool_dir), "dir", str(pool_dir))
        for _ in range(100):
            if driver.volume_in_use(driver.probe_volume(pool, "busy.qcow2")):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        report = _check(pool_dir)
    finally:
        holder.communicate(b"quit\n", timeout=10)
    leak = _found(report, "busy.qcow2", "leaked-clusters")
    assert leak.possibly_inconsistent and "possibly inconsistent" in leak.reason
    (vol,) = report.volumes
    assert vol.possibly_inconsistent and vol.volume.in_use
    assert any("possibly inconsistent" in r for r in vol.health.reasons)


def test_mostly_zero_raw_overcommitted_pool_and_unreferenced_snapshot(
        pool_dir: Path, make_image: MakeImage) -> None:
    write_file(pool_dir / "zeros.raw", bytes(4 * MiB) + b"\1" * 65536)
    write_file(pool_dir / "full.raw", b"\7" * (2 * MiB))
    make_image(pool_dir / "snap.raw", fmt="raw")
    os.chmod(pool_dir / "snap.raw", 0o444)
    make_image(pool_dir / "kept.raw", fmt="raw")
    make_image(pool_dir / "over.qcow2", backing="kept.raw", backing_fmt="raw")
    os.chmod(pool_dir / "kept.raw", 0o444)
    huge = os.statvfs(pool_dir).f_blocks * os.statvfs(pool_dir).f_frsize * 2
    make_image(pool_dir / "huge.qcow2", size=str(huge))
    report = _check(pool_dir)
    zero = _found(report, "zeros.raw", "mostly-zero")
    assert zero.severity == Severity.DEGRADED
    holes = _fix(report, "zeros.raw", "mostly-zero")
    assert holes.space_change == -4 * MiB
    assert holes.commands == (("fallocate", "--dig-holes", "--", str(pool_dir / "zeros.raw")),)
    assert not [f for f in report.findings if f.volume == "full.raw"]
    assert _found(report, None, "pool-overcommitted").severity == Severity.DEGRADED
    snap = _fix(report, "snap.raw", "unreferenced-snapshot")
    assert snap.params["requires_mark"] is True and snap.type == FixType.CLEAN
    assert _found(report, "snap.raw", "unreferenced-snapshot").severity == Severity.INFO
    assert not [f for f in report.findings if f.volume == "kept.raw"]
    # Ranked: degraded before information.
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=[Severity.BROKEN, Severity.DEGRADED,
                                                 Severity.INFO].index)


def test_zero_count_is_capped_and_sampled(pool_dir: Path) -> None:
    path = write_file(pool_dir / "z.raw", bytes(8 * MiB))
    allocated, read, zero = LocalTransport().zero_blocks(str(path), 2 * MiB)
    assert (allocated, read, zero) == (8 * MiB, 2 * MiB, 2 * MiB)
    allocated, read, zero = LocalTransport().zero_blocks(str(path), 64 * MiB)
    assert (read, zero) == (8 * MiB, 8 * MiB)


def test_driver_check_volume(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "a.raw", fmt="raw")
    _leak(_written(pool_dir / "b.qcow2", make_image))
    driver = DirDriver(LocalTransport(read_only=True))
    pool = Pool("local", str(pool_dir), "dir", str(pool_dir))
    with pytest.raises(NotSupported):
        driver.check_volume(pool, "a.raw", force_share=False)
    result = driver.check_volume(pool, "b.qcow2", force_share=True)
    assert (result.status, result.leaks, result.returncode) == ("leaks", 1, 3)
    assert result.total_clusters >= 16 and result.allocated_clusters > 0


@pytest.fixture
def broken_pool(pool_dir: Path, make_image: MakeImage) -> Iterator[Path]:
    _set_refcount(_written(pool_dir / "corrupt.qcow2", make_image), 0, 0)
    yield pool_dir


def test_cli_exit_status_and_json(broken_pool: Path, tmp_path: Path, make_image: MakeImage,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(broken_pool), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"volumes", "findings", "fixes", "errors"}
    (vol,) = out["volumes"]
    assert vol["name"] == "corrupt.qcow2" and vol["health"] == "broken"
    assert vol["check"] == "corrupt" and vol["last_fix"] is None
    assert out["findings"][0]["code"] == "corruptions"
    assert out["fixes"][0]["type"] == "mend" and out["fixes"][0]["params"]["repair"] == "all"
    assert main(["check", str(broken_pool)]) == 1
    text = capsys.readouterr().out
    assert "corruptions" in text and out["fixes"][0]["id"] in text
    clean = tmp_path / "clean"
    clean.mkdir()
    make_image(clean / "ok.qcow2")
    assert main(["check", str(clean)]) == 0
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    capsys.readouterr()
    # A volume's file: that volume only (its pool's broken neighbour is not looked at).
    make_image(broken_pool / "fine.qcow2")
    assert main(["check", str(broken_pool / "fine.qcow2"), "--json"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in only["volumes"]] == ["fine.qcow2"] and not only["fixes"]


def test_cli_reports_the_last_fix_job(broken_pool: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from console.config import journal_path

    journal_path().parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(journal_path())
    pool = os.path.realpath(broken_pool)
    job = journal.submit("fix", {"code": "corruptions"}, "local", pool, "corrupt.qcow2")
    journal.start(job.id, 3)
    journal.progress(job.id, stage=2, stages=3, label="repair", percent=40.0, done=4,
                     total=10, throughput=1.0)
    journal.finish(job.id, JobState.FAILED, "qemu-img check -r all failed")
    journal.close()
    assert main(["check", str(broken_pool), "--json"]) == 1
    (vol,) = json.loads(capsys.readouterr().out)["volumes"]
    assert vol["last_fix"] == {"job": job.id, "state": "failed", "host": "local",
                               "stage": 2, "stages": 3, "stage_label": "repair",
                               "percent": 40.0, "error": "qemu-img check -r all failed",
                               "code": "corruptions"}
