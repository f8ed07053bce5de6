"""Pilot tests of jobs in the console: dialogs submit jobs, the panel follows them (this
console's and other processes'), and acts on them. Real images in tmp_path pools."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console
from textual.widgets import Button, Checkbox, Input, Select, Static

from backends.contract import Cancelled
from backends.model import Progress
from console.config import journal_path
from console.jobs.journal import JobRecord, JobState, Journal
from console.jobs.operations import (
    OPERATIONS,
    Context,
    CopyVolume,
    CreateVolume,
    Operation,
    temp_name,
)
from console.jobs.runner import Runner
from console.ui.app import StorageConsoleApp
from console.ui.screens.archive_volume import (
    ArchiveVolumeScreen,
    GrowFilesystemScreen,
    RestoreVolumeScreen,
)
from console.ui.screens.audit_log import AuditScreen
from console.ui.screens.confirm import ConfirmScreen
from console.ui.screens.copy_volume import CopyVolumeScreen
from console.ui.screens.delete_volume import DeleteVolumeScreen
from console.ui.screens.main import MainScreen
from console.ui.screens.plan import PlanDialog, plan_text
from console.ui.screens.resize_volume import ResizeVolumeScreen
from console.ui.screens.snapshot_volume import CloneVolumeScreen, SnapshotVolumeScreen
from console.ui.widgets.jobs_panel import JobsPanel
from tests.conftest import PATIENCE, MakeImage
from tests.conftest_ui import real_inventory, runner_for, slow_image
from tests.test_ui import image_info, screen_text, settle, table

SIZE = (120, 40)

__all__ = ["slow_image"]  # a fixture


@dataclasses.dataclass(frozen=True)
class Hold(Operation):
    """Writes a temporary file, then waits until ``gate`` exists (tests only)."""

    kind: ClassVar[str] = "test-hold"
    gate: str = ""

    @property
    def stages(self) -> tuple[str, ...]:
        return ("hold",)

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "hold")
        pool = ctx.inventory.pool(self.host, self.pool)
        temp = temp_name(ctx.job_id, self.volume)
        ctx.remember(temp=temp)
        with open(os.path.join(pool.path, temp), "wb") as f:
            f.write(b"x")
        step = 0
        while not os.path.exists(self.gate):
            if ctx.should_cancel():
                raise Cancelled("cancelled")
            step = min(step + 1, 99)
            ctx.progress(Progress(1, 1, step, 100))
            time.sleep(0.02)
        os.rename(os.path.join(pool.path, temp), os.path.join(pool.path, self.volume))


OPERATIONS[Hold.kind] = Hold


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    d = tmp_path / "pool"
    d.mkdir()
    return d


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MainScreen, "JOB_POLL_BUSY", 0.05)
    monkeypatch.setattr(MainScreen, "JOB_POLL_IDLE", 0.05)


def console(pool: Path, tmp_path: Path, *, read_only: bool = False, audit: bool = False,
            app_class: type[StorageConsoleApp] = StorageConsoleApp) -> StorageConsoleApp:
    inventory = real_inventory(pool, cache_path=tmp_path / "cache.db", read_only=read_only,
                               audit=audit)
    inventory.refresh()
    return app_class(inventory, runner=runner_for(inventory),
                     select=inventory.config.selected, refresh_on_start=False,
                     cursor_blink=False)


def main(app: StorageConsoleApp) -> MainScreen:
    assert app.main_screen is not None
    return app.main_screen


def panel(app: StorageConsoleApp) -> JobsPanel:
    return main(app).jobs_panel


async def until(pilot: Any, predicate: Callable[[], object],
                timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.03)


def newest(app: StorageConsoleApp) -> JobRecord:
    return panel(app).rows[0]


def plan_words(dialog: PlanDialog) -> str:
    """The plan the dialog shows, as one wide text (paths do not wrap)."""
    assert dialog.plan is not None
    console = Console(width=500, file=io.StringIO())
    with console.capture() as captured:
        console.print(plan_text(dialog.plan, fallback=dialog.fallback(),
                                notes=dialog.notes()))
    return captured.get()


def leftovers(pool: Path) -> list[str]:
    return [n for n in os.listdir(pool) if n.startswith(".sc-tmp")]


async def test_create_dialog_runs_a_job_the_panel_shows(pool: Path, tmp_path: Path) -> None:
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert not panel(app).display  # no jobs yet: no panel
        await pilot.press("c")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "new.qcow2"
        app.screen.query_one("#size", Input).value = "64M"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        job = newest(app)
        assert (job.kind, job.volume, job.state) == ("create", "new.qcow2", JobState.DONE)
        assert panel(app).display
        text = screen_text(app)
        assert f"✓ done        #{job.id}" in text and "create new.qcow2 (qcow2, 64M)" in text
        assert "jobs · 1 done" in text
        t = table(app)
        assert t.current is not None and t.current.name == "new.qcow2"
        assert image_info(pool / "new.qcow2")["virtual-size"] == 64 << 20
        assert Journal(journal_path()).get(job.id).state == JobState.DONE


async def test_cancel_from_the_panel_and_quitting_asks_first(pool: Path,
                                                             tmp_path: Path) -> None:
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        runner = app.runner
        assert runner is not None
        job = runner.submit(Hold("local", str(pool.resolve()), "held",
                                 gate=str(tmp_path / "never")))
        await until(pilot, lambda: panel(app).rows and newest(app).stage_label == "hold"
                    and leftovers(pool))
        text = screen_text(app)
        assert f"▸ running     #{job.id}" in text and "1/1" in text
        await pilot.press("q")  # a job of this console runs: quitting asks
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert f"({job.id})" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and app.is_running
        await pilot.press("J")  # focus the panel
        await pilot.pause()
        assert app.focused is panel(app)
        await pilot.press("x")
        await settle(app, pilot)
        assert newest(app).state == JobState.ABORTED
        assert runner.journal.get(job.id).state == JobState.ABORTED
        assert leftovers(pool) == [] and not (pool / "held").exists()
        assert f"− aborted     #{job.id}" in screen_text(app)
        await pilot.press("D")  # the screen's dependants (of no volume here), not dismiss
        await pilot.pause()
        assert app.focused is panel(app) and len(panel(app).rows) == 1
        await pilot.press("z")  # dismissed from the panel, not from the journal
        await pilot.pause()
        assert panel(app).rows == [] and "no jobs yet" in screen_text(app)
        assert runner.journal.get(job.id).state == JobState.ABORTED
        await pilot.press("J")  # hides it
        await pilot.pause()
        assert not panel(app).display


async def test_a_running_copy_shows_as_its_output_in_the_table(
        pool: Path, tmp_path: Path, slow_image: Path) -> None:
    """The copy's temporary file is no volume; its final name is shown, pinned under
    the header with the job's progress, until the job ends and the volume itself is
    there."""
    shutil.copy(slow_image, pool / "slow.qcow2")
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        runner = app.runner
        assert runner is not None
        job = runner.submit(CopyVolume("local", str(pool.resolve()), "slow.qcow2",
                                       dest_name="slow-copy.qcow2"))
        t = table(app)
        await until(pilot, lambda: t.pinned and t.pinned[0].percent > 0)
        assert [(o.job_id, o.name, o.verb) for o in t.pinned] == [
            (job.id, "slow-copy.qcow2", "copying")]
        assert leftovers(pool) and t.row_count == 1  # the temporary file is hidden
        assert t.current is not None and t.current.name == "slow.qcow2"  # cursor: volumes
        lines = screen_text(app).splitlines()
        (row,) = [line for line in lines if "⟳ slow-copy.qcow2" in line]
        assert f"copying #{job.id}" in row and re.search(r"⟳ \d+%", row), row
        # Below it, the volumes, cursor and all.
        assert lines.index(row) < next(i for i, line in enumerate(lines)
                                       if "slow.qcow2" in line and "copy" not in line)
        t.set_filter("nothing")  # the filter keeps what it names, job rows included
        assert t.pinned == []
        t.set_filter("COPY")
        assert [o.name for o in t.pinned] == ["slow-copy.qcow2"] and t.row_count == 0
        t.set_filter("")
        await until(pilot, lambda: newest(app).state == JobState.DONE, timeout=60)
        await until(pilot, lambda: not t.pinned and t.row_count == 2)
        assert "⟳" not in screen_text(app) and not leftovers(pool)


async def test_a_job_of_another_process_shows_up(pool: Path, tmp_path: Path,
                                                  fast_polls: None) -> None:
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # Another runner on the same journal file: a command line, for the console.
        inventory = real_inventory(pool, cache_path=tmp_path / "other.db")
        other = Runner(Journal(journal_path()), inventory)
        name = str(pool.resolve())
        gate = tmp_path / "gate"
        held = other.submit(Hold("local", name, "theirs.raw", gate=str(gate)))
        await until(pilot, lambda: panel(app).rows and newest(app).state == JobState.RUNNING)
        assert panel(app).display  # shown by itself while a job runs
        assert f"#{held.id}" in screen_text(app)
        gate.touch()
        created = other.submit(CreateVolume("local", name, "new.raw", format="raw",
                                            capacity=1 << 20))
        other.wait(created.id, 30)
        await until(pilot, lambda: [j.state for j in panel(app).rows] == [JobState.DONE] * 2)
        # The console re-read the pool when each ended.
        await until(pilot, lambda: table(app).row_count == 2)
        assert "new.raw" in screen_text(app) and "theirs.raw" in screen_text(app)
        other.close()


async def test_copy_shows_the_plan_then_copies(pool: Path, tmp_path: Path,
                                               make_image: MakeImage) -> None:
    src = make_image(pool / "disk.qcow2", "qcow2", "16M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 5M", str(src)],
                   check=True, capture_output=True)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("y")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, CopyVolumeScreen)
        assert dialog.query_one("#name", Input).value == "disk-copy.qcow2"
        dialog.query_one("#format", Select).value = "raw"
        await pilot.press("ctrl+s")  # the plan first
        await until(pilot, lambda: dialog.plan is not None)
        assert dialog.query_one("#plan", Static).display
        plan = plan_words(dialog)
        assert "runs" in plan and "reserves" in plan and "free" in plan
        assert "-O raw" in plan
        assert not (pool / "disk-copy.qcow2").exists()
        await pilot.press("ctrl+s")  # then the job
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        job = newest(app)
        assert (job.kind, job.state) == ("copy", JobState.DONE)
        assert image_info(pool / "disk-copy.qcow2")["format"] == "raw"
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw",
                               str(src), str(pool / "disk-copy.qcow2")]).returncode == 0
        t = table(app)
        assert t.current is not None and t.current.name == "disk-copy.qcow2"
        # The same again: the name is taken, and the dialog says so before any job.
        t.select_name("disk.qcow2")
        await pilot.press("y")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "disk-copy.qcow2"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        error = str(app.screen.query_one("#error", Static).render())
        assert "already exists" in error and "overwrite" in error
        assert isinstance(app.screen, CopyVolumeScreen) and app.screen.plan is None
        assert len(panel(app).rows) == 1


async def test_copy_dialog_strategy_performance_preallocates(
        pool: Path, tmp_path: Path, make_image: MakeImage) -> None:
    src = make_image(pool / "disk.raw", "raw", "16M")
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 1M", str(src)],
                   check=True, capture_output=True)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("y")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, CopyVolumeScreen)
        dialog.query_one("#strategy", Select).value = "performance"
        await pilot.press("ctrl+s")  # the plan first
        await until(pilot, lambda: dialog.plan is not None)
        plan = plan_words(dialog)
        assert "preallocation=falloc" in plan and "preallocated" in plan
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        job = newest(app)
        assert (job.kind, job.state, job.params["strategy"]) == (
            "copy", JobState.DONE, "performance")
        copy = pool / "disk-copy.raw"
        assert os.stat(copy).st_blocks * 512 >= 16 << 20  # every byte allocated
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                               str(src), str(copy)]).returncode == 0


async def test_resize_shows_the_command_then_resizes(pool: Path, tmp_path: Path,
                                                     make_image: MakeImage) -> None:
    make_image(pool / "disk.qcow2", "qcow2", "16M")
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ResizeVolumeScreen)
        dialog.query_one("#size", Input).value = "8M"  # smaller, shrink not ticked
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        error = str(dialog.query_one("#error", Static).render())
        assert "smaller" in error and "shrink" in error and dialog.plan is None
        dialog.query_one("#size", Input).value = "+16M"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: dialog.plan is not None)
        plan = plan_words(dialog)
        assert f"qemu-img resize -f qcow2 -- {pool.resolve() / 'disk.qcow2'} 33554432" in plan
        assert "reserves nothing" in plan and "32M (33554432 bytes), from 16M" in plan
        dialog.query_one("#shrink", Checkbox).value = True  # an edit: a new plan is needed
        await pilot.pause()
        assert dialog.plan is None
        dialog.query_one("#shrink", Checkbox).value = False
        await pilot.press("ctrl+s")
        await until(pilot, lambda: dialog.plan is not None)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert newest(app).state == JobState.DONE
        assert image_info(pool / "disk.qcow2")["virtual-size"] == 32 << 20
        t = table(app)
        assert t.current is not None and t.current.capacity == 32 << 20


async def test_interrupted_job_is_offered_and_resumed(pool: Path, tmp_path: Path,
                                                      make_image: MakeImage) -> None:
    src = make_image(pool / "src.raw", "raw", "2M")
    name = str(pool.resolve())
    j = Journal(journal_path())
    job = j.submit("copy", {"host": "local", "pool": name, "volume": "src.raw",
                            "dest_pool": name, "dest_name": "dst.raw", "format": None,
                            "overwrite": False}, "local", name, "src.raw")
    j.start(job.id, 3)
    j.remember(job.id, temp=temp_name(job.id, "dst.raw"), temp_pool=name)
    (pool / temp_name(job.id, "dst.raw")).write_bytes(b"partial")
    with j.transaction() as conn:  # its process died
        conn.execute("UPDATE jobs SET owner=? WHERE id=?",
                     (f"{socket.gethostname()}:999999999:0", job.id))
    noted: list[str] = []

    class Recording(StorageConsoleApp):
        def notify(self, message: str, **kwargs: Any) -> None:
            noted.append(f"{kwargs.get('title')}: {message}")
            super().notify(message, **kwargs)

    app = console(pool, tmp_path, app_class=Recording)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: panel(app).rows)
        assert newest(app).state == JobState.INTERRUPTED and panel(app).display
        assert any(f"job {job.id} was interrupted" in n and "R resumes" in n for n in noted)
        await pilot.press("J", "R")
        await settle(app, pilot)
        assert newest(app).state == JobState.DONE
        assert leftovers(pool) == []
        assert (pool / "dst.raw").read_bytes() == src.read_bytes()
        assert table(app).row_count == 2


async def test_read_only_offers_no_job_actions(pool: Path, tmp_path: Path,
                                               make_image: MakeImage) -> None:
    make_image(pool / "keep.qcow2", "qcow2", "1M")
    app = console(pool, tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key in ("e", "y", "c", "d", "n", "l", "a", "u", "f"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, MainScreen), key
        text = screen_text(app)
        assert "Resize" not in text and "Copy" not in text and "J Jobs" in text
        names = [c.name for c in main(app).palette_commands()]
        assert not any(n.startswith(("Resize", "Copy", "Create", "Delete", "Snapshot",
                                     "Clone", "Archive", "Restore", "Grow")) for n in names)
        assert "Audit log" in names  # reading it changes nothing
        await pilot.press("question_mark")
        await pilot.pause()
        words = " ".join(t for _, rows in app.screen.sections for _, t in rows)
        for action in ("Snapshot", "Clone", "Archive", "Restore", "Grow"):
            assert action not in words
        assert "Audit log" in words
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("J")
        await pilot.pause()
        assert app.focused is panel(app)
        for action in ("cancel_job", "resume_job", "rollback_job"):
            assert panel(app).check_action(action, ()) is False
        assert "Cancel job" not in screen_text(app)
    assert sorted(os.listdir(pool)) == ["keep.qcow2"]
    assert Journal(journal_path()).jobs() == []



def read_only_on_disk(path: Path) -> bool:
    return not path.stat().st_mode & 0o222


async def plan_then_submit(app: StorageConsoleApp, pilot: Any) -> str:
    """ctrl+s for the plan, then ctrl+s for the job; returns the plan's words."""
    dialog = app.screen
    assert isinstance(dialog, PlanDialog)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: dialog.plan is not None or dialog.query_one("#error").display)
    assert dialog.plan is not None, str(dialog.query_one("#error", Static).render())
    words = plan_words(dialog)
    await pilot.press("ctrl+s")
    await settle(app, pilot)
    assert isinstance(app.screen, MainScreen)
    return words


