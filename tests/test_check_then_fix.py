"""Check, then fix: the fixes a check proposes run as jobs and leave the volume clean
(checked again on disk), data unchanged where it must not change."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.checks import CheckReport, check_pools
from console.config import Strategy
from console.jobs.fixing import RunFix
from tests.conftest import MakeImage
from tests.test_checks import _leak, _written
from tests.test_jobs_operations import Engine

MiB = 1 << 20


@pytest.fixture
def engine(tmp_path: Path, pool_dir: Path) -> Iterator[Engine]:
    other = tmp_path / "other"
    other.mkdir()
    e = Engine(tmp_path, pool_dir, other)
    yield e
    e.runner.close()


def check(engine: Engine, depth: int | None = None) -> CheckReport:
    if depth is not None:
        engine.inventory.max_chain_depth = depth
        engine.inventory.config = dataclasses.replace(engine.inventory.config,
                                                      max_chain_depth=depth)
    pools = [engine.inventory.pool("local", engine.pool),
             engine.inventory.pool("local", engine.other)]
    return check_pools(engine.inventory, pools, journal=engine.runner.journal)


def codes(report: CheckReport, volume: str) -> set[str]:
    return {f.code for f in report.findings if f.volume == volume}


def run_fix(engine: Engine, report: CheckReport, volume: str, code: str,
            **say: bool) -> None:
    (fix,) = [f for f in report.fixes if f.volume == volume and f.code == code]
    engine.ok(RunFix.from_fix(fix, **say))


def test_leaks_compat_and_a_deep_chain_fixed_from_the_check(engine: Engine,
                                                           make_image: MakeImage) -> None:
    pool = engine.pool_dir
    leaky = _written(pool / "leaky.qcow2", make_image)
    before = pool / "leaky-before.qcow2"
    subprocess.run(["cp", str(leaky), str(before)], check=True)
    _leak(leaky)
    make_image(pool / "old.qcow2", options="compat=0.10")
    make_image(pool / "c0.qcow2")
    for i in range(1, 4):
        make_image(pool / f"c{i}.qcow2", backing=f"c{i - 1}.qcow2", backing_fmt="qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k",
                    str(pool / "c3.qcow2")], check=True, capture_output=True)
    report = check(engine, depth=3)
    assert "leaked-clusters" in codes(report, "leaky.qcow2")
    assert "compat-0.10" in codes(report, "old.qcow2")
    assert "chain-too-deep" in codes(report, "c3.qcow2")
    run_fix(engine, report, "leaky.qcow2", "leaked-clusters")
    run_fix(engine, report, "old.qcow2", "compat-0.10")
    run_fix(engine, report, "c3.qcow2", "chain-too-deep")
    after = check(engine, depth=3)
    for volume in ("leaky.qcow2", "old.qcow2", "c3.qcow2"):
        assert not codes(after, volume), (volume, codes(after, volume))
    subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2",
                    str(before), str(leaky)], check=True)


def test_a_mostly_zero_raw_and_a_moved_backing_fixed_from_the_check(
        engine: Engine, make_image: MakeImage) -> None:
    pool, other = engine.pool_dir, engine.other_dir
    zeros = pool / "zeros.raw"
    with open(zeros, "wb") as f:
        f.write(b"\0" * (8 * MiB) + b"data" * 1024)
    reference = pool / "zeros-copy.bin"
    subprocess.run(["cp", str(zeros), str(reference)], check=True)
    make_image(pool / "base.raw", fmt="raw")
    make_image(pool / "top.qcow2", backing="base.raw", backing_fmt="raw")
    os.rename(pool / "base.raw", other / "base.raw")
    report = check(engine)
    assert "mostly-zero" in codes(report, "zeros.raw")
    assert "backing-missing" in codes(report, "top.qcow2")
    run_fix(engine, report, "zeros.raw", "mostly-zero")
    run_fix(engine, report, "top.qcow2", "backing-missing")
    after = check(engine)
    assert not codes(after, "zeros.raw") and not codes(after, "top.qcow2")
    assert zeros.read_bytes() == reference.read_bytes()
    assert os.stat(zeros).st_blocks * 512 < 2 * MiB  # the zeroes are holes now


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, check=False, timeout=120)


def test_fix_from_the_command_line(pool_dir: Path, make_image: MakeImage) -> None:
    leaky = _written(pool_dir / "leaky.qcow2", make_image)
    _leak(leaky)
    make_image(pool_dir / "old.qcow2", options="compat=0.10")
    found = json.loads(cli("check", str(pool_dir), "--json").stdout)
    (leak,) = [f for f in found["fixes"] if f["code"] == "leaked-clusters"]
    done = cli("fix", leak["id"], "--in", str(pool_dir))
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(leaky)]
                          ).returncode == 0
    gone = cli("fix", leak["id"], "--in", str(pool_dir))
    assert gone.returncode == 2 and "run 'check' again" in gone.stderr
    by_type = cli("fix", "--type", "optimize", str(pool_dir), "--json")
    assert by_type.returncode == 0, by_type.stderr
    after = json.loads(cli("check", str(pool_dir), "--json").stdout)
    assert not [f for f in after["findings"] if f["volume"] in ("leaky.qcow2", "old.qcow2")]
    _leak(leaky)  # again: read-only mode refuses to repair it, and nothing changes
    refused = cli("fix", "--type", "clean", str(pool_dir), "--read-only")
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(leaky)],
                          capture_output=True).returncode == 3


def test_a_writable_base_with_one_overlay_is_committed_from_the_check(
        engine: Engine, make_image: MakeImage) -> None:
    pool = engine.pool_dir
    base = make_image(pool / "base.qcow2", size="4M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", str(base)],
                   check=True, capture_output=True)
    top = make_image(pool / "top.qcow2", size="4M", backing="base.qcow2",
                     backing_fmt="qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", str(top)],
                   check=True, capture_output=True)
    reference = engine.other_dir / "reference.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(top),
                    str(reference)], check=True)
    # A second overlay (in the other pool): the base is shared, nothing is proposed.
    shared = make_image(engine.other_dir / "shared.qcow2", size="4M",
                        backing=str(base), backing_fmt="qcow2")
    assert "commit-into-base" not in codes(check(engine), "top.qcow2")
    shared.unlink()
    report = check(engine)
    (fix,) = [f for f in report.fixes if f.code == "commit-into-base"]
    assert (fix.volume, fix.type, fix.risk) == ("top.qcow2", "merge", "medium")
    assert fix.params["base"] == "base.qcow2" and fix.params["drop"] is False
    assert fix.commands[0] == ("qemu-img", "commit", "-p", "-d", "-f", "qcow2", "--",
                               str(top))
    run_fix(engine, report, "top.qcow2", "commit-into-base")
    for image in (base, top):
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw",
                               str(image), str(reference)]).returncode == 0
        assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(image)]
                              ).returncode == 0
    assert os.stat(top).st_blocks * 512 < MiB  # the top is an empty overlay now


def test_performance_strategy_proposes_a_preallocated_preferred_format(
        engine: Engine, make_image: MakeImage) -> None:
    pool = engine.pool_dir
    thin = make_image(pool / "thin.qcow2", size="8M")
    zeros = pool / "zeros.raw"
    with open(zeros, "wb") as f:
        f.write(b"\0" * (4 * MiB) + b"data" * 1024)
    reference = engine.other_dir / "zeros-copy.raw"
    subprocess.run(["cp", str(zeros), str(reference)], check=True)
    assert "performance-layout" not in codes(check(engine), "thin.qcow2")  # no strategy
    engine.inventory.config = dataclasses.replace(
        engine.inventory.config, strategy=Strategy("performance", "qcow2"))
    report = check(engine)
    assert "performance-layout" in codes(report, "thin.qcow2")  # not preallocated
    assert "performance-layout" in codes(report, "zeros.raw")  # raw, qcow2 preferred
    assert "mostly-zero" not in codes(report, "zeros.raw")  # allocated zeroes are wanted
    (fix,) = [f for f in report.fixes if f.volume == "zeros.raw"]
    assert fix.params["output_format"] == "qcow2"
    assert 0 < fix.space_change <= 8 * MiB  # qemu-img measure: 4 MiB + tables, preallocated
    run_fix(engine, report, "thin.qcow2", "performance-layout")
    run_fix(engine, report, "zeros.raw", "performance-layout")
    after = check(engine)
    assert not codes(after, "thin.qcow2") and not codes(after, "zeros.raw")
    assert os.stat(thin).st_blocks * 512 >= 8 * MiB
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw",
                           str(zeros), str(reference)]).returncode == 0
