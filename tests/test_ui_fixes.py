"""Pilot tests of the fixes screen (F): a real check of real images (a leaked cluster,
an old compat 0.10 header, a corrupt refcount), grouped by severity; marked fixes run as
jobs and leave ``qemu-img check`` at 0; a high-risk repair asks again (yes: a backup,
then the repair; no: nothing runs); read-only mode shows the findings and runs nothing."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from textual.widgets import Static

from console.config import journal_path
from console.fixes import Severity
from console.jobs.fixing import BACKUP_MARK
from console.jobs.journal import JobState, Journal
from console.ui.app import StorageConsoleApp
from console.ui.screens.confirm import ConfirmScreen
from console.ui.screens.fixes import FixesScreen
from console.ui.screens.main import MainScreen
from console.ui.widgets.fix_list import FixList
from tests.conftest import MakeImage
from tests.test_checks import _leak, _set_refcount, _written
from tests.test_ui import image_info, screen_text, settle
from tests.test_ui_jobs import console, panel

SIZE = (120, 40)


async def checked(app: StorageConsoleApp, pilot: object) -> None:
    """Let the screen start its check, wait for it and for what it posted."""
    for _ in range(2):
        await pilot.pause()  # type: ignore[attr-defined]
        busy = [w for w in app.workers if w.group.startswith("fixes")]
        if busy:  # an empty list would wait for every worker (the journal's reader too)
            await app.workers.wait_for_complete(busy)
    await pilot.pause()  # type: ignore[attr-defined]


def fix_list(app: StorageConsoleApp) -> FixList:
    assert isinstance(app.screen, FixesScreen)
    return app.screen.query_one(FixList)


def grouped(app: StorageConsoleApp) -> dict[tuple[str, str], tuple[str, str]]:
    """(volume, code) -> (the severity heading it is under, the type heading)."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    severity = kind = ""
    for line in fix_list(app).lines:
        if line.finding is None:
            if line.depth == 0:
                severity = line.label.split()[0]
            else:
                kind = line.label
            continue
        found[(str(line.finding.volume), line.finding.code)] = (severity, kind)
    return found


def status(app: StorageConsoleApp) -> str:
    return str(app.screen.query_one("#fix-status", Static).render())


def qemu_check(path: Path) -> int:
    return subprocess.run(["qemu-img", "check", "-f", "qcow2", str(path)],
                          capture_output=True).returncode


def troubled_pool(pool: Path, make_image: MakeImage) -> None:
    _leak(_written(pool / "leaky.qcow2", make_image))
    make_image(pool / "old.qcow2", options="compat=0.10")
    make_image(pool / "fine.qcow2")


async def test_mark_both_plan_and_run_them(tmp_path: Path, make_image: MakeImage) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    troubled_pool(pool, make_image)
    assert qemu_check(pool / "leaky.qcow2") != 0
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("F")
        await checked(app, pilot)
        groups = grouped(app)
        assert groups == {("leaky.qcow2", "leaked-clusters"): (Severity.DEGRADED, "clean"),
                          ("old.qcow2", "compat-0.10"): (Severity.DEGRADED, "optimize")}
        text = screen_text(app)
        assert "degraded (2)" in text and "broken" not in text
        assert "☐ ▲ leaky.qcow2  clean · low risk · " in text
        assert "☐ ▲ old.qcow2  optimize · low risk · no space change" in text
        assert status(app).startswith("2 finding(s) · 2 fix(es)")
        # space marks the one under the cursor (the first finding), * all shown.
        await pilot.press("space")
        await pilot.pause()
        assert "1 marked" in status(app)
        assert "✓ ▲ old.qcow2" in screen_text(app)
        await pilot.press("escape")  # clears the marks, stays
        await pilot.pause()
        assert isinstance(app.screen, FixesScreen) and "marked" not in status(app)
        await pilot.press("asterisk")
        await pilot.pause()
        assert "2 marked" in status(app)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        plan = app.screen.question
        commands = [c for f in app.screen_stack[-2].query_one(FixList).fixes() for c in f.commands]
        assert len(commands) == 2
        assert all(f"$ {shlex.join(c)}" in plan for c in commands)
        assert "$ qemu-img check" in plan and "leaks" in plan
        assert f"$ qemu-img amend -f qcow2 -o compat=1.1 -- {pool / 'old.qcow2'}" in plan
        assert "Total: " in plan
        await pilot.press("y")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        jobs = [j for j in panel(app).rows if j.kind == "fix"]
        assert sorted(j.volume for j in jobs) == ["leaky.qcow2", "old.qcow2"]
        assert all(j.state == JobState.DONE for j in jobs), [(j.state, j.error) for j in jobs]
    assert qemu_check(pool / "leaky.qcow2") == 0
    assert qemu_check(pool / "old.qcow2") == 0
    info = image_info(pool / "old.qcow2")
    assert info["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
    done = [j for j in Journal(journal_path()).jobs() if j.kind == "fix"]
    assert len(done) == 2 and all(j.state == JobState.DONE for j in done)


async def test_read_only_shows_findings_and_runs_nothing(tmp_path: Path,
                                                         make_image: MakeImage) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    troubled_pool(pool, make_image)
    before = sorted(os.listdir(pool))
    noted: list[str] = []

    class Recording(StorageConsoleApp):
        def notify(self, message: str, **kwargs: Any) -> None:
            noted.append(f"{kwargs.get('title')}: {message}")
            super().notify(message, **kwargs)

    app = console(pool, tmp_path, read_only=True, app_class=Recording)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("F")
        await checked(app, pilot)
        assert set(grouped(app)) == {("leaky.qcow2", "leaked-clusters"),
                                     ("old.qcow2", "compat-0.10")}
        assert "read-only: fixes are shown, not run" in status(app)
        await pilot.press("space", "asterisk")
        await pilot.pause()
        assert fix_list(app).marked == set() and "marked" not in status(app)
        assert noted.count("fixes: read-only mode: fixes are shown, not run") == 2
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FixesScreen) and len(noted) == 3
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
    assert sorted(os.listdir(pool)) == before
    assert qemu_check(pool / "leaky.qcow2") != 0
    assert Journal(journal_path()).jobs() == []


