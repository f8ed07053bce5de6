"""The libvirt driver against a real libvirtd (tests/harness/libvirtd.py), and against
libvirt's test driver (test:///default) where domains must run: this machine has no QEMU
emulator, so its libvirtd can define no domain."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.contract import (
    Cancelled,
    HostUnreachable,
    InvalidRequest,
    NotSupported,
    PoolUnavailable,
    ReadOnlyViolation,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.libvirt import directory_pools
from backends.drivers.libvirt.driver import LIBVIRT_WIPES, LibvirtDriver, PoolInfo
from backends.drivers.libvirt.poolxml import (
    DirPoolForm,
    FsPoolForm,
    IscsiPoolForm,
    LogicalPoolForm,
    NetfsPoolForm,
    check_pool_xml,
)
from backends.model import ImageFormat, Pool, Progress
from tests.conftest import PATIENCE
from tests.harness.libvirtd import Libvirtd

MiB = 1 << 20


def unique(prefix: str = "sctest") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def driver(libvirtd: Libvirtd) -> Iterator[LibvirtDriver]:
    d = LibvirtDriver(libvirtd.uri, host="lv")
    yield d
    d.close()


@pytest.fixture
def pool(driver: LibvirtDriver, tmp_path: Path) -> Iterator[Pool]:
    """A started dir pool in this test's tmp dir, stopped and undefined afterwards."""
    name = unique()
    driver.define_pool(DirPoolForm(name, str(tmp_path / name)))
    driver.start_pool(name, build=True)
    yield driver.pool_info(name).pool
    with contextlib.suppress(Exception):
        driver.stop_pool(name)
    with contextlib.suppress(Exception):
        driver.undefine_pool(name)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


# -- discovery ----------------------------------------------------------------------------


def test_a_pool_made_with_virsh_shows_the_volumes_virsh_lists(
        libvirtd: Libvirtd, driver: LibvirtDriver, tmp_path: Path) -> None:
    name = unique()
    target = tmp_path / "virsh-pool"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-build", name)
    libvirtd.virsh("pool-start", name)
    libvirtd.virsh("vol-create-as", name, "base.raw", "8M", "--format", "raw")
    libvirtd.virsh("vol-create-as", name, "disk.qcow2", "16M", "--format", "qcow2",
                   "--backing-vol", str(target / "base.raw"), "--backing-vol-format", "raw")
    libvirtd.virsh("vol-create-as", name, "other.qcow2", "4M", "--format", "qcow2")

    pools = {p.name: p for p in driver.discover_pools("lv")}
    found = pools[name]
    assert (found.host, found.kind, found.path, found.pool_type, found.active) == (
        "lv", "libvirt", str(target), "dir", True)
    assert found.capacity is not None and found.capacity.capacity > 0

    scan = driver.scan_pool(found)
    listed = libvirtd.virsh("vol-list", name).stdout.split()
    virsh_names = sorted(listed[0::2])
    assert [v.name for v in scan.volumes] == virsh_names == ["base.raw", "disk.qcow2",
                                                             "other.qcow2"]
    volumes = {v.name: v for v in scan.volumes}
    disk = volumes["disk.qcow2"]
    assert (disk.format, disk.capacity, disk.path) == (ImageFormat.QCOW2, 16 * MiB,
                                                      str(target / "disk.qcow2"))
    assert disk.backing == str(target / "base.raw") and disk.backing_format == "raw"
    assert [link.path for link in disk.chain.links] == [disk.path, disk.backing]
    assert disk.chain.problem is None
    assert volumes["base.raw"].format == ImageFormat.RAW
    assert volumes["base.raw"].capacity == 8 * MiB
    assert scan.pool.capacity is not None
    assert scan.pool.capacity.committed == 28 * MiB
    # The embedded default's read-only finder sees the same directory pool.
    assert name in {p.name for p in directory_pools(libvirtd.uri)}


def test_an_inactive_pool_is_discovered_but_not_listed(
        libvirtd: Libvirtd, driver: LibvirtDriver, tmp_path: Path) -> None:
    name = unique()
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(tmp_path))
    found = {p.name: p for p in driver.discover_pools("lv")}[name]
    assert not found.active and found.capacity is None
    with pytest.raises(PoolUnavailable, match="not started") as err:
        driver.scan_pool(found)
    assert err.value.pool == name and "start the pool" in err.value.hint