async def test_snapshot_then_clone_it(pool: Path, tmp_path: Path,
                                      make_image: MakeImage) -> None:
    disk = make_image(pool / "disk.raw", "raw", "4M")
    disk.write_bytes(b"\x42" * (1 << 20) + bytes(3 << 20))
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")  # a disk: nothing to clone
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        names = [c.name for c in main(app).palette_commands()]
        for offered in ("Snapshot volume disk.raw", "Archive volume disk.raw",
                        "Restore an archive", "Grow the file system in disk.raw",
                        "Audit log"):
            assert offered in names
        assert not any(n.startswith("Clone") for n in names)
        await pilot.press("n")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, SnapshotVolumeScreen)
        dialog.query_one("#name", Input).value = "disk.snap1"
        plan = await plan_then_submit(app, pilot)
        assert "ln -- " in plan and "chmod a-w" in plan and "reserves" in plan
        assert "becomes a qcow2 overlay" in plan  # a raw disk: the plan says so
        job = newest(app)
        assert (job.kind, job.state) == ("snapshot", JobState.DONE)
        assert read_only_on_disk(pool / "disk.snap1")
        info = image_info(pool / "disk.raw")  # the disk keeps its name, now an overlay
        assert info["format"] == "qcow2" and info["backing-filename"] == "disk.snap1"
        t = table(app)
        assert t.current is not None and t.current.name == "disk.raw"
        t.select_name("disk.snap1")
        await pilot.pause()
        assert t.current is not None and t.current.readonly
        await pilot.press("n")  # a snapshot is not snapshotted again
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert "Clone snapshot disk.snap1" in [c.name for c in main(app).palette_commands()]
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, CloneVolumeScreen)
        assert app.screen.query_one("#name", Input).value == "disk-clone.snap1"
        app.screen.query_one("#name", Input).value = "clone.qcow2"
        plan = await plan_then_submit(app, pilot)
        assert "qemu-img create" in plan and "-F raw" in plan
        assert newest(app).state == JobState.DONE
        info = image_info(pool / "clone.qcow2")
        assert info["format"] == "qcow2" and info["backing-filename"] == "disk.snap1"
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw",
                               str(pool / "clone.qcow2"), str(pool / "disk.snap1")]
                              ).returncode == 0
        t = table(app)
        assert t.current is not None and t.current.name == "clone.qcow2"


