"""Checks and fixes on pools of every kind: a libvirt dir pool of this machine is
checked and fixed through its directory (against the session's real libvirtd), and
libvirt refreshed after; volume groups and remote libvirt pools are refused, saying why."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.contract import NotSupported
from backends.model import Pool
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.fixing import RunFix
from console.jobs.journal import JobState, Journal
from console.jobs.runner import Runner
from console.pool_files import pool_files
from tests.conftest import MakeImage
from tests.harness.libvirtd import Libvirtd
from tests.test_checks import _leak, _written


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def libvirt_pool(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A started libvirt dir pool in this test's tmp dir: (name, directory, config)."""
    target = tmp_path / "lv-pool"
    target.mkdir()
    name = f"sctest-{secrets.token_hex(3)}"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    try:
        yield name, target, conf
    finally:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


def test_a_libvirt_dir_pool_is_checked_and_fixed_through_its_directory(
        libvirtd: Libvirtd, libvirt_pool: tuple[str, Path, Path],
        make_image: MakeImage) -> None:
    name, target, conf = libvirt_pool
    leaky = _written(target / "leaky.qcow2", make_image)
    reference = target.parent / "reference.qcow2"
    subprocess.run(["cp", str(leaky), str(reference)], check=True)
    _leak(leaky)
    base = make_image(target / "base.qcow2", size="1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", str(base)],
                   check=True, capture_output=True)
    snap = make_image(target / "snap.qcow2", size="1M", backing="base.qcow2",
                      backing_fmt="qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 0 64k", str(snap)],
                   check=True, capture_output=True)
    view = target.parent / "view.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(snap), str(view)],
                   check=True)
    os.chmod(snap, 0o440)  # a snapshot: committed, then dropped
    libvirtd.virsh("pool-refresh", name)
    found = cli("check", f"virt:{name}", "--config", str(conf), "--json")
    report = json.loads(found.stdout)
    fixes = {(f["volume"], f["code"]): f for f in report["fixes"]}
    leak = fixes[("leaky.qcow2", "leaked-clusters")]  # qemu-img check ran on the file
    commit = fixes[("snap.qcow2", "commit-into-base")]
    assert commit["params"]["drop"] is True
    done = cli("fix", leak["id"], commit["id"], "--in", f"virt:{name}",
               "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(leaky)]
                          ).returncode == 0
    subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2",
                    str(reference), str(leaky)], check=True)
    assert not snap.exists()
    subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(base),
                    str(view)], check=True)
    # libvirt was told: it no longer lists the dropped snapshot.
    listed = libvirtd.virsh("vol-list", name).stdout
    assert "snap.qcow2" not in listed and "base.qcow2" in listed


def test_pools_without_image_files_are_refused_saying_why(tmp_path: Path) -> None:
    config = Config.from_dict({"host": [
        {"name": "local", "uri": "local", "pool": [{"name": "vg0", "type": "lvm"}]},
        {"name": "far", "uri": "qemu+ssh://root@far.example/system"}]})
    inventory = Inventory(config, Cache(None))
    try:
        with pytest.raises(NotSupported, match="logical volumes, not image files"):
            pool_files(inventory, inventory.pool("local", "vg0"))
        far = Pool("far", "images", "libvirt", "/var/lib/libvirt/images", pool_type="dir")
        with pytest.raises(NotSupported, match="no transport") as err:
            pool_files(inventory, far)
        assert "ssh:// host" in err.value.hint
        runner = Runner(Journal(tmp_path / "journal.db"), inventory)
        try:
            op = RunFix("local", "vg0", "lv0", fix_type="clean", code="leaked-clusters",
                        fix_params={"name": "lv0", "format": "qcow2"})
            job = runner.wait(runner.submit(op).id, 30)
        finally:
            runner.close()
        assert job.state == JobState.FAILED
        assert "logical volumes, not image files" in (job.error or "")
    finally:
        inventory.close()