def test_errors_name_the_host_pool_and_volume(driver: LibvirtDriver, pool: Pool) -> None:
    with pytest.raises(PoolUnavailable) as err:
        driver.scan_pool(Pool("lv", "sctest-nothing", "libvirt", "/x"))
    assert "pool 'sctest-nothing'" in str(err.value) and "host 'lv'" in str(err.value)
    with pytest.raises(VolumeNotFound) as missing:
        driver.probe_volume(pool, "gone.raw")
    assert missing.value.volume == "gone.raw" and missing.value.hint == "refresh the pool"


def test_a_dead_daemon_is_an_unreachable_host() -> None:
    d = LibvirtDriver("qemu+unix:///system?socket=/nonexistent/sock", host="dead")
    with pytest.raises(HostUnreachable, match="cannot connect") as err:
        d.discover_pools("dead")
    assert "libvirtd running" in err.value.hint


# -- pool lifecycle ---------------------------------------------------------------------------


def test_dir_pool_lifecycle_through_the_driver(driver: LibvirtDriver, tmp_path: Path) -> None:
    name = unique()
    target = tmp_path / "made-by-build"
    defined = driver.define_pool(DirPoolForm(name, str(target)))
    assert (defined.name, defined.active, defined.pool_type) == (name, False, "dir")
    driver.build_pool(name)
    assert target.is_dir()
    driver.start_pool(name)
    info = driver.pool_info(name)
    assert isinstance(info, PoolInfo)
    assert (info.state, info.persistent, info.autostart, info.pool.active) == (
        "running", True, False, True)
    driver.set_autostart(name, True)
    assert driver.pool_info(name).autostart
    driver.set_autostart(name, False)
    assert not driver.pool_info(name).autostart
    (target / "dropped.raw").write_bytes(b"\0" * 4096)  # behind libvirt's back
    assert driver.scan_pool(info.pool).volumes == ()
    driver.refresh_pool(name)
    assert [v.name for v in driver.scan_pool(info.pool).volumes] == ["dropped.raw"]
    driver.stop_pool(name)
    assert driver.pool_info(name).state == "inactive"
    (target / "dropped.raw").unlink()
    driver.delete_pool(name)
    assert not target.exists()
    driver.undefine_pool(name)
    assert name not in {p.name for p in driver.discover_pools("lv")}
    with pytest.raises(PoolUnavailable):
        driver.pool_info(name)


@pytest.mark.parametrize("form", [
    FsPoolForm("sctest-fs", "/dev/sctest-nodisk", "/srv/sctest-fs", format="ext4"),
    NetfsPoolForm("sctest-netfs", "nfs.example.org", "/export/images", "/srv/sctest-nfs"),
    LogicalPoolForm("sctest-vg", devices=("/dev/sctest-pv1", "/dev/sctest-pv2")),
    IscsiPoolForm("sctest-iscsi", "192.0.2.10", "iqn.2026-01.org.example:images",
                  initiator_iqn="iqn.2026-01.org.example:console"),
], ids=lambda f: type(f).__name__)
def test_pool_forms_define_what_libvirt_accepts(
        driver: LibvirtDriver, form: FsPoolForm | NetfsPoolForm | LogicalPoolForm
        | IscsiPoolForm) -> None:
    name = f"{form.name}-{secrets.token_hex(3)}"
    form = type(form)(**{**form.__dict__, "name": name})  # type: ignore[arg-type]
    defined = driver.define_pool(form)
    try:
        root = ET.fromstring(driver.pool_xml(name, inactive=True))
        assert root.findtext("name") == name
        source = root.find("source")
        assert source is not None
        if isinstance(form, FsPoolForm):
            assert (root.get("type"), source.find("device").get("path"),  # type: ignore[union-attr]
                    root.findtext("target/path")) == ("fs", form.device, form.target)
        elif isinstance(form, NetfsPoolForm):
            assert source.find("host").get("name") == form.host  # type: ignore[union-attr]
            assert source.find("dir").get("path") == form.export  # type: ignore[union-attr]
        elif isinstance(form, LogicalPoolForm):
            assert [d.get("path") for d in source.iterfind("device")] == list(form.devices)
            assert source.findtext("name") == name and defined.path == f"/dev/{name}"
        else:
            assert source.find("host").get("port") == "3260"  # type: ignore[union-attr]
            assert source.find("device").get("path") == form.iqn  # type: ignore[union-attr]
            assert source.find("initiator/iqn").get("name") == form.initiator_iqn  # type: ignore[union-attr]
        assert defined.pool_type == root.get("type") and not defined.active
    finally:
        driver.undefine_pool(name)


