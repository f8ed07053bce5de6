"""SVG snapshots of the console (pytest-textual-snapshot), stored in snapshots/.

Deterministic: the demo cache has fixed ``last_seen`` times, the clock is fixed, nothing
refreshes from disk, cursors do not blink and the theme is fixed. Regenerate with
``pytest tests/test_snapshots.py --snapshot-update`` and look at the SVGs before
committing them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pytest_textual_snapshot import SVGImageExtension
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation

from backends.model import Pool
from console.checks import CheckReport
from console.fixes import Finding, Fix, FixType, Risk, Severity
from console.inventory import Inventory
from console.jobs.runner import Runner
from console.ui.app import StorageConsoleApp
from tests.conftest_ui import (
    JOB_ROWS,
    chain_inventory,
    clock,
    demo_inventory,
    demo_journal,
    long_path_inventory,
    runner_for,
)

SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"

SnapCompare = Callable[..., bool]


class SnapshotsDirSVG(SVGImageExtension):
    """The plugin's SVG extension, writing to snapshots/test_snapshots/ (one directory per
    test module, as syrupy expects) instead of tests/__snapshots__/."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOTS / test_location.basename)


class SnapshotsDirAssertion(SnapshotAssertion):
    def use_extension(self, extension_class: Any = None) -> SnapshotAssertion:
        if extension_class is SVGImageExtension:
            extension_class = SnapshotsDirSVG
        return super().use_extension(extension_class)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """``snap_compare`` swaps in its SVG extension; this makes it ours."""
    return SnapshotsDirAssertion(
        update_snapshots=snapshot.update_snapshots,
        extension_class=snapshot.extension_class,
        test_location=snapshot.test_location,
        session=snapshot.session,
    )


def demo_app(**kwargs: Any) -> StorageConsoleApp:
    inventory = demo_inventory()
    return StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                             clock=clock, theme="storage-dark", cursor_blink=False, **kwargs)


def test_main_80x24(snap_compare: SnapCompare) -> None:
    """The main screen in a plain 80x24 terminal, cursor on a broken volume."""
    assert snap_compare(demo_app(), press=["j"] * 5, terminal_size=(80, 24))


def test_long_pool_path_80x24(snap_compare: SnapCompare) -> None:
    """A pool named by a long path: the summary cuts the path in its middle."""
    inventory = long_path_inventory()
    app = StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                            clock=clock, theme="storage-dark", cursor_blink=False)
    assert snap_compare(app, terminal_size=(80, 24))


def test_main_120x40(snap_compare: SnapCompare) -> None:
    """The main screen at 120x40 with a five-image chain in the detail pane."""
    assert snap_compare(demo_app(), press=["j", "j"], terminal_size=(120, 40))


def test_help(snap_compare: SnapCompare) -> None:
    """The help modal, listing the bindings."""
    assert snap_compare(demo_app(), press=["question_mark"], terminal_size=(100, 40))


def test_create_dialog(snap_compare: SnapCompare) -> None:
    """The create dialog after an invalid size: inline error, input kept."""
    keys = ["c", *"new.qcow2", "tab", "tab", *"12 parsecs", "enter"]
    assert snap_compare(demo_app(), press=keys, terminal_size=(80, 24))


def test_main_read_only_light(snap_compare: SnapCompare) -> None:
    """Read-only in the light theme: no create/delete in the footer, title says so."""
    inventory = demo_inventory(read_only=True)
    app = StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                            clock=clock, theme="storage-light", cursor_blink=False,
                            select=("backup", "archive"))
    assert snap_compare(app, terminal_size=(100, 30))


def test_delete_dialog_when_the_volume_is_gone(snap_compare: SnapCompare) -> None:
    """Delete re-reads the volume from disk first; the demo's files do not exist, so the
    dialog (red: it destroys) says so, naming host, pool and volume."""

    async def plan_done(pilot: Any) -> None:
        await pilot.app.workers.wait_for_complete(
            [w for w in pilot.app.workers if w.group == "delete"])
        await pilot.pause()

    assert snap_compare(demo_app(), press=["j", "d"], run_before=plan_done,
                        terminal_size=(80, 24))


def jobs_app() -> StorageConsoleApp:
    """The demo data and a journal of fixed jobs, one in each state."""
    inventory = demo_inventory()
    return StorageConsoleApp(inventory, runner=Runner(demo_journal(), inventory),
                             refresh_on_start=False, clock=clock, theme="storage-dark",
                             cursor_blink=False)


async def jobs_read(pilot: Any) -> None:
    screen = pilot.app.main_screen
    while len(screen.jobs_panel.rows) < len(JOB_ROWS):
        await pilot.pause(0.02)
    await pilot.pause()


