"""Pilot tests of marking volumes and of one plan for the marked ones: the demo cache
for the keys, real images in tmp pools for plan, confirmation and summary."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import Button, Input, Static

from console.ui.app import StorageConsoleApp
from console.ui.screens.bulk import BulkPlanScreen
from console.ui.screens.main import MainScreen
from console.ui.widgets.mark_bar import MarkBar
from tests.conftest_ui import clock, demo_inventory, real_inventory, runner_for
from tests.test_ui import screen_text, settle, table

SIZE = (120, 40)


def demo() -> StorageConsoleApp:
    inventory = demo_inventory()
    return StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                             clock=clock, cursor_blink=False)


def marked(app: StorageConsoleApp) -> list[str]:
    return sorted(m.volume for m in table(app).marks)


def bar(app: StorageConsoleApp) -> str:
    widget = app.screen_stack[0].query_one(MarkBar)
    return str(widget.render()) if widget.display else ""


async def test_space_marks_and_moves_down_and_unmarks() -> None:
    app = demo()
    async with app.run_test(size=SIZE) as pilot:
        first = table(app).current
        assert first is not None
        await pilot.press("space")
        assert marked(app) == [first.name]
        assert table(app).cursor == 1
        assert bar(app).startswith("✓ 1 marked · ")
        await pilot.press("up", "space")
        assert marked(app) == [] and bar(app) == ""


async def test_ranges_star_counts_and_size_across_pools() -> None:
    app = demo()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        names = [row.name for i in range(t.row_count) if (row := t.row(i)) is not None]
        await pilot.press("shift+down", "shift+down")  # rows 0..2
        assert marked(app) == sorted(names[:3])
        await pilot.press("down", "down", "down", "ctrl+space")  # from row 2 to row 5
        assert marked(app) == sorted(names[:6])
        rows = [t.row(i) for i in range(6)]
        size = sum(r.capacity for r in rows if r is not None)
        # Another pool: marks stay, count and size add up.
        screen = app.screen
        assert isinstance(screen, MainScreen)
        screen.pool_tree.select_pool("local", "iso")
        screen.open_pool("local", "iso")
        await pilot.pause()
        await pilot.press("asterisk")
        assert len(t.marks) == 8 and t.marks.places() == 2
        iso = 631 * (1 << 20) + 708 * (1 << 20)
        assert t.marks.capacity == size + iso
        assert bar(app).startswith("✓ 8 marked in 2 pools")
        assert bar(app).endswith("esc clears")


async def test_star_marks_what_the_filter_matches_and_esc_clears_marks_first() -> None:
    app = demo()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"web", "enter")
        await pilot.press("asterisk")
        assert marked(app) == ["web01.qcow2", "web02.qcow2"]
        await pilot.press("escape")  # the marks go, the filter stays
        assert marked(app) == [] and table(app).filter_text == "web"
        assert bar(app) == ""  # the bar that says "esc clears" is gone
        await pilot.press("escape")  # now the filter
        assert table(app).filter_text == ""


async def test_a_mark_of_a_volume_gone_on_refresh_is_dropped(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    for name in ("a.qcow2", "b.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool / name), "1M"],
                       check=True)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space", "space")
        assert marked(app) == ["a.qcow2", "b.qcow2"]
        os.unlink(pool / "a.qcow2")
        await pilot.press("r")
        await settle(app, pilot)
        assert marked(app) == ["b.qcow2"]


def console(pool: Path, tmp_path: Path, *, read_only: bool = False) -> StorageConsoleApp:
    inventory = real_inventory(pool, cache_path=tmp_path / "cache.db", read_only=read_only)
    inventory.refresh()
    return StorageConsoleApp(inventory, runner=runner_for(inventory),
                             select=inventory.config.selected, refresh_on_start=False,
                             cursor_blink=False)


async def until(pilot: Any, predicate: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def chain_pool(tmp_path: Path) -> Path:
    """base ← leaf, and a lone raw disk holding data."""
    pool = tmp_path / "pool"
    pool.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool / "base.qcow2"),
                    "1M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(pool / "leaf.qcow2"), "1M"], check=True)
    (pool / "data.raw").write_bytes(b"precious" * 512)
    return pool


async def test_plan_confirm_and_summary_of_a_bulk_delete(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("asterisk", "d")
        await until(pilot, lambda: isinstance(app.screen, BulkPlanScreen)
                    and app.screen.plan is not None)
        dialog = app.screen
        assert isinstance(dialog, BulkPlanScreen) and dialog.plan is not None
        assert [j.op.volume for j in dialog.plan.jobs] == ["data.raw", "leaf.qcow2",
                                                          "base.qcow2"]
        shown = screen_text(app)
        assert shown.index("delete leaf.qcow2") < shown.index("delete base.qcow2")
        assert "holds data" in shown and "frees" in shown
        assert "Type 1 to delete them" in str(dialog.query_one("#question", Static).render())
        await pilot.press("y")  # not enough: data needs the count typed
        assert dialog.outcomes is None
        dialog.query_one("#typed", Input).value = "1"
        await pilot.press("enter")
        await until(pilot, lambda: dialog.finished)
        summary = str(dialog.query_one("#question", Static).render())
        assert summary.startswith("Summary: 3 done, 0 failed"), summary
        assert screen_text(app).count("done #") == 3
        assert sorted(n for n in os.listdir(pool) if not n.startswith(".")) == []
        await pilot.click("#close")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await settle(app, pilot)
        assert table(app).row_count == 0 and not table(app).marks


async def test_a_summary_says_why_a_job_failed(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space", "space")  # by name: base.qcow2, data.raw (leaf.qcow2)
        assert marked(app) == ["base.qcow2", "data.raw"]
        await pilot.press("n")  # snapshot both
        await until(pilot, lambda: isinstance(app.screen, BulkPlanScreen)
                    and app.screen.plan is not None)
        dialog = app.screen
        assert isinstance(dialog, BulkPlanScreen) and dialog.plan is not None
        assert [r.volume for r in dialog.plan.refused] == ["base.qcow2"]
        assert "leaf.qcow2" in screen_text(app)  # why base is refused
        # Between plan and confirmation, the disk changes: the job re-checks and fails.
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "data.raw", "-F",
                        "raw", str(pool / "over.qcow2"), "1M"], check=True)
        await pilot.press("y")
        await until(pilot, lambda: dialog.finished)
        summary = str(dialog.query_one("#question", Static).render())
        assert summary.startswith("Summary: 0 done, 1 failed"), summary
        assert "based on it" in screen_text(app)
        assert dialog.query_one("#close", Button).label.plain == "Close"


async def test_read_only_plan_refuses_everything(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("asterisk", "d")
        await until(pilot, lambda: isinstance(app.screen, BulkPlanScreen)
                    and app.screen.plan is not None)
        dialog = app.screen
        assert isinstance(dialog, BulkPlanScreen) and dialog.plan is not None
        assert not dialog.plan.jobs and len(dialog.plan.refused) == 3
        assert "read-only" in screen_text(app)
        assert not dialog.query_one("#queue", Button).display
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def open_plan(app: StorageConsoleApp, pilot: Any, *keys: str) -> BulkPlanScreen:
    await pilot.press(*keys)
    await until(pilot, lambda: isinstance(app.screen, BulkPlanScreen))
    dialog = app.screen
    assert isinstance(dialog, BulkPlanScreen)
    return dialog


async def test_archive_marks_into_a_directory_then_the_summary(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    into = tmp_path / "archives"
    into.mkdir()
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_plan(app, pilot, "asterisk", "a")
        field = dialog.query_one("#directory", Input)
        field.value = str(into)
        field.focus()
        await pilot.press("enter")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        assert dialog.plan is not None and len(dialog.plan.jobs) == 3
        shown = screen_text(app)
        assert "archive data.raw →" in shown and "data.raw.zst" in shown
        # The directory's space is counted (long paths wrap: the plan says where).
        assert [e.pool for e in dialog.plan.effects] == [str(into)] and "takes" in shown
        # How many run at once is said before confirming, and where it is set.
        question = str(dialog.query_one("#question", Static).render())
        runner = app.runner
        assert runner is not None
        assert f"At most {runner.per_pool} run at once in a pool, {runner.per_host} on a " \
            "host ([jobs] in config.toml)" in question
        await pilot.press("enter", "y")  # the planned directory again: on to Queue
        await until(pilot, lambda: dialog.finished)
        summary = str(dialog.query_one("#question", Static).render())
        assert summary.startswith("Summary: 3 done, 0 failed"), summary
    assert sorted(os.listdir(into)) == sorted(
        f"{n}.zst{s}" for n in ("base.qcow2", "data.raw", "leaf.qcow2") for s in ("", ".json"))


async def test_typing_a_directory_over_a_ready_plan_never_queues_it(tmp_path: Path) -> None:
    """The plan for the default directory is ready, and the user types another one: the
    keys go into the field (a "y" in the path must not queue the jobs to the old one)."""
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_plan(app, pilot, "asterisk", "a")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        default = dialog.directory
        await pilot.press("ctrl+u", *"/srv/yy")
        field = dialog.query_one("#directory", Input)
        assert field.value == "/srv/yy" and dialog.outcomes is None
        assert dialog.directory == default  # not planned yet: Enter plans it


async def test_resize_asks_the_size_and_refuses_a_shrink(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_plan(app, pilot, "asterisk", "e")
        assert "enter the new size" in screen_text(app)
        assert not dialog.query_one("#queue", Button).display \
            or dialog.query_one("#queue", Button).disabled
        await pilot.press(*"nonsense", "enter")
        assert "size:" in screen_text(app) and dialog.plan is None
        field = dialog.query_one("#size", Input)
        field.value = "512K"  # below the two 1M images (they would shrink), above data.raw
        await pilot.press("enter")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        assert dialog.plan is not None
        assert [j.op.volume for j in dialog.plan.jobs] == ["data.raw"]
        assert sorted(r.volume for r in dialog.plan.refused) == ["base.qcow2", "leaf.qcow2"]
        assert "never done in bulk" in screen_text(app)
        field.value = "+1M"
        field.focus()
        await pilot.press("enter")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        assert dialog.plan is not None and len(dialog.plan.jobs) == 3
        assert "virtual size" in screen_text(app)


async def test_check_of_the_marks_runs_in_read_only_mode(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_plan(app, pilot, "asterisk", "K")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        assert dialog.query_one("#queue", Button).label.plain == "Check 3 volumes"
        await pilot.press("y")
        await until(pilot, lambda: dialog.finished)
        assert dialog.report is not None and len(dialog.report.volumes) == 3
        summary = str(dialog.query_one("#question", Static).render())
        assert summary.startswith("Summary: ") and "optimized" in summary, summary
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_k_without_marks_checks_the_volume_under_the_cursor(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_plan(app, pilot, "K")
        await until(pilot, lambda: dialog.plan is not None and not dialog.busy)
        assert dialog.plan is not None and dialog.plan.checks == (
            ("local", str(pool), "base.qcow2"),)


async def test_clone_with_marks_says_why_it_does_not_act(tmp_path: Path) -> None:
    pool = chain_pool(tmp_path)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("asterisk", "l")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert any("one snapshot at a time" in str(n.message)
                   for n in app._notifications)
