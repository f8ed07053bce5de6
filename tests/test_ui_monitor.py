"""Pilot tests of the read-only monitor: a pool crossing its threshold on a real small
file system raises one alert (and one notification), a job of another console shows in
the events log, the usage history is drawn after a few refreshes, and nothing can be
changed (the runner itself refuses)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Sparkline

from backends.contract import ReadOnlyViolation
from console.cache import Cache
from console.cli import MONITOR_REFRESH, build_parser, watching
from console.config import Config, Thresholds, journal_path
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.operations import CreateVolume
from console.monitoring import Event
from console.ui.app import StorageConsoleApp
from console.ui.screens.create_volume import CreateVolumeScreen
from console.ui.screens.help import binding_sections
from console.ui.widgets.alerts_panel import AlertsPanel
from console.ui.widgets.events_log import EventsLog
from console.ui.widgets.monitor_panel import MonitorPanel
from console.ui.widgets.usage_history import UsageHistory
from tests.conftest_ui import runner_for
from tests.test_ui import screen_text
from tests.test_ui_hosts import wait_for

SIZE = (80, 24)
M = 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: its use is exactly what the test writes (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def monitor_inventory(pool: Path, cache: Path, limits: Thresholds) -> Inventory:
    config = dataclasses.replace(Config.for_targets([str(pool)]), thresholds=limits)
    return Inventory(config, Cache(cache), read_only=True)


def monitor_app(inventory: Inventory, **kwargs: Any) -> StorageConsoleApp:
    return StorageConsoleApp(inventory, runner=runner_for(inventory), monitor=True,
                             cursor_blink=False, **kwargs)


def fill_to(pool: Path, mib: int) -> None:
    with open(pool / "data.raw", "wb") as f:
        f.write(b"\1" * (mib * M))
        os.fsync(f.fileno())


def panel(app: StorageConsoleApp) -> MonitorPanel:
    return app.screen.query_one(MonitorPanel)


async def test_an_alert_once_per_crossing_on_a_small_file_system(
        small_fs: Path, tmp_path: Path) -> None:
    inventory = monitor_inventory(small_fs, tmp_path / "cache.db",
                                  Thresholds(warning=0.5, critical=0.9))
    app = monitor_app(inventory, refresh_every=0.3)
    notes: list[tuple[str, str]] = []
    notify = app.notify

    def recording(message: str, **kwargs: Any) -> None:
        notes.append((kwargs.get("title", ""), message))
        notify(message, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        alerts = app.screen.query_one(AlertsPanel)
        await wait_for(pilot, lambda: panel(app).polls >= 1 and inventory.cache.pools())
        assert alerts.alerts == []
        fill_to(small_fs, 10)  # 10 of 16 MiB: above the warning threshold of 50%
        await wait_for(pilot, lambda: alerts.alerts)
        [alert] = alerts.alerts
        assert (alert.pool, str(alert.level)) == (str(small_fs), "warning")
        assert "WARNING" in screen_text(app) and "Alerts (1)" in screen_text(app)
        refreshes = len(inventory.cache.usage_history("local", str(small_fs)))
        await wait_for(pilot, lambda: len(inventory.cache.usage_history(
            "local", str(small_fs))) >= refreshes + 3)  # still above, refreshed again
        await pilot.pause()
        raised = [n for n in notes if n[0].endswith(": warning")]
        assert len(raised) == 1 and "at or above the warning threshold of 50%" in raised[0][1]
        (small_fs / "data.raw").unlink()
        await wait_for(pilot, lambda: not alerts.alerts)
        assert [n[0] for n in notes if n[0].startswith("pool ")] == \
            [f"pool {small_fs}: warning", f"pool {small_fs}: ok"]
        events = app.screen.query_one(EventsLog).events
        assert [e.kind for e in events] == ["alert", "alert"]
        assert events[0].text == f"local:{small_fs} back below warning (0% used)"


async def test_a_job_of_another_console_goes_to_the_events_log(
        pool_dir: Path, tmp_path: Path) -> None:
    inventory = monitor_inventory(pool_dir, tmp_path / "cache.db", Thresholds())
    app = monitor_app(inventory, refresh_on_start=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: panel(app).polls >= 1)
        other = Journal(journal_path())  # another console's journal, the same file
        params = {"host": "local", "pool": str(pool_dir), "volume": "web.raw",
                  "format": "raw", "capacity": M, "backing": None}
        job = other.submit("create", params, "local", str(pool_dir), "web.raw",
                           who="alice@elsewhere")
        panel(app).poll_now()
        log = app.screen.query_one(EventsLog)
        await wait_for(pilot, lambda: any("started" in e.text for e in log.events))
        other.finish(job.id, JobState.DONE)
        panel(app).poll_now()
        await wait_for(pilot, lambda: log.events[0].text.endswith("done"))
        assert log.events[0].text.startswith(f"job {job.id} (")
        assert "by alice@elsewhere" in log.events[0].text
        await pilot.pause()
        assert f"job {job.id} (" in screen_text(app)


async def test_the_history_plot_shows_after_several_refreshes(
        small_fs: Path, tmp_path: Path) -> None:
    inventory = monitor_inventory(small_fs, tmp_path / "cache.db", Thresholds())
    app = monitor_app(inventory, refresh_every=0.3)
    async with app.run_test(size=SIZE) as pilot:
        history = app.screen.query_one(UsageHistory)
        assert not history.display or not history.has_class("-shown")
        for mib in (2, 4, 6):
            fill_to(small_fs, mib)
            count = len(inventory.cache.usage_history("local", str(small_fs)))
            await wait_for(pilot, lambda c=count: len(  # type: ignore[misc]
                inventory.cache.usage_history("local", str(small_fs))) > c)
        await wait_for(pilot, lambda: len(history.samples) >= 3)
        assert history.has_class("-shown")
        data = history.query_one(Sparkline).data
        assert data is not None and len(data) >= 3 and max(data) > min(data)
        assert "a trend after 1h" in screen_text(app)  # seconds of history: no estimate


async def test_monitor_mode_cannot_change_storage(pool_dir: Path, tmp_path: Path) -> None:
    args = build_parser(None).parse_args(["--monitor", str(pool_dir)])
    assert watching(args) == (True, MONITOR_REFRESH)
    assert watching(build_parser(None).parse_args(["--monitor", "--refresh", "5"])) == \
        (True, 5.0)
    assert watching(build_parser(None).parse_args(["--refresh", "5"])) == (False, 5.0)
    read_only, _ = watching(args)
    inventory = Inventory(Config.for_targets([str(pool_dir)]), Cache(tmp_path / "c.db"),
                          read_only=read_only)
    app = monitor_app(inventory, refresh_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")  # no create key in the monitor
        assert not isinstance(app.screen, CreateVolumeScreen)
        assert app.runner is not None
        # Below the keys: the runner refuses, and nothing reaches the journal or the disk.
        with pytest.raises(ReadOnlyViolation, match="read-only"):
            app.runner.submit(CreateVolume("local", str(pool_dir.resolve()), "new.raw",
                                           format="raw", capacity=M))
        assert app.runner.journal.jobs() == []
        assert list(pool_dir.iterdir()) == []
        assert "read-only monitor" in app.sub_title


def event_lines(app: StorageConsoleApp) -> list[str]:
    """The events log's lines on the screen, its title first."""
    log = app.screen.query_one(EventsLog)
    region = log.scrollable_content_region
    lines = screen_text(app).splitlines()[region.y:region.bottom]
    return [line[region.x:region.right].strip() for line in lines]


