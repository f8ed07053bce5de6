"""The LVM driver against real lvm2 on a loop-device volume group.

Device-mapper is missing on the machines this project is tested on: there lvm2 edits
metadata only (``--driverloaded n``), so listing, create, resize and delete run for
real, and what needs an active LV (snapshots, wipes) is checked to be refused. The
tests of those run wherever device-mapper works.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.contract import (
    CommandResult,
    InvalidRequest,
    NoSpace,
    NotSupported,
    PoolUnavailable,
    ReadOnlyViolation,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers import lvm
from backends.drivers.lvm import LvmDriver, validate_lv_name
from backends.model import ImageFormat, Pool
from backends.transport.local import LocalTransport

MiB = 1 << 20
EXTENT = 4 * MiB  # vgcreate's default
PV_SIZE = 64 * MiB  # 1 MiB of PV metadata leaves 15 extents


class RecordingTransport(LocalTransport):
    """The local transport, noting every argv it runs."""

    def __init__(self, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.argvs: list[list[str]] = []

    def run(self, argv: list[str], **kwargs: object) -> CommandResult:  # type: ignore[override]
        self.argvs.append(list(argv))
        return super().run(argv, **kwargs)  # type: ignore[arg-type]

    def mutations(self) -> list[list[str]]:
        return [a for a in self.argvs if a[0] not in ("vgs", "lvs")]


class CannedTransport(LocalTransport):
    """Answers ``vgs`` and ``lvs`` with fixed JSON reports, as lvm2 prints them."""

    def __init__(self, vgs: list[dict[str, str]], lvs: list[dict[str, str]]) -> None:
        super().__init__(host="canned")
        self.reports = {"vgs": {"report": [{"vg": vgs}]}, "lvs": {"report": [{"lv": lvs}]}}

    def run(self, argv: list[str], **kwargs: object) -> CommandResult:  # type: ignore[override]
        body = json.dumps(self.reports[argv[0]]).encode()
        return CommandResult(tuple(argv), 0, body, b"")


def _sh(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, stdin=subprocess.DEVNULL,
                          check=False)


@pytest.fixture
def vg(tmp_path: Path) -> Iterator[Pool]:
    """A fresh VG ``sctest_<random>`` of 15 extents on a loop device, removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root: losetup, pvcreate and vgcreate")
    if shutil.which("vgcreate") is None or shutil.which("losetup") is None:
        pytest.skip("lvm2 (or losetup) is not installed: apt-get install lvm2")
    image = tmp_path / "pv.img"
    with open(image, "wb") as f:
        f.truncate(PV_SIZE)
    attach = _sh("losetup", "-f", "--show", str(image))
    if attach.returncode != 0:
        pytest.skip(f"no loop device: {attach.stderr.decode().strip()}")
    loop = attach.stdout.decode().strip()
    name = f"sctest_{secrets.token_hex(4)}"
    try:
        for argv in (["pvcreate", "-y", loop], ["vgcreate", name, loop]):
            done = _sh(*argv)
            if done.returncode != 0:
                pytest.fail(f"{argv[0]} failed: {done.stderr.decode()}")
        yield Pool("local", name, "lvm", f"/dev/{name}")
    finally:
        _sh("vgremove", "-f", name)
        _sh("pvremove", "-y", loop)
        _sh("losetup", "-d", loop)


@pytest.fixture
def driver() -> LvmDriver:
    return LvmDriver(LocalTransport())


def lv_sizes(vg_name: str) -> dict[str, int]:
    """The LVs of ``vg_name`` and their sizes as lvs reports them, not the driver."""
    done = _sh("lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
               "-o", "lv_name,lv_size", vg_name)
    rows = json.loads(done.stdout)["report"][0]["lv"]
    return {row["lv_name"]: int(row["lv_size"]) for row in rows}


def needs_device_mapper(driver: LvmDriver) -> None:
    if not driver.device_mapper:
        pytest.skip("device-mapper is not available: /dev/mapper/control cannot be opened "
                    "(no dm kernel driver), so no LV can be activated")