def test_raw_pool_xml_is_checked_before_libvirt_sees_it(driver: LibvirtDriver,
                                                        tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not parse"):
        driver.define_pool("<pool type='dir'><name>x</name>")
    with pytest.raises(InvalidRequest, match="not a <pool>"):
        driver.define_pool("<domain/>")
    with pytest.raises(InvalidRequest, match="no type"):
        driver.define_pool("<pool><name>x</name></pool>")
    with pytest.raises(InvalidRequest, match="not a usable pool name"):
        check_pool_xml("<pool type='dir'><name>../etc</name></pool>")
    with pytest.raises(InvalidRequest):
        DirPoolForm("sctest-rel", "relative/path").to_xml()
    # libvirt's own validation still answers for what only it knows.
    with pytest.raises(InvalidRequest):
        driver.define_pool("<pool type='nosuchtype'><name>sctest-bad</name></pool>")
    name = unique()
    xml = f"<pool type='dir'><name>{name}</name><target><path>{tmp_path}</path></target></pool>"
    assert driver.define_pool(xml).path == str(tmp_path)
    driver.undefine_pool(name)


# -- volumes ----------------------------------------------------------------------------------


def test_create_resize_and_delete_volumes(driver: LibvirtDriver, pool: Pool) -> None:
    steps: list[Progress] = []
    base = driver.create_volume(pool, "base.raw", ImageFormat.RAW, 4 * MiB,
                                progress=steps.append)
    assert (base.format, base.capacity, base.path) == (
        ImageFormat.RAW, 4 * MiB, os.path.join(pool.path, "base.raw"))
    assert steps[-1].done == steps[-1].total == 4 * MiB
    overlay = driver.create_volume(pool, "disk.qcow2", ImageFormat.QCOW2, 8 * MiB,
                                   backing=base)
    assert overlay.backing == base.path and overlay.chain.depth == 2
    with pytest.raises(VolumeExists):
        driver.create_volume(pool, "base.raw", ImageFormat.RAW, MiB)
    with pytest.raises(InvalidRequest):
        driver.create_volume(pool, "x.vmdk", ImageFormat.VMDK, MiB)
    with pytest.raises(NotSupported):
        driver.create_volume(pool, "x.raw", ImageFormat.RAW, MiB, preallocation="full")

    grown = driver.resize_volume(pool, "disk.qcow2", 16 * MiB)
    assert grown.capacity == 16 * MiB
    with pytest.raises(InvalidRequest, match="shrinking cuts off data"):
        driver.resize_volume(pool, "base.raw", 2 * MiB)
    assert driver.resize_volume(pool, "base.raw", 2 * MiB, shrink=True).capacity == 2 * MiB
    assert os.path.getsize(base.path) == 2 * MiB

    driver.delete_volume(pool, "disk.qcow2")
    assert not os.path.exists(overlay.path)
    assert [v.name for v in driver.scan_pool(pool).volumes] == ["base.raw"]


def test_shrink_refuses_to_cut_a_file_system(driver: LibvirtDriver, pool: Pool) -> None:
    volume = driver.create_volume(pool, "fs.raw", ImageFormat.RAW, 8 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", volume.path], check=True, capture_output=True)
    with pytest.raises(InvalidRequest, match="ext4 file system takes"):
        driver.resize_volume(pool, "fs.raw", 4 * MiB, shrink=True)
    assert os.path.getsize(volume.path) == 8 * MiB


def test_wipe_with_libvirts_zero_algorithm(driver: LibvirtDriver, pool: Pool) -> None:
    volume = driver.create_volume(pool, "secret.raw", ImageFormat.RAW, MiB)
    Path(volume.path).write_bytes(b"\xa5" * MiB)
    driver.wipe_volume(pool, "secret.raw", "zero")
    assert Path(volume.path).read_bytes() == b"\0" * MiB
    with pytest.raises(InvalidRequest, match="unknown wipe algorithm"):
        driver.wipe_volume(pool, "secret.raw", "shred")
    Path(volume.path).write_bytes(b"\xa5" * MiB)
    driver.delete_volume(pool, "secret.raw", wipe="zero")
    assert not os.path.exists(volume.path)


def test_wipe_algorithms_other_than_zero_run_scrub(driver: LibvirtDriver, pool: Pool) -> None:
    volume = driver.create_volume(pool, "secret.raw", ImageFormat.RAW, MiB)
    Path(volume.path).write_bytes(b"\xa5" * MiB)
    assert "nnsa" in LIBVIRT_WIPES
    if subprocess.run(["sh", "-c", "command -v scrub"], capture_output=True).returncode:
        with pytest.raises(Exception, match="scrub") as err:
            driver.wipe_volume(pool, "secret.raw", "nnsa")
        assert err.value.volume == "secret.raw"  # type: ignore[attr-defined]
        pytest.skip("scrub(1) is not installed: libvirt's non-zero algorithms need it")
    driver.wipe_volume(pool, "secret.raw", "nnsa")
    assert b"\xa5" * 4096 not in Path(volume.path).read_bytes()


def test_clone_and_copy_through_libvirt(driver: LibvirtDriver, pool: Pool,
                                        tmp_path: Path) -> None:
    data = random_file(tmp_path / "data.bin", 2 * MiB)
    driver.upload_volume(pool, "golden.raw", str(data), create=True)
    full = driver.clone_volume(pool, "golden.raw", pool, "full.qcow2",
                               strategy="performance", fmt=ImageFormat.QCOW2)
    assert full.format == ImageFormat.QCOW2 and full.backing is None
    subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", str(data),
                    full.path], check=True)
    copied = driver.copy_volume(pool, "golden.raw", pool, "copy.raw")
    assert Path(copied.path).read_bytes() == data.read_bytes()
    with pytest.raises(VolumeExists):
        driver.copy_volume(pool, "golden.raw", pool, "copy.raw")
    with pytest.raises(NotSupported):
        driver.copy_volume(pool, "golden.raw", pool, "copy.raw", overwrite=True)

    with pytest.raises(InvalidRequest, match="read-only snapshot"):
        driver.clone_volume(pool, "golden.raw", pool, "thin.qcow2")
    os.chmod(os.path.join(pool.path, "golden.raw"), 0o444)
    driver.refresh_pool(pool.name)
    thin = driver.clone_volume(pool, "golden.raw", pool, "thin.qcow2")
    assert thin.backing == os.path.join(pool.path, "golden.raw")
    assert thin.backing_format == "raw" and thin.capacity == 2 * MiB
    subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", str(data),
                    thin.path], check=True)