async def test_the_events_log_scrolls_by_keyboard_and_follows_new_events(
        pool_dir: Path, tmp_path: Path) -> None:
    app = monitor_app(monitor_inventory(pool_dir, tmp_path / "cache.db",
                                        Thresholds(0.8, 0.9)))
    async with app.run_test(size=SIZE) as pilot:
        log = app.screen.query_one(EventsLog)
        await wait_for(pilot, lambda: panel(app).polls >= 1)
        events = [Event(1_700_000_000.0 + i, "job", f"event {i:02d}") for i in range(20)]
        log.show(events[:10][::-1])  # newest first, as the monitor hands them over
        await pilot.pause()
        seen = event_lines(app)
        assert seen[0] == "Events" and seen[-1].endswith("event 09"), seen  # the newest

        for _ in range(8):  # tab reaches it: every pane is reachable by keyboard
            if app.focused is log:
                break
            await pilot.press("tab")
        assert app.focused is log
        assert "Events log (monitor, focused with tab)" in dict(
            binding_sections(app, app.screen))
        await pilot.press("k")  # one older: no longer following
        await pilot.pause()
        assert event_lines(app)[-1].endswith("event 08")
        log.show(events[:12][::-1])  # new events keep what the user reads in place
        await pilot.pause()
        assert event_lines(app)[-1].endswith("event 08")
        await pilot.press("g")
        await pilot.pause()
        assert event_lines(app)[1].endswith("event 00")
        await pilot.press("pagedown")
        await pilot.pause()
        page = len(event_lines(app)) - 1
        assert event_lines(app)[1].endswith(f"event {page:02d}")
        await pilot.press("up", "j", "j")
        await pilot.pause()
        assert event_lines(app)[1].endswith(f"event {page + 1:02d}")
        await pilot.press("G")  # the newest, and follow again
        await pilot.pause()
        assert event_lines(app)[-1].endswith("event 11")
        log.show(events[::-1])
        await pilot.pause()
        assert event_lines(app)[-1].endswith("event 19")
        await pilot.press("pageup", "home")
        await pilot.pause()
        assert event_lines(app)[1].endswith("event 00")
        await pilot.press("end")
        await pilot.pause()
        assert event_lines(app)[-1].endswith("event 19")


async def test_a_full_events_log_keeps_what_the_user_reads_in_place(
        pool_dir: Path, tmp_path: Path) -> None:
    """The log is bounded (EVENTS_KEPT): a new event drops the oldest. Scrolled up, the
    lines in sight do not creep upwards with every new one."""
    app = monitor_app(monitor_inventory(pool_dir, tmp_path / "cache.db",
                                        Thresholds(0.8, 0.9)))
    async with app.run_test(size=SIZE) as pilot:
        log = app.screen.query_one(EventsLog)
        await wait_for(pilot, lambda: panel(app).polls >= 1)
        events = [Event(1_700_000_000.0 + i, "job", f"event {i:02d}") for i in range(40)]
        kept = 20
        log.show(events[:kept][::-1])
        await pilot.pause()
        log.action_oldest()
        log.action_newer_page()  # reading in the middle
        await pilot.pause()
        reading = event_lines(app)[1:]
        assert not reading[0].endswith("event 00") and not log.following
        for n in range(kept + 1, kept + 4):  # three new events, three oldest dropped
            log.show(events[n - kept:n][::-1])
            await pilot.pause()
            assert event_lines(app)[1:] == reading
        log.show(events[-kept:][::-1])  # what was read has gone: the oldest left
        await pilot.pause()
        assert event_lines(app)[1].endswith(f"event {40 - kept:02d}")