def refused_without_device_mapper(driver: LvmDriver) -> None:
    if driver.device_mapper:
        pytest.skip("device-mapper works here: the refusal is for hosts without it")


# -- argv, names and parsing: no root needed -------------------------------------------

def test_golden_argv() -> None:
    report = ["--reportformat", "json", "--units", "b", "--nosuffix", "-o"]
    assert lvm.vgs_argv(True, "vg0") == ["vgs", *report, ",".join(lvm.VG_FIELDS), "vg0"]
    assert lvm.vgs_argv(False) == ["vgs", "--driverloaded", "n", *report,
                                   ",".join(lvm.VG_FIELDS)]
    assert lvm.lvs_argv(False, "vg0") == ["lvs", "--driverloaded", "n", *report,
                                          ",".join(lvm.LV_FIELDS), "vg0"]
    assert lvm.lvcreate_argv(True, "vg0", "disk", 8 * MiB) == [
        "lvcreate", "-y", "-n", "disk", "-L", "8388608b", "vg0"]
    assert lvm.lvcreate_argv(False, "vg0", "disk", 8 * MiB) == [
        "lvcreate", "--driverloaded", "n", "-an", "-Zn", "-y", "-n", "disk",
        "-L", "8388608b", "vg0"]
    assert lvm.lvresize_argv(True, "vg0", "disk", 12 * MiB, shrink=False) == [
        "lvresize", "-L", "12582912b", "vg0/disk"]
    assert lvm.lvresize_argv(False, "vg0", "disk", 4 * MiB, shrink=True) == [
        "lvresize", "--driverloaded", "n", "--force", "-L", "4194304b", "vg0/disk"]
    assert lvm.lvremove_argv(False, "vg0", "disk") == [
        "lvremove", "--driverloaded", "n", "-y", "vg0/disk"]
    assert lvm.lvsnapshot_argv("vg0", "disk", "snap", 8 * MiB) == [
        "lvcreate", "-s", "-p", "r", "-n", "snap", "-L", "8388608b", "vg0/disk"]
    assert lvm.lvsnapshot_argv("vg0", "thin", "snap", None) == [
        "lvcreate", "-s", "-p", "r", "-n", "snap", "vg0/thin"]
    assert lvm.lvactivate_argv("vg0", "disk") == ["lvchange", "-ay", "vg0/disk"]
    assert lvm.shred_argv("/dev/vg0/disk", "zero") == ["shred", "-n", "0", "-z",
                                                       "/dev/vg0/disk"]
    assert lvm.shred_argv("/dev/vg0/disk", "random") == ["shred", "-n", "1", "/dev/vg0/disk"]


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"),
    ("-disk", "do not start with '-'"),
    ("a/b", "letters, digits"),
    ("dïsk", "letters, digits"),
    ("..", "'.' or '..'"),
    ("snapshot1", "'snapshot' or 'pvmove'"),
    ("pvmove0", "'snapshot' or 'pvmove'"),
    ("disk_mlog", "'_mlog'"),
    ("x_rimage_0", "'_rimage'"),
    ("d" * 128, "longer than 127"),
])
def test_bad_names_are_refused_with_why(name: str, why: str) -> None:
    pool = Pool("h", "vg0", "lvm", "/dev/vg0")
    with pytest.raises(InvalidRequest) as caught:
        validate_lv_name(name, pool=pool)
    assert why in caught.value.what
    assert "'vg0'" in str(caught.value)


@pytest.mark.parametrize("name", ["disk", "vm-1.img", "a+b_c", "_x", "d" * 127, "my_snapshot"])
def test_good_names_pass(name: str) -> None:
    validate_lv_name(name, pool=Pool("h", "vg0", "lvm", "/dev/vg0"))


VG_ROW = {"vg_name": "vg0", "vg_size": str(100 * MiB), "vg_free": str(40 * MiB),
          "vg_extent_size": str(EXTENT), "vg_extent_count": "25", "vg_free_count": "10",
          "lv_count": "4", "vg_attr": "wz--n-"}