def test_upload_and_download_with_progress(driver: LibvirtDriver, pool: Pool,
                                           tmp_path: Path) -> None:
    data = random_file(tmp_path / "up.bin", 3 * MiB + 12345)
    sent: list[Progress] = []
    volume = driver.upload_volume(pool, "up.raw", str(data), create=True,
                                  progress=sent.append)
    assert volume.capacity == data.stat().st_size
    assert len(sent) > 3 and sent[-1].done == sent[-1].total == data.stat().st_size
    assert [p.done for p in sent] == sorted(p.done for p in sent)

    got: list[Progress] = []
    out = tmp_path / "down.bin"
    written = driver.download_volume(pool, "up.raw", str(out), progress=got.append)
    assert written == data.stat().st_size and got[-1].done == written
    subprocess.run(["cmp", str(data), str(out)], check=True)
    with pytest.raises(VolumeExists):
        driver.download_volume(pool, "up.raw", str(out))
    assert driver.download_volume(pool, "up.raw", str(out), overwrite=True) == written

    # Upload over the existing volume.
    again = random_file(tmp_path / "again.bin", MiB)
    driver.upload_volume(pool, "up.raw", str(again))
    assert Path(volume.path).read_bytes()[:MiB] == again.read_bytes()


def test_cancelled_streams_leave_nothing_under_the_final_name(
        driver: LibvirtDriver, pool: Pool, tmp_path: Path) -> None:
    data = random_file(tmp_path / "big.bin", 4 * MiB)
    calls = []

    def after_two_chunks() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        driver.upload_volume(pool, "new.raw", str(data), create=True,
                             should_cancel=after_two_chunks)
    assert not os.path.exists(os.path.join(pool.path, "new.raw"))
    assert "new.raw" not in {v.name for v in driver.scan_pool(pool).volumes}

    driver.upload_volume(pool, "kept.raw", str(data), create=True)
    calls.clear()
    out = tmp_path / "out" / "down.bin"
    out.parent.mkdir()
    with pytest.raises(Cancelled):
        driver.download_volume(pool, "kept.raw", str(out), should_cancel=after_two_chunks)
    assert os.listdir(out.parent) == []


