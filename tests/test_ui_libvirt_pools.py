"""Defining and deleting libvirt pools from the console (P and E, and the palette),
against the real libvirtd of tests/harness/libvirtd.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Select, TextArea

from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.ui.app import StorageConsoleApp
from console.ui.screens.define_pool import DefinePoolScreen
from console.ui.screens.delete_pool import DeletePoolScreen
from console.ui.screens.help import binding_sections
from console.ui.screens.main import MainScreen
from tests.harness.libvirtd import Libvirtd
from tests.test_ui import SIZE, make_app
from tests.test_ui_hosts import wait_for


def unique() -> str:
    return f"sctest-{secrets.token_hex(3)}"


@pytest.fixture
def names(libvirtd: Libvirtd) -> Iterator[list[str]]:
    """Pools a test defines, stopped and undefined afterwards whatever happened."""
    made: list[str] = []
    yield made
    for name in made:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


def inventory(libvirtd: Libvirtd, tmp_path: Path, *, read_only: bool = False) -> Inventory:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
    inv = Inventory(Config.load(conf), Cache(None), read_only=read_only)
    inv.refresh()
    return inv


def main(app: StorageConsoleApp) -> MainScreen:
    screen = app.screen_stack[0]
    assert isinstance(screen, MainScreen)
    return screen


async def type_into(pilot: object, app: StorageConsoleApp, selector: str, text: str) -> None:
    app.screen.query_one(selector, Input).focus()
    await pilot.press(*text)  # type: ignore[attr-defined]


async def test_define_a_dir_pool_from_the_form(libvirtd: Libvirtd, tmp_path: Path,
                                               names: list[str]) -> None:
    name = unique()
    names.append(name)
    target = tmp_path / "new-pool"
    inv = inventory(libvirtd, tmp_path)
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = main(app)
            screen.pool_tree.select_host("virt")
            await pilot.pause()
            assert "Define a pool on virt" in [c.name for c in screen.palette_commands()]
            keys = dict(row for _, rows in binding_sections(app, screen) for row in rows)
            assert keys["P"] == "Define a libvirt pool"  # the help screen lists it
            await pilot.press("P")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, DefinePoolScreen)
            # What is missing or wrong is said in the dialog, nothing is defined.
            await type_into(pilot, app, "#name", name)
            await pilot.press("ctrl+s")
            await pilot.pause()
            error = str(dialog.query_one("#error").render())
            assert "a dir pool needs target" in error
            await type_into(pilot, app, "#target", "relative/dir")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "not an absolute path" in str(dialog.query_one("#error").render())
            assert name not in libvirtd.virsh("pool-list", "--all", "--name").stdout
            dialog.query_one("#target", Input).value = str(target)
            await pilot.click("#start")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.screen is screen)
            # The new pool is in the tree, started, its directory built by libvirt.
            await wait_for(pilot, lambda: ("virt", name) in screen.pool_tree.pool_keys()
                           and inv.known_pool("virt", name) is not None
                           and inv.known_pool("virt", name).active)  # type: ignore[union-attr]
            assert target.is_dir()
            assert "running" in libvirtd.virsh("pool-info", name).stdout
    finally:
        inv.close()


async def test_define_any_pool_type_from_raw_xml(libvirtd: Libvirtd, tmp_path: Path,
                                                 names: list[str]) -> None:
    name = unique()
    names.append(name)
    inv = inventory(libvirtd, tmp_path)
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = main(app)
            screen.pool_tree.select_host("virt")
            await pilot.pause()
            await pilot.press("P")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, DefinePoolScreen)
            dialog.query_one("#type", Select).value = "xml"
            await pilot.pause()
            area = dialog.query_one("#xml", TextArea)
            area.text = "<pool type='dir'><name>x</name>"
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "does not parse" in str(dialog.query_one("#error").render())
            area.text = (f"<pool type='dir'><name>{name}</name><target><path>"
                         f"{tmp_path / 'raw'}</path></target></pool>")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: ("virt", name) in screen.pool_tree.pool_keys())
            assert app.screen is screen
            assert name in libvirtd.virsh("pool-list", "--all", "--name").stdout
    finally:
        inv.close()


async def test_delete_a_pools_storage_after_typing_its_name(
        libvirtd: Libvirtd, tmp_path: Path, names: list[str]) -> None:
    name = unique()
    names.append(name)
    target = tmp_path / "doomed"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-build", name)
    libvirtd.virsh("pool-start", name)
    inv = inventory(libvirtd, tmp_path)
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = main(app)
            screen.pool_tree.select_pool("virt", name)
            await pilot.pause()
            # A running pool: libvirt deletes only a stopped one's storage; said, no dialog.
            await pilot.press("E")
            await pilot.pause()
            assert not isinstance(app.screen, DeletePoolScreen)
            assert target.is_dir()
            screen.pool_lifecycle("virt", name, "stop")
            await wait_for(pilot, lambda: not inv.known_pool("virt", name).active)  # type: ignore[union-attr]
            titles = [c.name for c in screen.palette_commands()]
            assert f"Delete pool {name}'s storage" in titles
            await pilot.press("E")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, DeletePoolScreen)
            delete = dialog.query_one("#delete", Button)
            await type_into(pilot, app, "#confirm", name[:-1])
            assert delete.disabled
            await pilot.press("enter")
            await pilot.pause()
            assert "exactly" in str(dialog.query_one("#error").render())
            assert target.is_dir()
            await pilot.press(name[-1])
            assert not delete.disabled
            await pilot.click("#undefine")
            await pilot.click("#delete")
            await wait_for(pilot, lambda: app.screen is screen)
            assert not target.exists()
            await wait_for(pilot, lambda: ("virt", name) not in screen.pool_tree.pool_keys())
            assert name not in libvirtd.virsh("pool-list", "--all", "--name").stdout
    finally:
        inv.close()


async def test_read_only_offers_neither_and_deletes_nothing(
        libvirtd: Libvirtd, tmp_path: Path, names: list[str]) -> None:
    name = unique()
    names.append(name)
    target = tmp_path / "kept"
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-build", name)
    inv = inventory(libvirtd, tmp_path, read_only=True)
    app = make_app(inv)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = main(app)
            assert screen.pool_tree.select_pool("virt", name)
            await pilot.pause()
            assert not screen.check_action("delete_pool", ())
            assert not screen.check_action("define_pool", ())
            titles = " ".join(c.name for c in screen.palette_commands())
            assert "Delete pool" not in titles and "Define a pool" not in titles
            await pilot.press("E", "P")
            await pilot.pause()
            assert app.screen is screen
            # Below the UI too: the dialog's worker would meet the driver's refusal.
            dialog = DeletePoolScreen(inv, inv.pool("virt", name), cursor_blink=False)
            await app.push_screen(dialog)
            await type_into(pilot, app, "#confirm", name)
            await pilot.press("enter")
            await wait_for(pilot, lambda: "read-only" in str(
                dialog.query_one("#error").render()))
            error = str(dialog.query_one("#error").render())
            assert f"host 'virt', pool '{name}'" in error
            assert app.screen is dialog and target.is_dir()
    finally:
        inv.close()