def _lv(name: str, attr: str, size: int, **extra: str) -> dict[str, str]:
    row = {"lv_name": name, "lv_path": f"/dev/vg0/{name}", "lv_size": str(size),
           "lv_attr": attr, "segtype": "linear", "origin": "", "origin_size": "",
           "pool_lv": "", "data_percent": "", "lv_active": "active",
           "lv_device_open": "", "lv_time": "2026-11-21 21:10:00 +0000"}
    row.update(extra)
    return row


def test_scan_reads_thin_snapshot_and_open_state_from_the_report() -> None:
    """lvm2's report of LVs device-mapper alone can make (thin, snapshots, open)."""
    rows = [
        _lv("tp", "twi-aotz--", 20 * MiB, segtype="thin-pool", data_percent="25.00"),
        _lv("thin", "Vwi-a-tz--", 16 * MiB, segtype="thin", pool_lv="tp",
            data_percent="12.50"),
        _lv("disk", "owi-aos---", 8 * MiB, lv_device_open="open"),
        _lv("snap", "sri-a-s---", 4 * MiB, segtype="snapshot", origin="disk",
            origin_size=str(8 * MiB), data_percent="1.00"),
    ]
    driver = LvmDriver(CannedTransport([VG_ROW], rows), device_mapper=True)
    scan = driver.scan_pool(Pool("canned", "vg0", "lvm", "/dev/vg0"))
    assert scan.skipped == ("tp (thin pool)",)
    volumes = {v.name: v for v in scan.volumes}
    assert set(volumes) == {"thin", "disk", "snap"}
    thin, disk, snap = volumes["thin"], volumes["disk"], volumes["snap"]
    assert (thin.capacity, thin.allocation) == (16 * MiB, 2 * MiB)
    assert disk.in_use and not disk.readonly and disk.allocation == 8 * MiB
    assert snap.readonly and snap.backing == "/dev/vg0/disk"
    assert (snap.capacity, snap.allocation) == (8 * MiB, 4 * MiB)
    assert [link.path for link in snap.chain.links] == ["/dev/vg0/snap", "/dev/vg0/disk"]
    assert all(v.format == ImageFormat.RAW for v in scan.volumes)
    assert thin.mtime == datetime.datetime(2026, 11, 21, 21, 10, tzinfo=datetime.UTC).timestamp()
    assert scan.pool.capacity is not None
    assert (scan.pool.capacity.capacity, scan.pool.capacity.available) == (100 * MiB,
                                                                          40 * MiB)
    assert scan.pool.capacity.committed == 32 * MiB
    with pytest.raises(InvalidRequest, match="thin pool"):
        driver.probe_volume(scan.pool, "tp")


def test_lvm_errors_map_to_storage_errors() -> None:
    """The stderr lvm2 2.03 prints (taken from real runs) becomes the right error."""
    where = {"host": "h", "pool": "vg0", "volume": "disk"}

    def failed(stderr: str) -> CommandResult:
        warning = ("  WARNING: Activation disabled. No device-mapper interaction will be "
                   "attempted.\n")
        return CommandResult(("lvcreate",), 5, b"", (warning + stderr).encode())

    no_space = lvm._failure(failed('  Volume group "vg0" has insufficient free space '
                                   "(13 extents): 256 required.\n"), "lvcreate", where)
    assert isinstance(no_space, NoSpace) and "'vg0'" in str(no_space)
    assert "256 required" in str(no_space)
    exists = lvm._failure(failed('  Logical Volume "disk" already exists in volume group '
                                 '"vg0"\n'), "lvcreate", where)
    assert isinstance(exists, VolumeExists)
    gone = lvm._failure(failed('  Volume group "vg0" not found\n  Cannot process volume '
                               "group vg0\n"), "lvcreate", where)
    assert isinstance(gone, PoolUnavailable)
    missing = lvm._failure(failed('  Failed to find logical volume "vg0/disk"\n'),
                           "lvremove", where)
    assert isinstance(missing, VolumeNotFound)