def test_read_only_connection_refuses_changes(libvirtd: Libvirtd, driver: LibvirtDriver,
                                              pool: Pool, tmp_path: Path) -> None:
    driver.create_volume(pool, "a.raw", ImageFormat.RAW, MiB)
    ro = LibvirtDriver(libvirtd.uri, host="lv", read_only=True)
    try:
        assert [v.name for v in ro.scan_pool(pool).volumes] == ["a.raw"]
        with pytest.raises(ReadOnlyViolation, match="read-only"):
            ro.create_volume(pool, "b.raw", ImageFormat.RAW, MiB)
        with pytest.raises(ReadOnlyViolation):
            ro.delete_volume(pool, "a.raw")
        with pytest.raises(ReadOnlyViolation):
            ro.stop_pool(pool.name)
        with pytest.raises(ReadOnlyViolation):
            ro.define_pool(DirPoolForm(unique(), str(tmp_path)))
        # Below the driver's own check, libvirt refuses too: the connection is read-only.
        with pytest.raises(ReadOnlyViolation):
            ro.refresh_pool(pool.name)
        assert not ro.connection().getURI().startswith("test")
        assert ro.connection().isAlive()
    finally:
        ro.close()
    assert os.path.exists(os.path.join(pool.path, "a.raw"))


def test_pool_events_reach_the_callback(libvirtd: Libvirtd, driver: LibvirtDriver,
                                        tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []
    arrived = threading.Condition()

    def on_event(host: str, pool_name: str, kind: str) -> None:
        with arrived:
            seen.append((host, pool_name, kind))
            arrived.notify_all()

    driver.watch_pools(on_event)
    name = unique()
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(tmp_path))
    libvirtd.virsh("pool-start", name)
    libvirtd.virsh("pool-refresh", name)
    libvirtd.virsh("pool-destroy", name)
    libvirtd.virsh("pool-undefine", name)
    expected = ["defined", "started", "refreshed", "stopped", "undefined"]

    def mine() -> list[str]:
        return [kind for host, p, kind in seen if p == name and host == "lv"]

    deadline = time.monotonic() + PATIENCE
    with arrived:
        while mine() != expected and time.monotonic() < deadline:
            arrived.wait(0.2)
    assert mine() == expected
    driver.unwatch_pools()
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(tmp_path))
    libvirtd.virsh("pool-undefine", name)
    time.sleep(0.5)
    assert mine() == expected


# -- domains: libvirt's test driver, whose domain "test" runs ---------------------------------


@pytest.fixture
def test_driver() -> Iterator[LibvirtDriver]:
    d = LibvirtDriver("test:///default", host="t")
    yield d
    d.close()


def test_discovery_on_the_test_driver(test_driver: LibvirtDriver) -> None:
    pools = {p.name: p for p in test_driver.discover_pools("t")}
    assert pools["default-pool"].path == "/default-pool"
    assert pools["default-pool"].kind == "libvirt" and pools["default-pool"].active