def test_jobs_panel_80x24(snap_compare: SnapCompare) -> None:
    """The jobs panel shows itself while jobs run: four lines at 80x24, newest first."""
    assert snap_compare(jobs_app(), run_before=jobs_read, terminal_size=(80, 24))


def test_jobs_panel_120x40(snap_compare: SnapCompare) -> None:
    """Focused (J) with the cursor on the interrupted copy: every job, its keys below."""

    async def focus_interrupted(pilot: Any) -> None:
        await jobs_read(pilot)
        await pilot.press("J", "j")
        await pilot.pause()

    assert snap_compare(jobs_app(), run_before=focus_interrupted, terminal_size=(120, 40))


def test_job_output_in_the_table(snap_compare: SnapCompare) -> None:
    """The iso pool while job 8 copies into it: the copy's name pinned under the header,
    marked ⟳ with the job and its percent, above the pool's volumes."""

    async def open_iso(pilot: Any) -> None:
        await jobs_read(pilot)
        pilot.app.main_screen.open_pool("local", "iso")
        await pilot.pause()

    assert snap_compare(jobs_app(), run_before=open_iso, terminal_size=(100, 30))


def test_archive_dialog(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive dialog on a raw volume: a file in the archives directory by default
    (away from the pool it backs up), the zstd level, overwrite; the plan comes with the
    first Enter."""
    monkeypatch.setenv("XDG_DATA_HOME", "/home/admin/.local/share")  # a fixed path
    assert snap_compare(demo_app(), press=["j", "a"], terminal_size=(80, 24))


async def chains_built(pilot: Any) -> None:
    """Wait for the chain view's forest (built in a thread) and its paint."""
    app = pilot.app
    for _ in range(2):
        await pilot.pause()
        busy = [w for w in app.workers if w.group.startswith("chains")]
        if busy:
            await app.workers.wait_for_complete(busy)
    await pilot.pause()


def test_chains_100x30(snap_compare: SnapCompare) -> None:
    """The chain view (C) at 100x30: a chain of 3 across pools, a missing backing, links
    no pool lists, an unreferenced snapshot, another host's volumes."""
    inventory = chain_inventory()
    app = StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                            clock=clock, theme="storage-dark", cursor_blink=False)
    assert snap_compare(app, press=["C"], run_before=chains_built, terminal_size=(100, 30))


def fixed_report(inventory: Inventory, pools: Sequence[Pool], **_: Any) -> CheckReport:
    """A check's answer for the demo pools (their directories do not exist): a corrupt
    image (high risk), leaked clusters, a deep chain, an unreferenced snapshot, and a
    finding no fix answers."""
    def finding(volume: str, severity: Severity, code: str, reason: str) -> Finding:
        return Finding("local", "images", volume, severity, code, reason)

    def fix(volume: str, kind: FixType, code: str, space: int, risk: Risk,
            command: tuple[str, ...]) -> Fix:
        return Fix(kind, "local", "images", volume, code, f"fix {code}", space, risk,
                   (command,), {"name": volume}, needs_confirmation=risk == Risk.HIGH)

    g = 1 << 30
    findings = [
        finding("db01.qcow2", Severity.BROKEN, "corruption", "2 corruptions: refcount of "
                "cluster 0 is 0"),
        finding("web01.qcow2", Severity.DEGRADED, "leaked-clusters", "12 leaked clusters "
                "(768K)"),
        finding("deep-3.qcow2", Severity.DEGRADED, "chain-too-deep", "chain of 4 images"),
        finding("db01-before-upgrade.qcow2", Severity.INFO, "unreferenced-snapshot",
                "snapshot nothing is based on, 40 days old"),
        finding("web02.qcow2", Severity.INFO, "possibly-inconsistent", "in use: read "
                "with force-share"),
    ]
    fixes = [
        fix("db01.qcow2", FixType.MEND, "corruption", 2 * g, Risk.HIGH,
            ("qemu-img", "check", "-r", "all", "/srv/images/db01.qcow2")),
        fix("web01.qcow2", FixType.CLEAN, "leaked-clusters", -768 << 10, Risk.LOW,
            ("qemu-img", "check", "-r", "leaks", "/srv/images/web01.qcow2")),
        fix("deep-3.qcow2", FixType.OPTIMIZE, "chain-too-deep", 3 * g // 2, Risk.MEDIUM,
            ("qemu-img", "convert", "/srv/images/deep-3.qcow2")),
        fix("db01-before-upgrade.qcow2", FixType.CLEAN, "unreferenced-snapshot", -2 * g,
            Risk.LOW, ("rm", "/srv/images/db01-before-upgrade.qcow2")),
    ]
    return CheckReport(findings=findings, fixes=fixes)


