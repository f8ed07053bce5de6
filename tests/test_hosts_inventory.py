"""Hosts in one inventory: pools a host reports (volume groups), host states, a host
that cannot be reached never holding up the others, and hosts added and removed."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backends.contract import StorageError
from backends.model import ImageFormat, Pool
from console.cache import Cache
from console.config import Config
from console.hosts import HostState, UriKind, uri_kind
from console.inventory import Inventory
from tests.conftest import MakeImage
from tests.harness.libvirtd import Libvirtd
from tests.test_lvm_driver import vg  # noqa: F401  (the loop-device VG fixture)


@pytest.mark.parametrize(("uri", "kind"), [
    ("local", UriKind.LOCAL), ("ssh://root@h:2222", UriKind.SSH),
    ("qemu:///system", UriKind.LIBVIRT), ("qemu+ssh://root@h/system", UriKind.LIBVIRT),
    ("test:///default", UriKind.LIBVIRT),
])
def test_uri_kinds(uri: str, kind: UriKind) -> None:
    assert uri_kind(uri) == kind


@pytest.mark.parametrize("uri", ["", "h", "/srv", "ssh:/h"])
def test_bad_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="not 'local'"):
        uri_kind(uri)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_volume_groups_join_the_host_as_pools(vg: Pool, pool_dir: Path,  # noqa: F811
                                              tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\nlvm = true\n"
                    f"[[host.pool]]\nname = 'images'\npath = '{pool_dir}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    subprocess.run(["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-y", "-n", "lv1",
                    "-L", "8m", vg.name], check=True, capture_output=True)
    changed: list[tuple[str, str | None]] = []
    inv.refresh(on_host=lambda host, err: changed.append((host, str(err) if err else None)))
    assert changed[-1] == ("local", None)
    assert inv.host_status("local").state == HostState.ONLINE
    names = [p.name for p in inv.pools()]
    assert names[0] == "images" and vg.name in names
    row = inv.cache.volume("local", vg.name, "lv1")
    assert row is not None and row.capacity == 8 << 20 and row.format == "raw"
    # a HOST:POOL of a volume group is found on the host, also by a fresh inventory
    fresh = Inventory(Config.load(conf), None)
    assert fresh.pool("local", vg.name).kind == "lvm"
    # and the cache remembers it for the next start, before the host is asked again
    again = Inventory(Config.load(conf), inv.cache)
    assert vg.name in [p.name for p in again.host_pools("local")]


def test_an_unreachable_host_never_holds_up_the_others(pool_dir: Path,
                                                       tmp_path: Path) -> None:
    pytest.importorskip("backends.transport.ssh")
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\n[[host.pool]]\nname = 'images'\n"
                    f"path = '{pool_dir}'\n"
                    f"[[host]]\nname = 'gone'\nuri = 'ssh://root@127.0.0.1:{closed_port()}'\n"
                    "[[host.pool]]\nname = 'far'\npath = '/srv/far'\n")
    (pool_dir / "a.raw").write_bytes(b"\0" * 4096)
    inv = Inventory(Config.load(conf), Cache(None))
    pools: list[tuple[str, str | None]] = []
    inv.refresh(on_pool=lambda p, err: pools.append((p.name, str(err) if err else None)))
    assert pools == [("images", None)]  # the gone host's pool was never scanned
    status = inv.host_status("gone")
    assert status.state == HostState.OFFLINE and status.error
    assert "gone" in status.error
    (host_row,) = [h for h in inv.cache.hosts() if h.name == "gone"]
    assert host_row.state == "offline"
    far = [r for r in inv.cache.pools("gone")]
    assert far and far[0].error and "offline" in far[0].error
    assert inv.cache.volume("local", "images", "a.raw") is not None


def test_hosts_added_and_removed(pool_dir: Path) -> None:
    from backends.model import Host
    from console.config import HostConfig

    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None))
    inv.refresh()
    inv.add_host(HostConfig(Host("other"), (Pool("other", "p", "dir", str(pool_dir)),)))
    inv.create_volume("other", "p", "v", ImageFormat.RAW, 1 << 20)
    assert inv.cache.volume("other", "p", "v") is not None
    inv.remove_host("other")
    assert [h.name for h in inv.hosts()] == ["local"]
    assert inv.cache.pools("other") == [] and inv.cache.volume("other", "p", "v") is None
    with pytest.raises(KeyError):
        inv.pool("other", "p")
    assert (pool_dir / "v").exists()  # forgetting a host touches nothing on it


def test_a_storage_error_names_the_host(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("[[host]]\nname = 'local'\n[[host.pool]]\nname = 'p'\n"
                    f"path = '{tmp_path / 'missing'}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    errors: list[StorageError | None] = []
    inv.refresh(on_pool=lambda p, err: errors.append(err))
    (err,) = errors
    assert err is not None and "host 'local'" in str(err) and "pool 'p'" in str(err)


def test_a_libvirt_host_shows_every_pool_virsh_made(libvirtd: Libvirtd, tmp_path: Path,
                                                   make_image: MakeImage) -> None:
    target = tmp_path / "lv-pool"
    target.mkdir()
    make_image(target / "disk.qcow2", "qcow2", "2M")
    name = f"sctest-{secrets.token_hex(3)}"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    try:
        inv.refresh()
        assert inv.host_status("virt").state == HostState.ONLINE
        pool = inv.pool("virt", name)
        assert pool.kind == "libvirt"
        row = inv.cache.volume("virt", name, "disk.qcow2")
        assert row is not None and row.format == "qcow2" and row.capacity == 2 << 20
        # the command line addresses it as HOST:POOL/NAME like any other volume
        done = subprocess.run([sys.executable, "-m", "console.cli", "ls", "--json",
                               "--config", str(conf), f"virt:{name}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert [v["name"] for v in json.loads(done.stdout)] == ["disk.qcow2"]
    finally:
        inv.close()
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


def test_a_libvirt_host_that_is_down_is_offline(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("[[host]]\nname = 'virt'\n"
                    f"uri = 'qemu+unix:///system?socket={tmp_path}/none'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    inv.refresh()
    status = inv.host_status("virt")
    assert status.state == HostState.OFFLINE and status.error
    assert "is libvirtd running" in status.error


def test_pool_lifecycle_from_the_command_line(libvirtd: Libvirtd, tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    name = f"sctest-{secrets.token_hex(3)}"
    target = tmp_path / "new-pool"

    def pool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "console.cli", "pool", *args,
                               "--config", str(conf)], capture_output=True, text=True,
                              check=False)

    try:
        done = pool("define", "virt", "--type", "dir", "--name", name,
                    "--target", str(target))
        assert done.returncode == 0, done.stderr
        for step in ("build", "start"):
            assert pool(step, f"virt:{name}").returncode == 0
        assert pool("autostart", f"virt:{name}", "on").returncode == 0
        info = json.loads(pool("info", f"virt:{name}", "--json").stdout)[0]
        assert (info["state"], info["autostart"], info["path"]) == (
            "running", True, str(target))
        assert target.is_dir()
        assert name in libvirtd.virsh("pool-list", "--all").stdout
        refused = pool("start", f"virt:{name}", "--read-only")
        assert refused.returncode == 2 and "read-only" in refused.stderr
        unconfirmed = pool("delete", f"virt:{name}")
        assert unconfirmed.returncode == 2 and f"--yes {name}" in unconfirmed.stderr
        for step in ("stop", "undefine"):
            assert pool(step, f"virt:{name}").returncode == 0, step
        assert name not in libvirtd.virsh("pool-list", "--all").stdout
        bad = pool("define", "virt", "--type", "netfs", "--name", "x")
        assert bad.returncode == 2 and "--source-host" in bad.stderr
    finally:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, check=False, timeout=120)


def test_jobs_on_a_volume_group(vg: Pool, tmp_path: Path) -> None:  # noqa: F811
    conf = tmp_path / "config.toml"
    conf.write_text("[[host]]\nname = 'local'\nlvm = true\n")
    made = run_cli("create", f"local:{vg.name}/lv1", "--size", "8M", "--format", "raw",
                   "--config", str(conf), "--json")
    assert made.returncode == 0, made.stderr
    grown = run_cli("resize", f"local:{vg.name}/lv1", "12M", "--config", str(conf))
    assert grown.returncode == 0, grown.stderr
    listing = run_cli("ls", f"local:{vg.name}", "--json", "--config", str(conf))
    assert [(v["name"], v["capacity"]) for v in json.loads(listing.stdout)] == [
        ("lv1", 12 << 20)]
    refused = run_cli("delete", f"local:{vg.name}/lv1", "--config", str(conf))
    assert refused.returncode == 2 and "holds data" in refused.stderr  # an LV is precious
    gone = run_cli("delete", f"local:{vg.name}/lv1", "--config", str(conf), "--json",
                   "--yes-i-am-sure-it-holds-data")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(run_cli("ls", f"local:{vg.name}", "--json", "--config",
                              str(conf)).stdout) == []


def test_jobs_on_a_libvirt_pool(libvirtd: Libvirtd, tmp_path: Path) -> None:
    target = tmp_path / "lv-pool"
    target.mkdir()
    name = f"sctest-{secrets.token_hex(3)}"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    try:
        made = run_cli("create", f"virt:{name}/disk.qcow2", "--size", "8M", "--config",
                       str(conf), "--json")
        assert made.returncode == 0, made.stderr
        assert "disk.qcow2" in libvirtd.virsh("vol-list", name).stdout
        grown = run_cli("resize", f"virt:{name}/disk.qcow2", "16M", "--config", str(conf))
        assert grown.returncode == 0, grown.stderr
        gone = run_cli("delete", f"virt:{name}/disk.qcow2", "--config", str(conf),
                       "--yes-i-am-sure-it-holds-data")
        assert gone.returncode == 0, gone.stderr
        assert "disk.qcow2" not in libvirtd.virsh("vol-list", name).stdout
    finally:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)