def test_volumes_show_the_domains_using_them_and_running_ones_are_protected(
        test_driver: LibvirtDriver, tmp_path: Path) -> None:
    conn = test_driver.connection()
    upload = random_file(tmp_path / "upload.bin", MiB)
    name = unique()
    test_driver.define_pool(DirPoolForm(name, "/guest"))
    test_driver.start_pool(name)
    pool = test_driver.pool_info(name).pool
    try:
        # The test driver's running domain "test" has /guest/diskimage1 as its disk.
        test_driver.create_volume(pool, "diskimage1", ImageFormat.RAW, 8 * MiB)
        test_driver.create_volume(pool, "spare.raw", ImageFormat.RAW, 8 * MiB)
        test_driver.create_volume(pool, "byname.raw", ImageFormat.RAW, 8 * MiB)
        idle = unique("sctest-dom")
        conn.defineXML(
            f"<domain type='test'><name>{idle}</name><memory>1024</memory>"
            "<os><type>hvm</type></os><devices>"
            "<disk type='file' device='disk'><source file='/guest/spare.raw'/>"
            "<target dev='vda'/></disk>"
            f"<disk type='volume' device='disk'><source pool='{name}' volume='byname.raw'/>"
            "<target dev='vdb'/></disk></devices></domain>")
        volumes = {v.name: v for v in test_driver.scan_pool(pool).volumes}
        assert volumes["diskimage1"].used_by == ("test",)
        assert volumes["diskimage1"].used_by_running == ("test",)
        assert volumes["diskimage1"].in_use
        assert volumes["spare.raw"].used_by == (idle,)
        assert volumes["spare.raw"].used_by_running == () and not volumes["spare.raw"].in_use
        assert volumes["byname.raw"].used_by == (idle,)
        assert test_driver.volume_in_use(volumes["diskimage1"])

        for refused in (
            lambda: test_driver.delete_volume(pool, "diskimage1"),
            lambda: test_driver.wipe_volume(pool, "diskimage1", "zero"),
            lambda: test_driver.resize_volume(pool, "diskimage1", MiB, shrink=True),
        ):
            with pytest.raises(VolumeBusy, match="running domain test") as err:
                refused()
            assert err.value.volume == "diskimage1" and "shut the domain down" in err.value.hint
        with pytest.raises(VolumeBusy, match="running domain test"):
            test_driver.upload_volume(pool, "diskimage1", str(upload))
        with pytest.raises(VolumeBusy, match="running domain test uses volumes of the pool"):
            test_driver.delete_pool(name)
        # A defined domain that is not running does not hold its volume.
        test_driver.delete_volume(pool, "spare.raw")
        # Once "test" is shut down, its disk may go too.
        conn.lookupByName("test").destroy()
        try:
            test_driver.delete_volume(pool, "diskimage1")
        finally:
            conn.lookupByName("test").create()
        conn.lookupByName(idle).undefine()
    finally:
        with contextlib.suppress(Exception):
            test_driver.stop_pool(name)
        with contextlib.suppress(Exception):
            test_driver.undefine_pool(name)


def test_measures_for_the_job_layers_reservations(driver: LibvirtDriver, pool: Pool) -> None:
    assert driver.measure_create(pool, ImageFormat.RAW, 8 * MiB) == 0
    assert 0 < driver.measure_create(pool, ImageFormat.QCOW2, 1 << 40) < 4 * MiB
    driver.create_volume(pool, "src.raw", ImageFormat.RAW, 8 * MiB)
    assert driver.measure_copy(pool, "src.raw") == 8 * MiB
    assert driver.measure_copy(pool, "src.raw", ImageFormat.QCOW2) > 8 * MiB