async def test_delete_with_wipe(pool: Path, tmp_path: Path) -> None:
    (pool / "data.raw").write_bytes(b"secret" * 4096)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await settle(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, DeleteVolumeScreen)
        assert dialog.query_one("#wipe", Select).display
        dialog.query_one("#wipe", Select).value = "zero"
        dialog.query_one("#confirm", Input).value = "data.raw"
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        job = newest(app)
        assert (job.kind, job.state, job.params["wipe"]) == ("delete", JobState.DONE, "zero")
        assert not (pool / "data.raw").exists() and table(app).row_count == 0


async def test_delete_with_its_dependants(pool: Path, tmp_path: Path) -> None:
    for name, backing in (("a-base.qcow2", None), ("b-mid.qcow2", "a-base.qcow2"),
                          ("c-leaf.qcow2", "b-mid.qcow2"), ("other.qcow2", None)):
        args = ["-b", backing, "-F", "qcow2"] if backing else []
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(pool / name),
                        "1M"], check=True, capture_output=True)
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert table(app).current is not None and table(app).current.name == "a-base.qcow2"
        await pilot.press("d")
        await settle(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, DeleteVolumeScreen)
        listed = str(dialog.query_one("#dependants", Static).render())
        assert listed.index("c-leaf.qcow2") < listed.index("b-mid.qcow2")  # leaves first
        assert not dialog.query_one("#delete", Button).display
        await pilot.press("space")  # tick "also delete the 2 volumes based on it"
        await settle(app, pilot)
        assert dialog.plan is not None and dialog.plan.with_dependants
        assert [v.name for v in dialog.plan.order] == ["c-leaf.qcow2", "b-mid.qcow2",
                                                       "a-base.qcow2"]
        assert "hold no data" in str(dialog.query_one("#question", Static).render())
        assert dialog.query_one("#delete", Button).display
        await pilot.press("y")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert newest(app).state == JobState.DONE
        assert sorted(n for n in os.listdir(pool) if not n.startswith(".")) == ["other.qcow2"]
        assert table(app).row_count == 1