# -- against real lvm2 -----------------------------------------------------------------

def test_discover_lists_the_vg_as_a_pool(vg: Pool, driver: LvmDriver) -> None:
    pools = {p.name: p for p in driver.discover_pools("local")}
    pool = pools[vg.name]
    assert (pool.kind, pool.path, pool.host) == ("lvm", f"/dev/{vg.name}", "local")
    assert pool.capacity is not None
    assert pool.capacity.capacity == 15 * EXTENT
    assert pool.capacity.available == 15 * EXTENT
    assert pool.capacity.allocation == 0
    assert driver.pool_capacity(vg) == pool.capacity
    assert driver.scan_pool(vg).volumes == ()


def test_capabilities_follow_device_mapper(driver: LvmDriver) -> None:
    if shutil.which("lvs") is None:
        pytest.skip("lvm2 is not installed: apt-get install lvm2")
    caps = driver.capabilities
    assert caps.create and caps.delete and caps.resize
    assert caps.create_formats == (ImageFormat.RAW,)
    assert caps.snapshot == caps.wipe == driver.device_mapper
    if shutil.which("dmsetup") is not None:
        # dmsetup asks the kernel driver its version: it fails exactly when it is missing.
        assert driver.device_mapper == (_sh("dmsetup", "version").returncode == 0)


def test_create_rounds_up_to_extents(vg: Pool, driver: LvmDriver) -> None:
    asked = 5 * MiB + 512
    assert driver.measure_create(vg, ImageFormat.RAW, asked) == 2 * EXTENT
    text = driver.describe_create(vg, asked)
    assert "2 extents" in text and "rounded up from 5243392 bytes" in text
    volume = driver.create_volume(vg, "disk", ImageFormat.RAW, asked)
    assert (volume.name, volume.path) == ("disk", f"/dev/{vg.name}/disk")
    assert (volume.capacity, volume.allocation) == (2 * EXTENT, 2 * EXTENT)
    assert volume.format == ImageFormat.RAW and not volume.readonly and not volume.in_use
    assert volume.mtime > 0  # lv_time, its creation, parsed
    assert lv_sizes(vg.name) == {"disk": 2 * EXTENT}
    scan = driver.scan_pool(vg)
    assert [(v.name, v.capacity) for v in scan.volumes] == [("disk", 2 * EXTENT)]
    assert scan.pool.capacity is not None
    assert scan.pool.capacity.available == 13 * EXTENT
    assert scan.pool.capacity.committed == 2 * EXTENT
    assert driver.probe_volume(vg, "disk") == volume