def test_a_dropped_connection_is_reopened_and_keeps_its_watch(
        libvirtd: Libvirtd, driver: LibvirtDriver, tmp_path: Path) -> None:
    kinds: list[str] = []
    name = unique()
    driver.watch_pools(lambda _host, p, kind: kinds.append(kind) if p == name else None)
    first = driver.connection()
    first.close()  # as if libvirtd had gone away and come back
    assert name not in {p.name for p in driver.discover_pools("lv")}
    assert driver.connection() is not first
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(tmp_path))
    libvirtd.virsh("pool-undefine", name)
    deadline = time.monotonic() + PATIENCE
    while kinds != ["defined", "undefined"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kinds == ["defined", "undefined"]


def test_the_event_loop_stops_and_starts_again() -> None:
    import libvirt

    from backends.drivers.libvirt.events import EventLoop

    EventLoop.ensure(libvirt)
    assert EventLoop.running()
    EventLoop.stop(libvirt)
    assert not EventLoop.running()
    EventLoop.ensure(libvirt)
    assert EventLoop.running()


# -- progress and cancel of libvirt's blocking calls -----------------------------------------


def sparse_data_volume(driver: LibvirtDriver, pool: Pool, name: str, data: int,
                       capacity: int) -> None:
    """A raw volume of ``capacity`` bytes whose first ``data`` bytes are random, the rest
    a hole: written in the pool's directory, then libvirt told to look again."""
    with open(os.path.join(pool.path, name), "wb") as f:
        for _ in range(data // (8 * MiB)):
            f.write(os.urandom(8 * MiB))
        f.truncate(capacity)
    driver.refresh_pool(pool.name)


def test_a_clone_reports_the_bytes_libvirt_has_written(driver: LibvirtDriver,
                                                       pool: Pool) -> None:
    sparse_data_volume(driver, pool, "golden.raw", 192 * MiB, 1024 * MiB)
    source = driver.probe_volume(pool, "golden.raw")
    driver.poll_interval = 0.01  # many looks during a copy of a fraction of a second
    seen: list[Progress] = []
    clone = driver.clone_volume(pool, "golden.raw", pool, "clone.raw",
                                strategy="performance", progress=seen.append)
    done = [p.done for p in seen]
    assert done == sorted(done)  # never backwards
    assert all(p.total == source.allocation for p in seen)
    between = {d for d in done if 0 < d < source.allocation}
    assert len(between) >= 2, f"no progress while libvirt copied: {done}"
    assert seen[-1].done == seen[-1].total and seen[-1].percent == 100
    subprocess.run(["cmp", source.path, clone.path], check=True)


def test_a_cancelled_clone_leaves_no_volume_behind(driver: LibvirtDriver,
                                                   pool: Pool) -> None:
    sparse_data_volume(driver, pool, "golden.raw", 96 * MiB, 512 * MiB)
    driver.poll_interval = 0.01
    seen: list[Progress] = []
    looks: list[int] = []

    def cancel_once_copying() -> bool:
        looks.append(1)
        return len(looks) > 1  # after the look before the copy started

    with pytest.raises(Cancelled, match="removed") as err:
        driver.clone_volume(pool, "golden.raw", pool, "clone.qcow2",
                            strategy="performance", fmt=ImageFormat.QCOW2,
                            progress=seen.append, should_cancel=cancel_once_copying)
    assert (err.value.pool, err.value.volume) == (pool.name, "clone.qcow2")
    assert any("cancelling" in p.label for p in seen)
    assert "clone.qcow2" not in {v.name for v in driver.scan_pool(pool).volumes}
    assert not os.path.exists(os.path.join(pool.path, "clone.qcow2"))
    # Cancelled before the copy started: libvirt is never asked.
    with pytest.raises(Cancelled):
        driver.copy_volume(pool, "golden.raw", pool, "copy.raw", should_cancel=lambda: True)
    assert not os.path.exists(os.path.join(pool.path, "copy.raw"))


def test_a_wipe_says_it_cannot_be_stopped_and_a_cancel_before_it_is_honoured(
        driver: LibvirtDriver, pool: Pool) -> None:
    volume = driver.create_volume(pool, "secret.raw", ImageFormat.RAW, MiB)
    Path(volume.path).write_bytes(b"\xa5" * MiB)
    seen: list[Progress] = []
    driver.wipe_volume(pool, "secret.raw", "zero", progress=seen.append)
    assert not seen[0].cancellable and seen[0].total == 0 and seen[0].percent < 0
    assert "cannot stop" in seen[0].label
    assert seen[-1].cancellable and seen[-1].percent == 100
    assert Path(volume.path).read_bytes() == b"\0" * MiB

    # A cancel that came before the wipe started is seen after the mark, and honoured.
    Path(volume.path).write_bytes(b"\xa5" * MiB)
    asked: list[bool] = []
    with pytest.raises(Cancelled):
        driver.wipe_volume(pool, "secret.raw", "zero", progress=lambda p: asked.append(
            p.cancellable), should_cancel=lambda: bool(asked))
    assert asked == [False, True]
    assert Path(volume.path).read_bytes() == b"\xa5" * MiB
