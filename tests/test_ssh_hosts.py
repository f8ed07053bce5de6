"""SSH hosts in the console's inventory and on the command line, against the real sshd
fleet of the harness: states (online, key not trusted, offline), trusting a key, a host
killed mid-refresh, and jobs run on an SSH host through the shared journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from console.cache import Cache
from console.config import Config, known_hosts_path
from console.hosts import HostState
from console.inventory import Inventory
from tests.conftest import MakeImage
from tests.harness.sshd import Fleet
from tests.test_checks import _leak, _written


def config_file(tmp_path: Path, fleet: Fleet, *names: str, pool: Path) -> Path:
    conf = tmp_path / "config.toml"
    conf.write_text("".join(
        f"[[host]]\nname = '{n}'\nuri = '{fleet.uri(n)}'\n"
        f"[[host.pool]]\nname = 'images'\npath = '{pool}'\n" for n in names))
    return conf


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def remote_pool(tmp_path: Path, make_image: MakeImage) -> Path:
    """A directory the test sshd hosts serve (they run on this machine)."""
    pool = tmp_path / "remote"
    pool.mkdir()
    make_image(pool / "vm.qcow2", "qcow2", "4M")
    return pool


def test_states_of_ssh_hosts_and_trusting_a_key(ssh_home: Path, sshd_fleet: Fleet,
                                                tmp_path: Path, remote_pool: Path) -> None:
    conf = config_file(tmp_path, sshd_fleet, "a", "unknown", pool=remote_pool)
    inv = Inventory(Config.load(conf), Cache(None))
    try:
        inv.refresh()
        assert inv.host_status("a").state == HostState.ONLINE
        row = inv.cache.volume("a", "images", "vm.qcow2")
        assert row is not None and row.format == "qcow2" and row.capacity == 4 << 20
        status = inv.host_status("unknown")
        assert status.state == HostState.UNTRUSTED
        assert status.fingerprint and status.fingerprint.startswith("SHA256:")
        assert status.error is not None and status.fingerprint in status.error
        assert inv.cache.volume("unknown", "images", "vm.qcow2") is None  # nothing ran
    finally:
        inv.close()
    listing = cli("hosts", "--config", str(conf), "--json")
    assert listing.returncode == 2  # not every host is online
    states = {h["name"]: h["state"] for h in json.loads(listing.stdout)}
    assert states == {"a": "online", "unknown": "key not trusted"}
    trusted = cli("hosts", "trust", "unknown", "--config", str(conf))
    assert trusted.returncode == 0, trusted.stderr
    assert status.fingerprint in trusted.stdout
    assert status.fingerprint.split(":")[0] and known_hosts_path().exists()
    after = cli("ls", "--config", str(conf), "--json", "unknown:images")
    assert after.returncode == 0, after.stderr
    assert [v["name"] for v in json.loads(after.stdout)] == ["vm.qcow2"]


def test_a_host_killed_mid_refresh_leaves_the_others(ssh_home: Path, sshd_fleet: Fleet,
                                                     tmp_path: Path,
                                                     remote_pool: Path) -> None:
    conf = config_file(tmp_path, sshd_fleet, "a", "b", "doomed", pool=remote_pool)
    inv = Inventory(Config.load(conf), Cache(None))
    try:
        inv.refresh()
        assert all(inv.host_status(h).state == HostState.ONLINE for h in ("a", "b", "doomed"))
        sshd_fleet["doomed"].stop()
        (remote_pool / "new.raw").write_bytes(b"x" * 4096)
        inv.refresh()
        assert inv.host_status("doomed").state == HostState.OFFLINE
        for host in ("a", "b"):
            assert inv.host_status(host).state == HostState.ONLINE
            assert inv.cache.volume(host, "images", "new.raw") is not None
        # the dead host's rows stay, marked with why they are stale
        assert inv.cache.volume("doomed", "images", "vm.qcow2") is not None
        (pool_row,) = inv.cache.pools("doomed")
        assert pool_row.error and "offline" in pool_row.error
    finally:
        inv.close()
        sshd_fleet["doomed"].start()


def test_jobs_run_on_an_ssh_host_from_the_command_line(ssh_home: Path, sshd_fleet: Fleet,
                                                       tmp_path: Path,
                                                       remote_pool: Path) -> None:
    conf = config_file(tmp_path, sshd_fleet, "a", pool=remote_pool)
    created = cli("create", "a:images/disk", "--size", "8M", "--format", "qcow2",
                  "--config", str(conf), "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "done"
    copied = cli("copy", "a:images/vm.qcow2", "a:images/vm-copy.raw", "--format", "raw",
                 "--config", str(conf), "--json")
    assert copied.returncode == 0, copied.stderr
    subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
                    str(remote_pool / "vm.qcow2"), str(remote_pool / "vm-copy.raw")],
                   check=True, capture_output=True)
    audit = cli("audit", "--host", "a", "--json")
    assert audit.returncode == 0, audit.stderr
    assert any(e["argv"][:2] == ["qemu-img", "convert"] for e in json.loads(audit.stdout))
    listing = cli("jobs", "--json")
    assert {j["host"] for j in json.loads(listing.stdout)} == {"a"}


def test_read_only_refuses_on_the_ssh_host(ssh_home: Path, sshd_fleet: Fleet,
                                           tmp_path: Path, remote_pool: Path) -> None:
    conf = config_file(tmp_path, sshd_fleet, "a", pool=remote_pool)
    done = cli("create", "a:images/disk", "--size", "8M", "--read-only",
               "--config", str(conf))
    assert done.returncode != 0 and "read-only" in done.stderr
    assert not (remote_pool / "disk").exists()


def test_check_and_fix_a_remote_pool(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
                                     remote_pool: Path, make_image: MakeImage) -> None:
    """Leaked clusters in a pool of an SSH host: the check finds them (qemu-img check on
    that host), the fix repairs them there, and the data stays the same."""
    conf = config_file(tmp_path, sshd_fleet, "a", pool=remote_pool)
    leaky = _written(remote_pool / "leaky.qcow2", make_image)
    reference = tmp_path / "reference.qcow2"
    subprocess.run(["cp", str(leaky), str(reference)], check=True)
    _leak(leaky)
    found = cli("check", "a:images", "--config", str(conf), "--json")
    assert found.returncode == 0, found.stderr  # degraded, not broken
    (leak,) = [f for f in json.loads(found.stdout)["fixes"]
               if f["code"] == "leaked-clusters" and f["volume"] == "leaky.qcow2"]
    assert leak["host"] == "a"
    done = cli("fix", leak["id"], "--in", "a:images", "--config", str(conf), "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)  # one fix: one final job record
    assert job["state"] == "done" and job["host"] == "a"
    assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(leaky)]
                          ).returncode == 0
    subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2",
                    str(reference), str(leaky)], check=True)
    audit = json.loads(cli("audit", "--host", "a", "--json").stdout)
    assert any(e["argv"][:2] == ["qemu-img", "check"] and "leaks" in e["argv"]
               for e in audit)  # the repair ran on host a, over SSH