async def fixes_marked(pilot: Any) -> None:
    """Open F, wait for its check, mark the leaked clusters and the snapshot."""
    app = pilot.app
    await pilot.press("F")
    for _ in range(2):
        await pilot.pause()
        busy = [w for w in app.workers if w.group.startswith("fixes")]
        if busy:
            await app.workers.wait_for_complete(busy)
    await pilot.pause()
    await pilot.press("down", "space", "down", "space")
    await pilot.pause()


def test_fixes_100x30(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixes screen (F) at 100x30: findings by severity then type, two marked, the
    combined space effect in the status line."""
    monkeypatch.setattr("console.ui.screens.fixes.check_pools", fixed_report)
    assert snap_compare(demo_app(), run_before=fixes_marked, terminal_size=(100, 30))


def monitor_app(inventory: Inventory) -> StorageConsoleApp:
    return StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                             clock=clock, theme="storage-dark", cursor_blink=False,
                             monitor=True, refresh_every=30)


async def monitor_polled(pilot: Any) -> None:
    import asyncio

    from console.ui.widgets.monitor_panel import MonitorPanel

    panel = pilot.app.screen.query_one(MonitorPanel)
    for _ in range(400):
        if panel.polls:
            break
        await asyncio.sleep(0.01)
    # The poll's notifications are messages to the app: let them arrive, then clear
    # them (the toasts would hide the events log).
    await pilot.pause()
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The events log shows local times: the snapshots are taken in UTC."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def test_monitor_80x24(snap_compare: SnapCompare, utc: None) -> None:
    """The read-only monitor at 80x24: one pool critical, one warning, in the alerts
    panel, the events log and notifications."""
    import dataclasses

    from console.config import Thresholds
    from tests.conftest_ui import demo_cache, demo_config

    config = dataclasses.replace(demo_config(), thresholds=Thresholds(0.5, 0.58))
    inventory = Inventory(config, demo_cache(), read_only=True)
    assert snap_compare(monitor_app(inventory), run_before=monitor_polled,
                        terminal_size=(80, 24))


def test_usage_history_120x40(snap_compare: SnapCompare, utc: None) -> None:
    """The images pool's usage over a week of refreshes, growing: the sparkline and the
    "full in N days" estimate in its detail."""
    from backends.model import Capacity
    from tests.conftest_ui import IMAGES, NOW, fill, images_volumes

    inventory = demo_inventory(read_only=True)
    g = 1 << 30
    for day, used in enumerate((250, 262, 270, 281, 279, 290, 300, 310)):
        fill(inventory.cache, IMAGES, images_volumes(),
             capacity=Capacity(900 * g, used * g, (900 - used) * g, 700 * g),
             seen_at=NOW - 90 - (7 - day) * 86400)
    assert snap_compare(monitor_app(inventory), run_before=monitor_polled,
                        terminal_size=(120, 40))


def test_bulk_delete_plan_100x30(snap_compare: SnapCompare) -> None:
    """A plan for deleting four marked volumes: two jobs (one holding data), two refused
    with why, and the space they free (a fixed plan: the demo's files do not exist)."""
    from console.bulk import BulkPlan, PlannedJob, PoolEffect, Refusal
    from console.jobs.operations import DeleteVolume
    from console.ui.screens.bulk import BulkPlanScreen

    M = 1 << 20
    plan = BulkPlan("delete", (
        PlannedJob(DeleteVolume("local", "images", "web01.qcow2", typed_name="web01.qcow2"),
                   0, (), (("local", "images", -812 * M),)),
        PlannedJob(DeleteVolume("local", "images", "web02.qcow2"), 0, (),
                   (("local", "images", -640 * M),)),
    ), (
        Refusal("local", "images", "base-debian12.qcow2",
                "1 volume(s) are based on it and not marked (deep.qcow2): mark them too, "
                "or flatten them first"),
        Refusal("local", "images", "db01.raw",
                "in use by a running QEMU (its file lock): stop the VM (or qemu-nbd) first"),
    ), (PoolEffect("local", "images", -1452 * M, 590 << 30, 0),))

    async def show_plan(pilot: Any) -> None:
        await pilot.press("space", "space", "space", "space")  # the first four by name
        screen = pilot.app.screen
        marks = list(screen.volume_table.marks)
        pilot.app.push_screen(BulkPlanScreen(screen.inventory, screen.runner, "delete",
                                             marks, plan=plan, cursor_blink=False))
        await pilot.pause()

    assert snap_compare(demo_app(), run_before=show_plan, terminal_size=(100, 30))


def test_bulk_fix_plan_100x30(snap_compare: SnapCompare) -> None:
    """A plan for the fixes of three marked volumes: one low-risk fix queued, a medium
    one held for review one by one, a healthy volume, and the space effect (fixed)."""
    from console.bulk import BulkPlan, PlannedJob, PoolEffect, Refusal
    from console.jobs.fixing import RunFix
    from console.ui.screens.bulk import BulkPlanScreen

    M = 1 << 20
    plan = BulkPlan("fix", (
        PlannedJob(RunFix("local", "images", "web01.qcow2", fix_type="clean",
                          code="leaked-clusters", fix_params={"name": "web01.qcow2"}),
                   0, (), (("local", "images", -3 * M),)),
    ), (), (PoolEffect("local", "images", -3 * M, 590 << 30, 0),), held=(
        Refusal("local", "images", "deep.qcow2",
                "chain-too-deep: the chain is 9 deep (more than 8) — medium risk "
                "(optimize): review it on its own in the fixes screen (F)"),
        Refusal("local", "images", "web02.qcow2", "nothing to fix"),
    ))

    async def show_plan(pilot: Any) -> None:
        await pilot.press("space", "space", "space")
        screen = pilot.app.screen
        marks = list(screen.volume_table.marks)
        pilot.app.push_screen(BulkPlanScreen(screen.inventory, screen.runner, "fix",
                                             marks, plan=plan, cursor_blink=False))
        await pilot.pause()

    assert snap_compare(demo_app(), run_before=show_plan, terminal_size=(100, 30))


@pytest.mark.parametrize("theme", ["storage-dark", "storage-light", "storage-high-contrast",
                                   "storage-mono"])
def test_theme(snap_compare: SnapCompare, theme: str) -> None:
    """Each theme on the main screen at 100x30, the cursor on the broken volume and the
    jobs panel shown: health, snapshot, cursor, stale and failed jobs must stay apart."""

    async def cursor_on_broken(pilot: Any) -> None:
        await jobs_read(pilot)
        await pilot.press(*["j"] * 5)
        await pilot.pause()

    inventory = demo_inventory()
    app = StorageConsoleApp(inventory, runner=Runner(demo_journal(), inventory),
                            refresh_on_start=False, clock=clock, theme=theme,
                            cursor_blink=False)
    assert snap_compare(app, run_before=cursor_on_broken, terminal_size=(100, 30))


def test_marks_across_hosts_80x24(snap_compare: SnapCompare) -> None:
    """Marks spanning two pools on two hosts at 80x24: marked rows stand out, and the bar
    gives the count, the places and the total size whichever pool is shown."""

    async def mark_in_two_places(pilot: Any) -> None:
        await pilot.press("space", "j", "space")  # two volumes of local:images
        await pilot.press("colon", *"pool backup:archive", "enter")
        await pilot.pause()
        await pilot.press("space", "space")  # two archives of the backup host
        await pilot.pause()

    assert snap_compare(demo_app(), run_before=mark_in_two_places, terminal_size=(80, 24))


def test_bulk_check_summary_100x30(snap_compare: SnapCompare,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """K on four marks, confirmed: each checked volume's health with its reasons, what
    could not be checked, and the summary line (a fixed plan and report: the demo's
    files do not exist)."""
    from backends.model import Health, HealthState
    from console.bulk import BulkPlan, Refusal
    from console.checks import VolumeCheck
    from tests.conftest_ui import IMAGES, volume

    keys = tuple(("local", "images", n) for n in ("base-debian12.qcow2", "db01.raw",
                                                 "deep-3.qcow2"))
    plan = BulkPlan("check", (), (Refusal("local", "images", "web01.qcow2",
                                          "no longer on disk (refresh with r)"),), (),
                    checks=keys)
    report = CheckReport(volumes=[
        VolumeCheck(volume(IMAGES, "base-debian12.qcow2"), Health(HealthState.OPTIMIZED)),
        VolumeCheck(volume(IMAGES, "deep-3.qcow2"), Health(
            HealthState.DEGRADED, ("chain of 4 images (more than 3 slows reads)",))),
    ], fixes=[Fix(FixType.OPTIMIZE, "local", "images", "deep-3.qcow2", "chain-too-deep",
                  "flatten the chain", 1 << 30, Risk.MEDIUM, (), {"name": "deep-3.qcow2"})],
        errors=["local › images › db01.raw: qemu-img check failed: Could not open "
                "'/srv/images/db01.raw': Permission denied"])
    monkeypatch.setattr("console.ui.screens.bulk.plan_bulk", lambda *a, **k: plan)
    monkeypatch.setattr("console.ui.screens.bulk.check_marked", lambda *a, **k: report)

    async def checked(pilot: Any) -> None:
        app = pilot.app
        await pilot.press("space", "space", "space", "space", "K")
        for key in ("", "y"):  # the plan, then the check once confirmed
            if key:
                await pilot.press(key)
            for _ in range(2):
                await pilot.pause()
                busy = [w for w in app.workers if w.group.startswith("bulk")]
                if busy:
                    await app.workers.wait_for_complete(busy)
        await pilot.pause()

    assert snap_compare(demo_app(), run_before=checked, terminal_size=(100, 30))
