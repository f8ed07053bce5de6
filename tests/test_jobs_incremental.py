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
