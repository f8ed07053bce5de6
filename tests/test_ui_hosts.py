"""The console with many hosts: a libvirt host's pools appear, a host that cannot be
reached shows its state and never blocks the keys, and hosts are added from the console
(written to config.toml)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from textual.widgets import Input

from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.ui.screens.add_host import AddHostScreen
from tests.conftest import PATIENCE, MakeImage
from tests.harness.libvirtd import Libvirtd
from tests.harness.sshd import Fleet
from tests.test_ui import SIZE, make_app, screen_text, table


async def wait_for(pilot: object, condition: object, seconds: float = PATIENCE) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
        await pilot.pause()  # type: ignore[attr-defined]


async def test_libvirt_pools_and_a_dead_host_in_one_tree(
        libvirtd: Libvirtd, tmp_path: Path, make_image: MakeImage) -> None:
    target = tmp_path / "lv"
    target.mkdir()
    make_image(target / "vm1.qcow2", "qcow2", "1M")
    name = f"sctest-{secrets.token_hex(3)}"
    other = f"sctest-{secrets.token_hex(3)}"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    images = tmp_path / "images"
    images.mkdir()
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\n[[host.pool]]\nname = 'images'\n"
                    f"path = '{images}'\n"
                    f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n"
                    f"[[host]]\nname = 'down'\nuri = 'qemu+unix:///system?socket={tmp_path}/x'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    app = make_app(inv, refresh_on_start=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            def ready() -> bool:
                return (inv.known_pool("virt", name) is not None
                        and inv.cache.volume("virt", name, "vm1.qcow2") is not None
                        and inv.host_status("down").state.value == "offline")

            await wait_for(pilot, ready)
            await pilot.pause()
            text = screen_text(app)
            assert name in text and "down: offline" in text
            # keys still answer, and the libvirt pool opens like any other
            app.screen.pool_tree.select_pool("virt", name)  # type: ignore[attr-defined]
            await pilot.pause()
            await wait_for(pilot, lambda: table(app).row_count == 1)
            assert table(app).current is not None
            assert table(app).current.name == "vm1.qcow2"  # type: ignore[union-attr]
            # a pool defined behind the console's back shows up through libvirt's events
            (tmp_path / "lv2").mkdir()
            libvirtd.virsh("pool-define-as", other, "dir", "--target", str(tmp_path / "lv2"))
            await wait_for(pilot, lambda: ("virt", other) in
                           app.screen.pool_tree.pool_keys())  # type: ignore[attr-defined]
    finally:
        inv.close()
        for pool in (name, other):
            libvirtd.virsh("pool-destroy", pool, check=False)
            libvirtd.virsh("pool-undefine", pool, check=False)


async def test_add_a_host_from_the_console(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    images = tmp_path / "images"
    images.mkdir()
    conf.write_text(f"# mine\n[[host]]\nname = 'local'\n[[host.pool]]\nname = 'images'\n"
                    f"path = '{images}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    app = make_app(inv)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("H")
        await pilot.pause()
        assert isinstance(app.screen, AddHostScreen)
        await pilot.press(*"far", "enter")
        await pilot.press(*"nonsense", "enter")
        await pilot.pause()
        assert isinstance(app.screen, AddHostScreen)  # a bad URI keeps the dialog open
        assert "not 'local', ssh://" in str(app.screen.query_one("#error").render())
        uri_input = app.screen.query_one("#uri", Input)
        uri_input.value = f"qemu+unix:///system?socket={tmp_path}/none"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "far" in [h.name for h in inv.hosts()]
                       and "far: offline" in screen_text(app))
    text = conf.read_text()
    assert "# mine" in text and "name = \"far\"" in text
    assert [h.host.name for h in Config.load(conf).hosts] == ["local", "far"]


async def test_copy_to_another_host_from_the_console(ssh_home: Path, sshd_fleet: Fleet,
                                                     tmp_path: Path,
                                                     make_image: MakeImage) -> None:
    from textual.widgets import Select

    from console.jobs.journal import JobState
    from console.ui.screens.copy_volume import CopyVolumeScreen
    from console.ui.screens.main import MainScreen
    from tests.test_ui_jobs import newest, plan_words, until

    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    src = make_image(here / "disk.qcow2", "qcow2", "16M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", str(src)],
                   check=True, capture_output=True)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\n[[host.pool]]\nname = 'here'\n"
                    f"path = '{here}'\n[[host]]\nname = 'far'\nuri = '{sshd_fleet.uri('a')}'\n"
                    f"[[host.pool]]\nname = 'there'\npath = '{there}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    inv.refresh()
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("y")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, CopyVolumeScreen)
            dialog.query_one("#dest-pool", Select).value = ("far", "there")
            await pilot.pause()
            assert dialog.query_one("#name", Input).value == "disk.qcow2"
            await pilot.press("ctrl+s")  # the plan first
            await until(pilot, lambda: dialog.plan is not None)
            assert "far" in plan_words(dialog)
            await pilot.press("ctrl+s")  # then the job
            await until(pilot, lambda: isinstance(app.screen, MainScreen)
                        and newest(app).state == JobState.DONE)
            assert newest(app).kind == "transfer"
    finally:
        inv.close()
    done = subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2",
                           str(src), str(there / "disk.qcow2")], check=False)
    assert done.returncode == 0


async def test_trust_a_host_key_from_the_console(ssh_home: Path, sshd_fleet: Fleet,
                                                 tmp_path: Path) -> None:
    from console.config import known_hosts_path
    from console.hosts import HostState
    from console.ui.screens.confirm import ConfirmScreen

    pool = tmp_path / "far"
    pool.mkdir()
    (pool / "a.raw").write_bytes(b"\0" * 4096)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'stranger'\nuri = '{sshd_fleet.uri('unknown')}'\n"
                    f"[[host.pool]]\nname = 'p'\npath = '{pool}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    app = make_app(inv, refresh_on_start=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: inv.host_status("stranger").state
                           == HostState.UNTRUSTED)
            await pilot.pause()
            fingerprint = inv.host_status("stranger").fingerprint
            assert fingerprint and "stranger: key not trusted" in screen_text(app)
            app.screen.pool_tree.select_host("stranger")  # type: ignore[attr-defined]
            await pilot.pause()
            assert fingerprint in screen_text(app)  # where the volumes would be
            await pilot.press("t")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert fingerprint in str(app.screen.query_one("#question").render())
            await pilot.press("n")  # no: nothing is trusted
            await pilot.pause()
            assert not known_hosts_path().exists()
            await pilot.press("t")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(pilot, lambda: inv.host_status("stranger").state
                           == HostState.ONLINE
                           and inv.cache.volume("stranger", "p", "a.raw") is not None)
            assert fingerprint.split(":", 1)[1][:8] and known_hosts_path().exists()
    finally:
        inv.close()


async def test_stop_and_start_a_libvirt_pool_from_the_console(libvirtd: Libvirtd,
                                                              tmp_path: Path) -> None:
    target = tmp_path / "lv"
    target.mkdir()
    name = f"sctest-{secrets.token_hex(3)}"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    inv.refresh()
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.pool_tree.select_pool("virt", name)  # type: ignore[attr-defined]
            await pilot.pause()
            verbs = [v for v, _, _ in screen.pool_lifecycle_commands()]  # type: ignore[attr-defined]
            assert verbs[:2] == ["stop", "refresh"]
            titles = [c.name for c in screen.palette_commands()]  # type: ignore[attr-defined]
            assert f"Stop pool {name}" in titles
            screen.pool_lifecycle("virt", name, "stop")  # type: ignore[attr-defined]
            await wait_for(pilot, lambda: inv.known_pool("virt", name) is not None
                           and not inv.known_pool("virt", name).active)  # type: ignore[union-attr]
            assert "inactive" in libvirtd.virsh("pool-info", name).stdout
            assert [v for v, _, _ in screen.pool_lifecycle_commands()] == ["start"]  # type: ignore[attr-defined]
            screen.pool_lifecycle("virt", name, "start")  # type: ignore[attr-defined]
            await wait_for(pilot, lambda: inv.known_pool("virt", name).active)  # type: ignore[union-attr]
    finally:
        inv.close()
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)
