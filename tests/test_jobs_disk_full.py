"""Disk full, for real: a small loop-mounted ext4 as the target pool.

A copy that runs out of space fails with a clear message, leaves no partial target, the
source is intact and the space is free again; the same copy is refused up front when
its reservation cannot fit.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.operations import CopyVolume
from console.jobs.runner import Runner


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB ext4 mounted on a loop device (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop file system needs root")
    image, mnt = tmp_path / "fs.img", tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "24M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True,
                   capture_output=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def make_source(path: Path, data_mib: int) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "256M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 7 0 {data_mib}M", str(path)],
                   check=True, capture_output=True)


@dataclasses.dataclass(frozen=True)
class UnderestimatedCopy(CopyVolume):
    """A copy whose space estimate is wrong (another writer filled the pool after the
    reservation, say): the copy itself must hit ENOSPC and clean up."""

    def space(self, inventory: Inventory) -> tuple[str, int]:
        return (self.dest_pool, 1)


def runner_for(tmp_path: Path, *pools: Path) -> tuple[Runner, list[str]]:
    inv = Inventory(Config.for_targets([str(p) for p in pools]), Cache(None))
    return Runner(Journal(tmp_path / "journal.db"), inv), [str(p.resolve()) for p in pools]


def test_copy_into_a_full_file_system(tmp_path: Path, pool_dir: Path,
                                      small_fs: Path) -> None:
    make_source(pool_dir / "src.raw", 64)
    before = os.statvfs(small_fs)
    runner, (src, dst) = runner_for(tmp_path, pool_dir, small_fs)
    job = runner.wait(runner.submit(UnderestimatedCopy(
        "local", src, "src.raw", dest_pool=dst, dest_name="copy.raw")).id, 60)
    runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "space" in job.error.lower() and "copy.raw" in job.error
    assert [n for n in os.listdir(small_fs) if n not in ("lost+found", ".storage-console")] \
        == []
    after = os.statvfs(small_fs)
    assert after.f_bfree >= before.f_bfree - 16  # a lock file's blocks at most
    check = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 7 0 64M",
                            str(pool_dir / "src.raw")], capture_output=True, text=True)
    assert check.returncode == 0 and "Pattern verification failed" not in check.stdout


def test_copy_refused_up_front_when_it_cannot_fit(tmp_path: Path, pool_dir: Path,
                                                  small_fs: Path) -> None:
    make_source(pool_dir / "src.raw", 64)
    runner, (src, dst) = runner_for(tmp_path, pool_dir, small_fs)
    job = runner.wait(runner.submit(CopyVolume(
        "local", src, "src.raw", dest_pool=dst, dest_name="copy.raw")).id, 60)
    runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "needs 64M, pool has" in job.error and "none reserved" in job.error
    assert f"pool {dst!r}" in job.error
    assert [n for n in os.listdir(small_fs) if n not in ("lost+found", ".storage-console")] \
        == []


def test_pool_above_its_critical_threshold_takes_no_new_job(tmp_path: Path, pool_dir: Path,
                                                           small_fs: Path) -> None:
    make_source(pool_dir / "src.raw", 1)
    (small_fs / "filler").write_bytes(b"\xff" * (12 << 20))  # ~half of 24 MiB
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\n"
                    f"[[host.pool]]\nname = 'src'\npath = '{pool_dir}'\n"
                    f"[[host.pool]]\nname = 'small'\npath = '{small_fs}'\nwarning = 0.3\n"
                    "critical = 0.4\n")
    inv = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(tmp_path / "journal.db"), inv)
    job = runner.wait(runner.submit(CopyVolume("local", "src", "src.raw", dest_pool="small",
                                               dest_name="c.raw")).id, 60)
    runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "above the critical threshold of 40%" in job.error