async def test_archive_then_restore(pool: Path, tmp_path: Path,
                                    make_image: MakeImage) -> None:
    disk = make_image(pool / "disk.qcow2", "qcow2", "8M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 1M 2M", str(disk)],
                   check=True, capture_output=True)
    backup = tmp_path / "backup"
    backup.mkdir()
    archive = backup / "disk.qcow2.zst"
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")  # growfs: raw volumes only
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await pilot.press("a")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ArchiveVolumeScreen)
        from console.config import archive_dir
        assert dialog.query_one("#dest", Input).value == f"{archive_dir()}/disk.qcow2.zst"
        dialog.query_one("#dest", Input).value = str(archive)
        dialog.query_one("#level", Input).value = "30"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "level" in str(dialog.query_one("#error", Static).render())
        dialog.query_one("#level", Input).value = "3"
        plan = await plan_then_submit(app, pilot)
        assert "zstd -q -3" in plan and "-O raw" in plan and ".json" in plan
        assert newest(app).state == JobState.DONE
        assert archive.exists() and (backup / "disk.qcow2.zst.json").exists()
        await pilot.press("u")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, RestoreVolumeScreen)
        dialog.query_one("#archive", Input).value = str(archive)
        await pilot.pause()
        assert dialog.query_one("#name", Input).value == "disk.qcow2"  # taken
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert "already exists" in str(dialog.query_one("#error", Static).render())
        dialog.query_one("#name", Input).value = "back.qcow2"
        dialog.query_one("#format", Select).value = "qcow2"
        plan = await plan_then_submit(app, pilot)
        assert "zstd" in plan and "-O qcow2" in plan
        assert newest(app).state == JobState.DONE
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2",
                               str(disk), str(pool / "back.qcow2")]).returncode == 0
        t = table(app)
        assert t.current is not None and t.current.name == "back.qcow2"


