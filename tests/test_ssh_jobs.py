"""Every job of a directory pool run on a host over SSH, through ``DirDriver`` exactly as
on this machine: create, copy, resize, snapshot, clone, archive and restore, growfs,
delete with wipe; progress heard, a cancel that kills the remote qemu-img, and the
volume locks of jobs held on the host."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from backends.contract import Cancelled, VolumeBusy
from backends.drivers.dir.driver import DirDriver
from backends.model import ImageFormat, Pool, Progress
from backends.transport.local import LocalTransport
from backends.transport.scanner import TEMP_PREFIX
from backends.transport.ssh import SshTransport
from console.jobs.locks import host_transport, volume_lock
from tests.harness.sshd import Fleet

MiB = 1 << 20


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True)


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
                          capture_output=True).returncode == 0


@pytest.fixture
def remote(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path) -> tuple[DirDriver, Pool, Path]:
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    heard: list[tuple[str, tuple[str, ...]]] = []
    t = SshTransport("a", sshd_fleet.uri("a"))
    t.observer = lambda host, argv, code, secs: heard.append((host, argv))
    driver = DirDriver(t, (str(tmp_path),))
    driver.heard = heard  # type: ignore[attr-defined]
    return driver, Pool("a", "p", "dir", str(pool_dir)), pool_dir


def test_every_job_over_ssh(remote: tuple[DirDriver, Pool, Path], tmp_path: Path) -> None:
    d, pool, pool_dir = remote
    seen: list[Progress] = []
    d.create_volume(pool, "data.raw", ImageFormat.RAW, 64 * MiB, progress=seen.append)
    run("qemu-io", "-f", "raw", "-c", "write -P 7 1M 8M", "-c", "write -P 9 40M 4M",
        str(pool_dir / "data.raw"))
    d.create_volume(pool, "empty.qcow2", ImageFormat.QCOW2, 16 * MiB, preallocation="falloc")

    # copy, with progress, checked by qemu-img compare on the host and here
    seen.clear()
    copy = d.copy_volume(pool, "data.raw", pool, "copy.qcow2", fmt=ImageFormat.QCOW2,
                         progress=seen.append)
    assert copy.format == ImageFormat.QCOW2 and seen and seen[-1].percent == 100.0
    assert d.same_content(d.probe_volume(pool, "data.raw"), copy.path, "qcow2")
    assert identical(pool_dir / "data.raw", "raw", pool_dir / "copy.qcow2", "qcow2")

    d.resize_volume(pool, "copy.qcow2", 96 * MiB)
    assert d.probe_volume(pool, "copy.qcow2").capacity == 96 * MiB

    # snapshot, then a space clone of it
    snap = d.snapshot_volume(pool, "copy.qcow2", "copy-snap.qcow2")
    assert snap.readonly and not os.stat(pool_dir / "copy-snap.qcow2").st_mode & 0o222
    disk = d.probe_volume(pool, "copy.qcow2")
    assert [link.path for link in disk.chain.links][1] == str(pool_dir / "copy-snap.qcow2")
    clone = d.clone_volume(pool, "copy-snap.qcow2", pool, "clone.qcow2")
    assert Path(clone.path).stat().st_size < 1 * MiB  # an overlay, not a copy
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", clone.path,
        str(pool_dir / "copy-snap.qcow2"))

    # archive and restore, with zstd run on the host
    backup = tmp_path / "backup"
    backup.mkdir()
    seen.clear()
    info = d.archive_volume(pool, "data.raw", str(backup / "data.zst"), progress=seen.append)
    assert info.virtual_size == 64 * MiB and seen
    assert d.read_archive(str(backup / "data.zst")) == info
    restored = d.restore_volume(pool, str(backup / "data.zst"), "restored.qcow2",
                                fmt=ImageFormat.QCOW2)
    assert identical(Path(restored.path), "qcow2", pool_dir / "data.raw", "raw")
    assert any(argv[0] == "zstd" and host == "a"
               for host, argv in d.heard)  # type: ignore[attr-defined]

    # growfs of an ext4 in a raw volume
    d.create_volume(pool, "fs.raw", ImageFormat.RAW, 32 * MiB)
    run("mkfs.ext4", "-q", "-F", str(pool_dir / "fs.raw"))
    d.resize_volume(pool, "fs.raw", 48 * MiB)
    d.growfs_volume(pool, "fs.raw")
    out = run("dumpe2fs", "-h", str(pool_dir / "fs.raw")).stdout.decode()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert int(fields["Block count"]) * int(fields["Block size"]) == 48 * MiB

    # delete with wipe, its progress heard
    seen.clear()
    d.delete_volume(pool, "restored.qcow2", wipe="zero", progress=seen.append)
    assert not (pool_dir / "restored.qcow2").exists() and seen

    local = DirDriver(LocalTransport("a"), (str(tmp_path),)).scan_pool(pool)
    assert d.scan_pool(pool).volumes == local.volumes
    assert {host for host, _ in d.heard} == {"a"}  # type: ignore[attr-defined]


def qemu_img_processes(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-img") and any(
                marker.encode() in part for part in cmdline):
            found.append(int(pid))
    return found


def test_cancel_kills_the_remote_qemu_img(remote: tuple[DirDriver, Pool, Path]) -> None:
    d, pool, pool_dir = remote
    block = bytes(range(256)) * 4096  # 1 MiB, no zero block: all of it is copied
    with open(pool_dir / "big.raw", "wb") as f:
        for _ in range(1024):
            f.write(block)
    flipped: list[float] = []

    def progress(p: Progress) -> None:
        if p.percent >= 5 and not flipped:
            flipped.append(time.monotonic())

    stopped: list[tuple[str, ...]] = []
    d.transport.observer = lambda host, argv, code, secs: (  # type: ignore[attr-defined]
        stopped.append(argv) if code == -1 else None)
    with pytest.raises(Cancelled):
        d.copy_volume(pool, "big.raw", pool, "copy.raw", progress=progress,
                      should_cancel=lambda: bool(flipped),
                      temp_name=f"{TEMP_PREFIX}9-copy.raw")
    # Stopped mid-way, not waited out (how fast is not for a test on a busy machine).
    assert [argv[:2] for argv in stopped] == [("qemu-img", "convert")]
    assert qemu_img_processes(f"{TEMP_PREFIX}9-copy.raw") == []
    assert sorted(os.listdir(pool_dir)) == ["big.raw"]


def test_job_locks_are_held_on_the_host(remote: tuple[DirDriver, Pool, Path],
                                        sshd_fleet: Fleet) -> None:
    d, pool, pool_dir = remote
    transport = host_transport(d, "a")
    assert transport is d.transport
    other = DirDriver(SshTransport("a", sshd_fleet.uri("a")), (str(pool_dir),))
    with volume_lock(d, pool, "v", "job 1 (alice)"):
        with pytest.raises(VolumeBusy) as err, volume_lock(other, pool, "v", "job 2"):
            pass
        assert f"pool {pool.name!r}, volume 'v'" in str(err.value)
        assert "job 1 (alice)" in str(err.value)
    with volume_lock(other, pool, "v", "job 2"):
        pass
    assert (pool_dir / ".storage-console" / "locks").is_dir()
    assert [v.name for v in d.scan_pool(pool).volumes] == []  # locks are not volumes
