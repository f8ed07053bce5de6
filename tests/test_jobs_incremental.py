"""Incremental copy as a job: only the difference travels, onto an identical base that
the destination already holds; a base that is not identical is refused, never used."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.operations import CopyVolume
from console.jobs.runner import Runner


def qemu_io(path: Path, fmt: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    subprocess.run([*argv, str(path)], check=True, capture_output=True)


def setup(tmp_path: Path) -> tuple[Runner, Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(src / "base.raw"), "64M"],
                   check=True)
    qemu_io(src / "base.raw", "raw", "write -P 1 0 48M")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
                    str(src / "top.qcow2")], check=True)
    qemu_io(src / "top.qcow2", "qcow2", "write -P 2 1M 3M")  # ~5% of the disk changed
    inv = Inventory(Config.for_targets([str(src), str(dst)]), Cache(None))
    return Runner(Journal(tmp_path / "j.db"), inv), src.resolve(), dst.resolve()


def test_only_the_difference_is_written(tmp_path: Path) -> None:
    runner, src, dst = setup(tmp_path)
    shutil.copyfile(src / "base.raw", dst / "base.raw")
    job = runner.wait(runner.submit(CopyVolume(
        "local", str(src), "top.qcow2", dest_pool=str(dst), dest_name="top.qcow2",
        format="qcow2", base="base.raw")).id, 60)
    runner.close()
    assert (job.state, job.error, job.stages) == (JobState.DONE, None, 4)
    info = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2",
                           str(dst / "top.qcow2")], capture_output=True, text=True,
                          check=True).stdout
    assert '"backing-filename": "base.raw"' in info
    assert os.stat(dst / "top.qcow2").st_blocks * 512 < 8 << 20  # not the 48 MiB
    compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                              str(src / "top.qcow2"), str(dst / "top.qcow2")])
    assert compare.returncode == 0


def test_an_incremental_copy_reserves_only_what_it_may_write(tmp_path: Path) -> None:
    """The images above the base (top.qcow2's 3 MiB, with room for its tables), not the
    48 MiB a full copy of the chain needs; a deeper base counts every image above it."""
    runner, src, dst = setup(tmp_path)
    shutil.copyfile(src / "base.raw", dst / "base.raw")
    inventory = runner.inventory
    full = CopyVolume("local", str(src), "top.qcow2", dest_pool=str(dst),
                      dest_name="full.qcow2", format="qcow2")
    assert full.space(inventory)[1] >= 48 << 20
    incremental = CopyVolume("local", str(src), "top.qcow2", dest_pool=str(dst),
                             dest_name="top.qcow2", format="qcow2", base="base.raw")
    pool, need = incremental.space(inventory)
    assert pool == str(dst) and 3 << 20 <= need < 5 << 20
    # One more overlay on top: the base is two links down, and both images above count.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F",
                    "qcow2", str(src / "leaf.qcow2")], check=True)
    qemu_io(src / "leaf.qcow2", "qcow2", "write -P 3 8M 2M")
    deeper = CopyVolume("local", str(src), "leaf.qcow2", dest_pool=str(dst),
                        dest_name="leaf.qcow2", format="qcow2", base="base.raw")
    assert 5 << 20 <= deeper.space(inventory)[1] < 7 << 20
    job = runner.wait(runner.submit(deeper).id, 60)
    runner.close()
    assert (job.state, job.error) == (JobState.DONE, None)
    assert os.stat(dst / "leaf.qcow2").st_blocks * 512 <= deeper.space(inventory)[1]
    compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                              str(src / "leaf.qcow2"), str(dst / "leaf.qcow2")])
    assert compare.returncode == 0


def test_a_base_that_is_not_identical_is_refused(tmp_path: Path) -> None:
    runner, src, dst = setup(tmp_path)
    shutil.copyfile(src / "base.raw", dst / "base.raw")
    qemu_io(dst / "base.raw", "raw", "write -P 9 40M 1M")  # same size, other bytes
    job = runner.wait(runner.submit(CopyVolume(
        "local", str(src), "top.qcow2", dest_pool=str(dst), dest_name="top.qcow2",
        format="qcow2", base="base.raw")).id, 60)
    runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "'base.raw' is not identical to" in job.error
    assert sorted(os.listdir(dst)) == [".storage-console", "base.raw"]


def test_a_base_the_chain_cannot_place_is_refused(tmp_path: Path) -> None:
    runner, src, dst = setup(tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(dst / "other.raw"), "32M"],
                   check=True)
    job = runner.wait(runner.submit(CopyVolume(
        "local", str(src), "top.qcow2", dest_pool=str(dst), dest_name="top.qcow2",
        format="qcow2", base="other.raw")).id, 60)
    runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "cannot tell which of 'top.qcow2'" in job.error