def test_create_refuses_a_taken_name_and_other_formats(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    with pytest.raises(VolumeExists, match="'disk'"):
        driver.create_volume(vg, "disk", ImageFormat.RAW, 2 * EXTENT)
    with pytest.raises(InvalidRequest, match="raw data"):
        driver.create_volume(vg, "other", ImageFormat.QCOW2, EXTENT)
    with pytest.raises(InvalidRequest, match="reserves"):
        driver.create_volume(vg, "snapshot0", ImageFormat.RAW, EXTENT)
    assert lv_sizes(vg.name) == {"disk": EXTENT}


def test_not_enough_space_names_the_vg(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "big", ImageFormat.RAW, 12 * EXTENT)
    with pytest.raises(NoSpace) as caught:
        driver.create_volume(vg, "more", ImageFormat.RAW, 4 * EXTENT)
    assert f"pool {vg.name!r}" in str(caught.value)
    assert "4 extents" in str(caught.value) and "free" in str(caught.value)
    assert lv_sizes(vg.name) == {"big": 12 * EXTENT}


class StaleFreeSpace(LocalTransport):
    """Reports the VG as empty, as a check made before another host took the space."""

    def run(self, argv: list[str], **kwargs: object) -> CommandResult:  # type: ignore[override]
        result = super().run(argv, **kwargs)  # type: ignore[arg-type]
        if argv[0] != "vgs" or "--version" in argv:
            return result
        report = json.loads(result.stdout)
        for row in report["report"][0]["vg"]:
            row["vg_free"] = row["vg_size"]
        return CommandResult(result.argv, 0, json.dumps(report).encode(), b"")


def test_lvcreate_running_out_of_extents_is_no_space(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "big", ImageFormat.RAW, 12 * EXTENT)
    stale = LvmDriver(StaleFreeSpace())
    with pytest.raises(NoSpace, match="not enough free extents") as caught:
        stale.create_volume(vg, "more", ImageFormat.RAW, 4 * EXTENT)
    assert f"pool {vg.name!r}" in str(caught.value) and "'more'" in str(caught.value)
    assert lv_sizes(vg.name) == {"big": 12 * EXTENT}


def test_resize_grows_and_shrinks_only_when_asked(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "disk", ImageFormat.RAW, 2 * EXTENT)
    assert driver.resize_volume(vg, "disk", 3 * EXTENT - 1).capacity == 3 * EXTENT
    assert lv_sizes(vg.name) == {"disk": 3 * EXTENT}
    with pytest.raises(InvalidRequest, match="shrink"):
        driver.resize_volume(vg, "disk", EXTENT)
    assert lv_sizes(vg.name) == {"disk": 3 * EXTENT}
    assert driver.resize_volume(vg, "disk", EXTENT, shrink=True).capacity == EXTENT
    assert lv_sizes(vg.name) == {"disk": EXTENT}
    with pytest.raises(NoSpace, match=vg.name):
        driver.resize_volume(vg, "disk", 40 * EXTENT)


def test_resize_to_the_same_size_runs_nothing(vg: Pool) -> None:
    transport = RecordingTransport()
    driver = LvmDriver(transport)
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    transport.argvs.clear()
    assert driver.resize_volume(vg, "disk", EXTENT - 4096).capacity == EXTENT
    assert transport.mutations() == []


def test_delete_removes_the_lv(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    driver.create_volume(vg, "keep", ImageFormat.RAW, EXTENT)
    driver.delete_volume(vg, "disk")
    assert lv_sizes(vg.name) == {"keep": EXTENT}
    with pytest.raises(VolumeNotFound, match="'disk'"):
        driver.probe_volume(vg, "disk")
    with pytest.raises(VolumeNotFound):
        driver.delete_volume(vg, "disk")


def test_missing_vg_is_unavailable(driver: LvmDriver) -> None:
    if shutil.which("lvs") is None:
        pytest.skip("lvm2 is not installed: apt-get install lvm2")
    pool = Pool("local", f"sctest_{secrets.token_hex(4)}_gone", "lvm", "/dev/none")
    with pytest.raises(PoolUnavailable, match="not found") as caught:
        driver.scan_pool(pool)
    assert pool.name in str(caught.value)


def test_host_without_lvm2_is_unavailable(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no lvs, vgs, ... on it
    driver = LvmDriver(LocalTransport(host="bare"))
    with pytest.raises(PoolUnavailable, match="lvm2 installed") as caught:
        driver.discover_pools("bare")
    assert "'bare'" in str(caught.value)


def test_read_only_transport_lists_but_refuses_changes(vg: Pool, driver: LvmDriver) -> None:
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    reader = LvmDriver(LocalTransport(read_only=True))
    assert vg.name in {p.name for p in reader.discover_pools("local")}
    assert [v.name for v in reader.scan_pool(vg).volumes] == ["disk"]
    attempts: list[Callable[[], object]] = [
        lambda: reader.create_volume(vg, "new", ImageFormat.RAW, EXTENT),
        lambda: reader.resize_volume(vg, "disk", 2 * EXTENT),
        lambda: reader.delete_volume(vg, "disk"),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyViolation):
            attempt()
    assert lv_sizes(vg.name) == {"disk": EXTENT}


# -- what needs device-mapper ------------------------------------------------------------

def test_snapshot_refused_without_device_mapper(vg: Pool, driver: LvmDriver) -> None:
    refused_without_device_mapper(driver)
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    with pytest.raises(NotSupported, match="device-mapper"):
        driver.snapshot_volume(vg, "disk", "disk-snap")
    assert lv_sizes(vg.name) == {"disk": EXTENT}


def test_wipe_refused_without_device_mapper(vg: Pool, driver: LvmDriver) -> None:
    refused_without_device_mapper(driver)
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    with pytest.raises(NotSupported, match="nothing was deleted"):
        driver.delete_volume(vg, "disk", wipe="zero")
    with pytest.raises(NotSupported, match="device-mapper"):
        driver.create_volume(vg, "zeroed", ImageFormat.RAW, EXTENT, zero=True)
    assert lv_sizes(vg.name) == {"disk": EXTENT}


def test_snapshot(vg: Pool, driver: LvmDriver) -> None:
    needs_device_mapper(driver)
    driver.create_volume(vg, "disk", ImageFormat.RAW, 2 * EXTENT)
    snap = driver.snapshot_volume(vg, "disk", "disk-snap")
    assert snap.readonly and snap.backing == f"/dev/{vg.name}/disk"
    assert snap.capacity == 2 * EXTENT
    assert driver.settle_snapshot(vg, "disk", "disk-snap", None)
    with pytest.raises(VolumeBusy, match="disk-snap"):
        driver.delete_volume(vg, "disk")
    with pytest.raises(VolumeExists):
        driver.snapshot_volume(vg, "disk", "disk-snap")
    driver.delete_volume(vg, "disk-snap")
    driver.delete_volume(vg, "disk")
    assert lv_sizes(vg.name) == {}


def test_wipe_then_delete(vg: Pool, driver: LvmDriver) -> None:
    needs_device_mapper(driver)
    driver.create_volume(vg, "disk", ImageFormat.RAW, EXTENT)
    secret = b"secret" * 100
    with open(f"/dev/{vg.name}/disk", "r+b") as device:
        device.seek(MiB)  # past the 4 KiB lvcreate zeroes
        device.write(secret)
    driver.delete_volume(vg, "disk", wipe="zero")
    assert lv_sizes(vg.name) == {}
    # The first free extents of an empty VG: the same blocks the wiped LV had.
    again = driver.create_volume(vg, "again", ImageFormat.RAW, EXTENT)
    with open(again.path, "rb") as device:
        device.seek(MiB)
        assert device.read(len(secret)) == bytes(len(secret))


def test_thin_lv_allocation_and_pool_skipped(vg: Pool, driver: LvmDriver) -> None:
    needs_device_mapper(driver)
    made = _sh("lvcreate", "-y", "--type", "thin-pool", "-n", "tp", "-L", "16m", vg.name)
    assert made.returncode == 0, made.stderr.decode()
    made = _sh("lvcreate", "-y", "-n", "thin", "-V", "32m", "--thinpool", "tp", vg.name)
    assert made.returncode == 0, made.stderr.decode()
    scan = driver.scan_pool(vg)
    assert "tp (thin pool)" in scan.skipped
    thin = next(v for v in scan.volumes if v.name == "thin")
    assert thin.capacity == 32 * MiB and thin.allocation < thin.capacity


def test_create_zeroed(vg: Pool, driver: LvmDriver) -> None:
    needs_device_mapper(driver)
    driver.create_volume(vg, "dirty", ImageFormat.RAW, EXTENT)
    with open(f"/dev/{vg.name}/dirty", "r+b") as device:
        device.seek(MiB)
        device.write(b"old data" * 64)
    driver.delete_volume(vg, "dirty")
    zeroed = driver.create_volume(vg, "zeroed", ImageFormat.RAW, EXTENT, zero=True)
    with open(zeroed.path, "rb") as device:
        assert device.read() == bytes(EXTENT)