def corrupt_pool(pool: Path, make_image: MakeImage) -> Path:
    """A qcow2 whose header cluster is counted unused (``qemu-img check`` exit 2)."""
    corrupt = _written(pool / "corrupt.qcow2", make_image)
    _set_refcount(corrupt, 0, 0)
    assert qemu_check(corrupt) == 2
    return corrupt


async def plan_high_risk(app: StorageConsoleApp, pilot: Any) -> str:
    """F, the broken finding marked, enter, yes to the plan: the high-risk question."""
    await pilot.press("F")
    await checked(app, pilot)
    assert grouped(app) == {("corrupt.qcow2", "corruptions"): (Severity.BROKEN, "mend")}
    text = screen_text(app)
    assert "broken (1)" in text and "degraded" not in text
    assert "corrupt.qcow2  mend · high risk" in text
    await pilot.press("space", "enter")
    await pilot.pause()
    assert isinstance(app.screen, ConfirmScreen)
    assert "1 high-risk fix(es)" in app.screen.question and "cp --sparse=always" in \
        app.screen.question
    await pilot.press("y")
    await pilot.pause()
    assert isinstance(app.screen, ConfirmScreen) and app.screen.title_text == "High-risk fix"
    return app.screen.question


async def test_a_broken_image_confirmed_is_repaired_after_a_backup(
        tmp_path: Path, make_image: MakeImage) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    corrupt = corrupt_pool(pool, make_image)
    before = corrupt.read_bytes()
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        question = await plan_high_risk(app, pilot)
        assert "high-risk mend of [b]corrupt.qcow2[/b]" in question
        assert "a backup is taken first" in question
        await pilot.press("y")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        (job,) = [j for j in panel(app).rows if j.kind == "fix"]
        assert (job.state, job.error) == (JobState.DONE, None)
        assert job.params["fix_params"]["confirmed"] is True
    assert qemu_check(corrupt) == 0
    (backup,) = [n for n in os.listdir(pool) if BACKUP_MARK in n]
    assert backup.startswith("corrupt.qcow2") and (pool / backup).read_bytes() == before
    (done,) = Journal(journal_path()).jobs()
    assert done.resume["backup"] == backup and done.resume["after"]["status"] == "clean"


async def test_a_high_risk_fix_declined_runs_nothing(tmp_path: Path,
                                                     make_image: MakeImage) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    corrupt = corrupt_pool(pool, make_image)
    before = corrupt.read_bytes()
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await plan_high_risk(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        # Back on the fixes screen, the mark kept, free to plan again.
        assert isinstance(app.screen, FixesScreen)
        assert "1 marked" in status(app) and not app.screen.busy
        assert panel(app).rows == []
    assert corrupt.read_bytes() == before and qemu_check(corrupt) == 2
    assert sorted(os.listdir(pool)) == ["corrupt.qcow2"]
    assert Journal(journal_path()).jobs() == []