async def test_growfs_confirms_with_the_plan(pool: Path, tmp_path: Path,
                                             make_image: MakeImage) -> None:
    make_image(pool / "disk.raw", "raw", "4M")
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, GrowFilesystemScreen)
        await until(pilot, lambda: dialog.plan is not None)  # read at once: no fields
        plan = plan_words(dialog)
        assert "e2fsck" in plan and "resize2fs" in plan
        assert app.focused is dialog.query_one("#primary", Button)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and panel(app).rows == []


async def test_audit_log_lists_the_commands_a_create_ran(pool: Path,
                                                         tmp_path: Path) -> None:
    app = console(pool, tmp_path, audit=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "new.qcow2"
        app.screen.query_one("#size", Input).value = "1M"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert newest(app).state == JobState.DONE
        await pilot.press("A")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await until(pilot, lambda: screen.entries is not None)
        assert screen.entries
        newest_first = [e.id for e in screen.entries]
        assert newest_first == sorted(newest_first, reverse=True)
        text = screen_text(app)
        assert "qemu-img create" in text and "-f qcow2" in text and " ok " in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_create_preallocated(pool: Path, tmp_path: Path) -> None:
    app = console(pool, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await pilot.pause()
        dialog = app.screen
        assert dialog.query_one("#zero", Checkbox).disabled  # sparse: nothing to zero
        dialog.query_one("#name", Input).value = "full.raw"
        dialog.query_one("#format", Select).value = "raw"
        dialog.query_one("#size", Input).value = "4M"
        dialog.query_one("#preallocation", Select).value = "falloc"
        await pilot.pause()
        zero = dialog.query_one("#zero", Checkbox)
        assert not zero.disabled
        zero.value = True
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        job = newest(app)
        assert (job.state, job.params["preallocation"], job.params["zero"]) == \
            (JobState.DONE, "falloc", True)
        assert (pool / "full.raw").stat().st_blocks * 512 >= 4 << 20
