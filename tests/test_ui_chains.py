"""Pilot tests of the chain view (C) and "what depends on this?" (D): the forest from the
demo cache, its filter and jump, and dependants found on disk in another pool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rich.style import Style
from textual.widgets import Static

from console.chains import ForestLine
from console.ui.app import StorageConsoleApp
from console.ui.screens.chains import ChainScreen
from console.ui.screens.delete_volume import DeleteVolumeScreen
from console.ui.screens.main import MainScreen
from console.ui.widgets.chain_view import ChainView
from tests.conftest_ui import big_inventory, big_name, chain_inventory, real_inventory
from tests.test_ui import make_app, screen_text, settle, table

SIZE = (120, 40)


async def chains_done(app: StorageConsoleApp, pilot: object) -> None:
    """Let the screen start its workers, wait for them and for what they posted."""
    for _ in range(2):
        await pilot.pause()  # type: ignore[attr-defined]
        busy = [w for w in app.workers if w.group.startswith("chains")]
        if busy:  # an empty list would wait for every worker (the journal's reader too)
            await app.workers.wait_for_complete(busy)
    await pilot.pause()  # type: ignore[attr-defined]


def view(app: StorageConsoleApp) -> ChainView:
    assert isinstance(app.screen, ChainScreen)
    return app.screen.query_one(ChainView)


def line(app: StorageConsoleApp, name: str) -> ForestLine:
    return next(ln for ln in view(app).lines if ln.node.entry.name == name)


def shape(app: StorageConsoleApp) -> list[tuple[int, str]]:
    return [(ln.depth, ln.node.entry.name) for ln in view(app).lines]


async def test_forest_of_every_pool_and_host() -> None:
    app = make_app(chain_inventory())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await chains_done(app, pilot)
        lines = shape(app)
        base = lines.index((0, "base-debian12.qcow2"))
        # The chain of 3 crosses pools: scratch/web01-test -> images/web01 -> the base.
        assert lines[base:base + 4] == [(0, "base-debian12.qcow2"), (1, "deep-1.qcow2"),
                                        (2, "deep-2.qcow2"), (3, "deep-3.qcow2")]
        web01 = lines.index((1, "web01.qcow2"))
        assert lines[web01 + 1] == (2, "web01-test.qcow2")
        assert lines[web01 + 2] == (1, "web02.qcow2")
        assert line(app, "web01-test.qcow2").node.entry.pool == "scratch"
        # Every host: the backup host's volumes are roots, named with their host.
        assert (0, "backup-2024-01.qcow2") in lines
        text = screen_text(app)
        assert "● backup-2024-01.qcow2  qcow2 · 400G · 90G alloc · archive @backup" in text
        assert "│  └─ ● web01-test.qcow2  qcow2 · 20G · 12M alloc · scratch" in text
        assert "● ◆ base-debian12.qcow2  qcow2 · 20G · 1.9G alloc · images  " in text
        # Links no pool lists still keep the chain whole.
        assert "├─ ○ deep-1.qcow2  qcow2 · 20G · not in the cache" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_orphan_highlighted_and_unreferenced_snapshot_marked() -> None:
    app = make_app(chain_inventory())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await chains_done(app, pilot)
        chain_view = view(app)
        orphan = line(app, "orphan.qcow2")
        assert orphan.depth == 0
        assert orphan.node.entry.problem == \
            "backing is missing: /srv/images/deleted-base.qcow2"
        rendered = chain_view.line_text(orphan)
        error = chain_view.get_component_rich_style("chain-view--problem").color
        error_spans = [rendered.plain[s.start:s.end] for s in rendered.spans
                       if isinstance(s.style, Style) and s.style.color == error]
        assert "orphan.qcow2" in error_spans
        assert "  ✗ backing is missing: /srv/images/deleted-base.qcow2" in error_spans
        assert "✗ backing is missing" in screen_text(app)
        snapshot = chain_view.line_text(line(app, "db01-before-upgrade.qcow2")).plain
        assert "◆ db01-before-upgrade.qcow2" in snapshot and snapshot.endswith("unreferenced")
        # A snapshot others are based on is not; neither is an ISO.
        assert "unreferenced" not in chain_view.line_text(
            line(app, "base-debian12.qcow2")).plain
        assert "unreferenced" not in chain_view.line_text(
            line(app, "virtio-win-0.1.262.iso")).plain


async def test_filter_keeps_ancestors_and_descendants_and_enter_jumps() -> None:
    app = make_app(chain_inventory())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await chains_done(app, pilot)
        await pilot.press("slash", *"web01")
        await chains_done(app, pilot)
        assert shape(app) == [(0, "base-debian12.qcow2"), (1, "web01.qcow2"),
                              (2, "web01-test.qcow2")]
        await pilot.press(*"-test", "enter")
        await chains_done(app, pilot)
        assert shape(app) == [(0, "base-debian12.qcow2"), (1, "web01.qcow2"),
                              (2, "web01-test.qcow2")]
        assert "1 match · 3 of" in str(app.screen.query_one("#chain-status", Static).render())
        chain_view = view(app)
        assert app.focused is chain_view
        current = chain_view.current
        assert current is not None and current.entry.name == "web01-test.qcow2"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        t = table(app)
        assert (t.host, t.pool) == ("local", "scratch")
        assert t.current is not None and t.current.name == "web01-test.qcow2"
        assert app.focused is t


async def test_escape_clears_the_filter_then_closes() -> None:
    app = make_app(chain_inventory())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await chains_done(app, pilot)
        everything = len(view(app).lines)
        await pilot.press("slash", *"orphan")
        await chains_done(app, pilot)
        assert shape(app) == [(0, "orphan.qcow2")]
        await pilot.press("escape")
        await chains_done(app, pilot)
        assert len(view(app).lines) == everything
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


async def test_dependants_found_on_disk_in_another_pool(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", str(first / "base.qcow2"), "1M")
    qemu_img("create", "-q", "-f", "qcow2", str(first / "unrelated.qcow2"), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(first / "base.qcow2"), "-F", "qcow2",
             str(second / "child.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "child.qcow2", "-F", "qcow2",
             str(second / "grandchild.qcow2"))
    inventory = real_inventory(first, second, cache_path=tmp_path / "cache.db")
    inventory.refresh()
    first_pool = next(p for p in inventory.pools() if p.path == str(first))
    app = make_app(inventory, select=(first_pool.host, first_pool.name))
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        assert t.current is not None and t.current.name == "base.qcow2"
        await pilot.press("D")
        await chains_done(app, pilot)
        lines = view(app).lines
        found = [(ln.depth, ln.node.distance, ln.node.entry.name, ln.node.entry.pool)
                 for ln in lines]
        second_pool = next(p.name for p in inventory.pools() if p.path == str(second))
        assert found == [(0, 0, "base.qcow2", first_pool.name),
                         (1, 1, "child.qcow2", second_pool),
                         (2, 2, "grandchild.qcow2", second_pool)]
        text = screen_text(app)
        assert "What depends on base.qcow2" in text
        assert "└─ 1 ● child.qcow2" in text and "└─ 2 ● grandchild.qcow2" in text
        assert "2 volume(s) based on it" in text
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("d")  # the delete dialog refuses, and points at D
        await settle(app, pilot)
        assert isinstance(app.screen, DeleteVolumeScreen)
        refused = str(app.screen.query_one("#refused", Static).render())
        assert "Refused" in refused and "D on the console shows what depends on it" in refused


async def test_twenty_thousand_volumes_open_and_answer_a_key() -> None:
    app = make_app(big_inventory(20_000))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("C")
        await chains_done(app, pilot)
        chain_view = view(app)
        assert len(chain_view.lines) == 20_000
        await pilot.press("end")
        await pilot.pause()
        current = chain_view.current
        assert current is not None and current.entry.name == big_name(19_999)
        assert big_name(19_999) in screen_text(app)
