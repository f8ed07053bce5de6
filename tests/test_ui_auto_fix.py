"""Pilot tests of auto-fix in the console: a resize from its dialog of a compat-0.10
image is followed by the amend as a job of its own, started by it, shown in the jobs
panel and in the volume's details (host, stage X/Y, percent); the palette turns it off
for this console, and then a job queues nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.command import CommandPalette
from textual.widgets import Input

from console.jobs.journal import JobRecord, JobState
from console.ui.app import StorageConsoleApp
from console.ui.screens.main import MainScreen
from console.ui.screens.resize_volume import ResizeVolumeScreen
from console.ui.widgets.volume_detail import VolumeDetail
from tests.conftest import MakeImage
from tests.test_ui import image_info, settle
from tests.test_ui_jobs import console, main, panel, until

SIZE = (120, 40)


async def resize(app: StorageConsoleApp, pilot: Any, size: str) -> JobRecord:
    """The selected volume resized from its dialog (plan, then the job); its record."""
    await pilot.press("e")
    await pilot.pause()
    dialog = app.screen
    assert isinstance(dialog, ResizeVolumeScreen)
    dialog.query_one("#size", Input).value = size
    await pilot.press("ctrl+s")
    await until(pilot, lambda: dialog.plan is not None)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: any(j.kind == "resize" and j.state == JobState.DONE
                                   for j in panel(app).rows))
    await settle(app, pilot)
    assert isinstance(app.screen, MainScreen)
    return max((j for j in panel(app).rows if j.kind == "resize"), key=lambda j: j.id)


def fixes(app: StorageConsoleApp) -> list[JobRecord]:
    return [j for j in panel(app).rows if j.kind == "fix"]


def detail_text(app: StorageConsoleApp) -> str:
    return main(app).query_one(VolumeDetail).describe().plain


async def test_a_job_from_the_console_is_followed_by_its_fix(
        tmp_path: Path, make_image: MakeImage) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    old = make_image(pool / "old.qcow2", options="compat=0.10")
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        job = await resize(app, pilot, "+1M")
        await until(pilot, lambda: fixes(app) and fixes(app)[0].state.finished)
        await settle(app, pilot)
        (fix,) = fixes(app)
        assert (fix.state, fix.error, fix.params["code"]) == (JobState.DONE, None,
                                                              "compat-0.10")
        assert fix.who.endswith(f"started by job {job.id}")
        assert image_info(old)["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
        text = detail_text(app)
        assert f"last fix: job {fix.id} compat-0.10 (done) · host local · stage 3/3 " \
            "re-check · 100%" in text
        # Off from the palette: the next job queues nothing.
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"auto-fix after")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and app.runner is not None
        assert app.runner.auto_fix is False
        names = [c.name for c in main(app).palette_commands()]
        assert "Auto-fix after jobs: off (turn it on)" in names
        make_image(pool / "older.qcow2", options="compat=0.10")
        main(app).action_refresh()
        await settle(app, pilot)
        main(app).volume_table.select_name("older.qcow2")
        await pilot.pause()
        await resize(app, pilot, "+1M")
        await settle(app, pilot)
        assert len(fixes(app)) == 1
        assert image_info(pool / "older.qcow2")["format-specific"]["data"][  # type: ignore[index]
            "compat"] == "0.10"
        assert "last fix" not in detail_text(app)
