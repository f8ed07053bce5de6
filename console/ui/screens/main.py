"""The main screen: pools on the left; volumes, filter and details on the right; the
jobs panel at the bottom.

Paints from the cache at once, then refreshes from disk in a thread worker that posts
``PoolRefreshed`` per pool; the table re-queries in place, cursor on the same volume.

Create, delete, resize, copy, snapshot, clone, archive, restore and growfs are jobs of
the runner: each dialog closes once its job is in the journal. The runner's updates
(``JobUpdated``) and a thread that reads the journal about once a second while anything
runs (``JobsPolled``, only when something changed: jobs of other processes show up too)
feed the jobs panel; a job that ends gets its pools re-read from disk.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Header, Input
from textual.worker import get_current_worker

from backends.contract import Capabilities, StorageError
from backends.model import Pool
from console.cache import PoolRow, VolumeRow
from console.config import journal_path
from console.inventory import Inventory
from console.jobs.journal import ACTIVE, JobRecord, JobState
from console.jobs.operations import describe_job
from console.jobs.runner import Runner
from console.marks import Mark
from console.ui.cells import printable
from console.ui.commands import PaletteCommand
from console.ui.job_board import FIX_KIND, PANEL_LIMIT, Change, JobBoard, job_pools
from console.ui.messages import (
    JobActionFailed,
    JobsPolled,
    JobsRecovered,
    JobUpdated,
    PoolRefreshed,
    RefreshFinished,
    VolumeHighlighted,
)
from console.ui.screens.archive_volume import (
    ArchiveVolumeScreen,
    GrowFilesystemScreen,
    RestoreVolumeScreen,
)
from console.ui.screens.audit_log import AuditScreen
from console.ui.screens.bulk import BulkPlanScreen
from console.ui.screens.chains import ChainScreen, Target
from console.ui.screens.copy_volume import CopyVolumeScreen
from console.ui.screens.create_volume import CreateVolumeScreen
from console.ui.screens.delete_volume import DeleteVolumeScreen
from console.ui.screens.fixes import FixesScreen
from console.ui.screens.host_actions import HOST_ACTIONS, HostActions
from console.ui.screens.jumps import jump
from console.ui.screens.plan import VolumePlanDialog
from console.ui.screens.resize_volume import ResizeVolumeScreen
from console.ui.screens.snapshot_volume import CloneVolumeScreen, SnapshotVolumeScreen
from console.ui.widgets.command_bar import CommandBar
from console.ui.widgets.jobs_panel import JobsPanel
from console.ui.widgets.key_footer import KeyFooter
from console.ui.widgets.mark_bar import MarkBar
from console.ui.widgets.monitor_panel import MonitorPanel
from console.ui.widgets.pool_summary import PoolSummary
from console.ui.widgets.pool_tree import HostEntry, PoolEntry, PoolTree
from console.ui.widgets.usage_history import UsageHistory
from console.ui.widgets.volume_detail import VolumeDetail
from console.ui.widgets.volume_table import SORT_LABELS, VolumeTable

# Act on the marks when there are any (clone says why it does not).
BULK_KEYS = frozenset({"delete", "copy", "snapshot", "archive", "resize", "growfs",
                       "check", "fixes"})
AGE_TICK = 10.0  # seconds between repaints of the age column and pool states


class JobRead(Message):
    """One job as the journal has it after acting on it (cancel, roll back)."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__()
        self.job = job


class JobPoolsRefreshed(Message):
    """The pools of an ended job were re-read from disk (``errors``: those that failed)."""

    def __init__(self, job: JobRecord, pools: list[tuple[str, str]],
                 errors: list[str]) -> None:
        super().__init__()
        self.job = job
        self.pools = pools
        self.errors = errors


class MainScreen(HostActions):
    HELP_TITLE: ClassVar[str] = "Console"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("r", "refresh", "Refresh"),
        Binding("c", "create", "Create"),
        Binding("d,delete", "delete", "Delete"),
        Binding("e", "resize", "Resize"),
        Binding("y", "copy", "Copy"),
        Binding("n", "snapshot", "Snapshot", show=False),
        Binding("l", "clone", "Clone the snapshot", show=False),
        Binding("a", "archive", "Archive", show=False),
        Binding("u", "restore", "Restore an archive", show=False),
        Binding("f", "growfs", "Grow the file system", show=False),
        Binding("A", "audit", "Audit log", show=False),
        Binding("C", "chains", "Chains", show=False),
        Binding("D", "dependants", "What depends on this?", show=False),
        Binding("F", "fixes", "Fixes", show=False),
        Binding("K", "check", "Check the volume (or the marked ones)", show=False),
        Binding("J", "jobs", "Jobs"),
        Binding("s", "sort", "Sort", show=False),  # the header marks the sort column
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        # Before the filter. Not in the footer: at 80 columns it pushed `?` out of it;
        # the marks bar says "esc clears".
        Binding("escape", "clear_marks", "Clear marks", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("p", "focus_pools", "Focus pools", show=False),
        Binding("v", "focus_volumes", "Focus volumes", show=False),
        Binding("colon", "command_line", "Command line: jump", key_display=":", show=False),
    ]

    # Seconds between reads of the journal: while a job is active, and when all is idle.
    JOB_POLL_BUSY: ClassVar[float] = 1.0
    JOB_POLL_IDLE: ClassVar[float] = 3.0
    JOB_PAINT_HZ: ClassVar[float] = 4.0  # the runner's reports, painted together

    def __init__(self, inventory: Inventory, *, clock: Callable[[], float],
                 runner: Runner | None = None, select: tuple[str, str] | None = None,
                 refresh_on_start: bool = True, cursor_blink: bool = True,
                 monitor: bool = False, refresh_every: float | None = None) -> None:
        super().__init__()
        self.monitor = monitor  # the alerts and events strip, for watching
        self.refresh_every = refresh_every  # seconds between refreshes; None: on demand
        self.inventory = inventory
        self.runner = runner
        self.clock = clock
        self.initial = select
        self.refresh_on_start = refresh_on_start
        self.cursor_blink = cursor_blink
        self.current: PoolEntry | None = None
        self.current_host: str | None = None  # the cursor is on this host's node
        self.host_asked: dict[str, bool] = {}  # hosts this session has tried to reach
        self.watched: set[str] = set()  # hosts whose pool events come in
        self.nothing_selected = True
        self.board = JobBoard(started=time.time())
        self.jobs_hidden_by_user = False
        self.select_after: dict[int, tuple[str, str, str]] = {}  # job -> volume to select
        self.job_news: dict[int, JobRecord] = {}  # runner reports not painted yet

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield PoolTree(clock=self.clock, id="pools")
            with Vertical(id="right"):
                yield PoolSummary(clock=self.clock, id="summary")
                yield UsageHistory(self.inventory.cache, id="history")
                yield Input(placeholder="filter names (enter keeps, esc clears)", id="filter",
                            compact=True)
                yield VolumeTable(self.inventory.cache, clock=self.clock, id="volumes")
                yield MarkBar(id="marks")
                yield VolumeDetail(clock=self.clock, id="detail")
        if self.monitor:
            yield MonitorPanel(self.inventory.cache, self.inventory.config.pool_thresholds,
                               journal=self.runner.journal if self.runner else None,
                               clock=self.clock, id="monitor")
        yield JobsPanel(self.board, clock=self.clock, id="jobs",
                        can_act=self.runner is not None and not self.inventory.read_only)
        yield CommandBar(self.command_names, id="command-line")
        yield KeyFooter()

    @property
    def volume_table(self) -> VolumeTable:
        return self.query_one(VolumeTable)

    @property
    def pool_tree(self) -> PoolTree:
        return self.query_one(PoolTree)

    @property
    def jobs_panel(self) -> JobsPanel:
        return self.query_one(JobsPanel)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).cursor_blink = self.cursor_blink
        self.load_tree()
        keys = self.pool_tree.pool_keys()
        start = self.initial if self.initial in keys else (keys[0] if keys else None)
        if start is not None:
            self.pool_tree.select_pool(*start)
            self.open_pool(*start)
        else:
            self.volume_table.show_pool(None, None, empty_text="no pools configured")
            self.update_summary()
        self.volume_table.focus()
        self.set_interval(AGE_TICK, self.repaint_ages)
        if self.refresh_every:
            self.set_interval(self.refresh_every, self.action_refresh)
        if self.refresh_on_start:
            self.action_refresh()
        if self.runner is not None:
            self.watch_jobs()

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= 110, "-wide")
        self.query_one(KeyFooter).compact = event.size.width < 110  # more keys fit
        self.jobs_panel.set_max_lines(max(2, min(8, event.size.height // 5)))

    # -- data -----------------------------------------------------------------------

    def load_tree(self) -> None:
        cache = self.inventory.cache
        statuses = {h.name: self.inventory.host_status(h.name) for h in self.inventory.hosts()
                    if self.host_asked.get(h.name)}
        self.pool_tree.populate(self.inventory.hosts(), self.inventory.pools(), cache.pools(),
                                cache.hosts(), statuses)

    def pool_row(self, host: str, pool: str) -> PoolRow | None:
        for row in self.inventory.cache.pools(host):
            if row.name == pool:
                return row
        return None

    def open_pool(self, host: str, pool: str) -> None:
        entry = self.pool_tree.entry(host, pool)
        if entry is None or entry is self.current:
            return
        self.current = entry
        empty = "" if entry.row is not None else "not scanned yet: r refreshes"
        self.volume_table.show_pool(host, pool, empty_text=empty)
        self.show_job_outputs()
        self.update_summary()
        self.refresh_bindings()

    def update_summary(self) -> None:
        table = self.volume_table
        self.query_one(PoolSummary).show(self.current, shown=table.row_count,
                                         filter_text=table.filter_text, sort=table.sort,
                                         descending=table.descending)
        self.query_one(UsageHistory).show(self.current.key if self.current else None)

    def repaint_ages(self) -> None:
        # Only what the clock changed: over SSH an unchanged repaint is bytes for nothing.
        self.volume_table.repaint_changed()
        self.pool_tree.repaint_states()
        self.query_one(PoolSummary).repaint_changed()
        self.query_one(VolumeDetail).repaint_changed()  # its "seen 5m ago"
        if self.jobs_panel.display:
            self.jobs_panel.repaint_changed()

    def current_pool(self) -> Pool | None:
        if self.current is None:
            return None
        return self.inventory.known_pool(*self.current.key)

    def capabilities(self) -> Capabilities:
        pool = self.current_pool()
        return self.inventory.capabilities(pool) if pool is not None else Capabilities()

    def reload_pool(self, host: str, pool: str, *, select: str | None = None) -> None:
        """The cache changed for this pool: repaint its node, re-query if shown."""
        row = self.pool_row(host, pool)
        self.pool_tree.update_pool(row, host=host, pool=pool)
        self.volume_table.prune_marks(host, pool)  # a vanished volume is no longer marked
        if self.current is not None and self.current.key == (host, pool):
            if row is not None:
                self.volume_table.empty_text = ""
            self.volume_table.reload(select=select)
            self.update_summary()

    # -- refresh ----------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.pool_tree.set_refreshing(True)
        self.update_summary()
        self.refresh_all()

    @work(thread=True, exclusive=True, group="refresh")
    def refresh_all(self) -> None:
        try:
            self.inventory.refresh(self.post_pool_refreshed, self.post_host_changed)
        except StorageError as err:
            self.post_message(RefreshFinished(str(err)))
        except Exception as err:  # a bug below must not take the console down
            self.post_message(RefreshFinished(f"refresh failed: {type(err).__name__}: {err}"))
        else:
            self.post_message(RefreshFinished())

    @on(PoolRefreshed)
    def pool_refreshed(self, message: PoolRefreshed) -> None:
        self.reload_pool(message.host, message.pool)
        if message.error:
            self.notify(message.error, title="refresh failed", severity="error", timeout=10)

    @on(RefreshFinished)
    def refresh_finished(self, message: RefreshFinished) -> None:
        self.pool_tree.set_refreshing(False)
        self.update_summary()
        for panel in self.query(MonitorPanel):
            panel.poll_now()
        if message.error:
            self.notify(message.error, title="refresh failed", severity="error", timeout=10)

    # -- selection --------------------------------------------------------------------

    @on(PoolTree.NodeHighlighted)
    def pool_highlighted(self, event: PoolTree.NodeHighlighted[object]) -> None:
        data = event.node.data
        if isinstance(data, PoolEntry):
            self.current_host = None
            self.open_pool(*data.key)
        elif isinstance(data, HostEntry):
            self.current_host = data.host.name
            self.current = None
            self.show_host(data.host.name)  # its state and error where volumes would be

    @on(PoolTree.NodeSelected)
    def pool_selected(self, event: PoolTree.NodeSelected[object]) -> None:
        if isinstance(event.node.data, PoolEntry):
            self.volume_table.focus()

    @on(VolumeHighlighted)
    def volume_highlighted(self, message: VolumeHighlighted) -> None:
        pool_path = self.current.pool.path if self.current is not None else ""
        self.query_one(VolumeDetail).show(message.volume, pool_path,
                                          self.last_fix_of(message.volume))
        if (message.volume is None) != self.nothing_selected:
            self.nothing_selected = message.volume is None
            self.refresh_bindings()  # delete is greyed out without a volume

    # -- filter and sort ---------------------------------------------------------------

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("-open")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if not field.has_class("-open") and not field.value:
            return
        field.value = ""
        field.remove_class("-open")
        self.volume_table.set_filter("")
        self.update_summary()
        self.volume_table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.volume_table.set_filter(event.value)
        self.update_summary()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-open")
        self.volume_table.focus()

    def action_sort(self) -> None:
        self.volume_table.cycle_sort()
        self.update_summary()

    def action_reverse_sort(self) -> None:
        self.volume_table.reverse_sort()
        self.update_summary()

    def action_sort_by(self, column: str) -> None:
        self.volume_table.sort_by(column, descending=False)
        self.update_summary()

    def action_focus_pools(self) -> None:
        self.pool_tree.focus()

    def action_focus_volumes(self) -> None:
        self.volume_table.focus()

    # -- the : command line ------------------------------------------------------------

    def action_command_line(self) -> None:
        self.query_one(CommandBar).open()

    def command_names(self) -> tuple[list[str], list[tuple[str, str]], str | None]:
        return ([h.name for h in self.inventory.hosts()], self.pool_tree.pool_keys(),
                self.shown_host())

    @on(CommandBar.Run)
    def run_command(self, message: CommandBar.Run) -> None:
        jump(self, message.command)

    # -- create, delete, resize, copy: jobs ------------------------------------------------

    # Actions on the selected volume: the capability that offers each, and what the
    # volume must be (a snapshot is read-only on disk; growfs works on raw images).
    VOLUME_ACTIONS: ClassVar[dict[str, str]] = {
        "delete": "delete", "resize": "resize", "copy": "copy", "snapshot": "snapshot",
        "clone": "clone", "archive": "archive", "growfs": "growfs"}
    JOB_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"create", "restore", "jobs", *VOLUME_ACTIONS})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in HOST_ACTIONS:
            return self.host_action_allowed(action)
        if action == "dependants":
            return self.volume_table.current is not None or None
        if action == "clear_marks":
            return bool(self.volume_table.marks)
        if action == "check":  # read-only: also without a job engine
            return bool(self.volume_table.marks) or self.volume_table.current is not None \
                or None
        if action in BULK_KEYS and self.volume_table.marks:
            return self.runner is not None  # the plan says what read-only mode refuses
        if action == "clone" and self.volume_table.marks:
            return True  # says why it takes one snapshot at a time
        if action in self.JOB_ACTIONS and self.runner is None:
            return False  # no job engine: the console only browses
        if action not in self.JOB_ACTIONS or action == "jobs":
            return True
        capabilities = self.capabilities()
        if action == "create":
            return capabilities.create or False
        if action == "restore":
            return capabilities.archive or False
        if not getattr(capabilities, self.VOLUME_ACTIONS[action]):
            return False
        volume = self.volume_table.current
        if volume is None:
            return None
        if action == "snapshot" and volume.readonly:
            return None  # a snapshot already: clone it instead
        if action == "clone" and not volume.readonly:
            return None  # only a snapshot is cloned
        if action == "growfs" and volume.format != "raw":
            return None
        return True

    def action_create(self) -> None:
        pool = self.current_pool()
        if pool is None or self.runner is None:
            return
        self.app.push_screen(
            CreateVolumeScreen(self.inventory, self.runner, pool, self.capabilities(),
                               cursor_blink=self.cursor_blink),
            lambda job: self.job_submitted(job, select=True))

    def action_delete(self) -> None:
        if self.volume_table.marks:
            return self.bulk("delete")
        pool, volume = self.current_pool(), self.volume_table.current
        if pool is None or volume is None or self.runner is None:
            return
        self.app.push_screen(
            DeleteVolumeScreen(self.inventory, self.runner, pool, volume.name,
                               cursor_blink=self.cursor_blink),
            self.job_submitted)

    def action_resize(self) -> None:
        if self.volume_table.marks:
            return self.bulk("resize")
        pool, volume = self.current_pool(), self.volume_table.current
        if pool is None or volume is None or self.runner is None:
            return
        self.app.push_screen(
            ResizeVolumeScreen(self.runner, pool, volume, cursor_blink=self.cursor_blink),
            self.job_submitted)

    def action_copy(self) -> None:
        if self.volume_table.marks:
            return self.bulk("copy")
        pool, volume = self.current_pool(), self.volume_table.current
        if pool is None or volume is None or self.runner is None:
            return
        self.app.push_screen(
            CopyVolumeScreen(self.runner, pool, volume, cursor_blink=self.cursor_blink),
            lambda job: self.job_submitted(job, select=True))

    def volume_dialog(self, dialog: type[VolumePlanDialog], *, select: bool = False) -> None:
        pool, volume = self.current_pool(), self.volume_table.current
        if pool is None or volume is None or self.runner is None:
            return
        self.app.push_screen(dialog(self.runner, pool, volume,
                                    cursor_blink=self.cursor_blink),
                             lambda job: self.job_submitted(job, select=select))

    def action_snapshot(self) -> None:
        if self.volume_table.marks:
            return self.bulk("snapshot")
        self.volume_dialog(SnapshotVolumeScreen)

    def action_clone(self) -> None:
        if self.volume_table.marks:
            # Each clone needs its own name and pool: no one form fits many snapshots.
            self.notify("a clone is made from one snapshot at a time: esc clears the "
                        "marks, then l clones the snapshot under the cursor",
                        title="clone", severity="warning")
            return
        self.volume_dialog(CloneVolumeScreen, select=True)

    def action_archive(self) -> None:
        if self.volume_table.marks:
            return self.bulk("archive")
        self.volume_dialog(ArchiveVolumeScreen)

    def action_growfs(self) -> None:
        if self.volume_table.marks:
            return self.bulk("growfs")
        self.volume_dialog(GrowFilesystemScreen)

    def action_check(self) -> None:
        """K: check the marked volumes, or the one under the cursor (read-only)."""
        if self.volume_table.marks:
            return self.bulk("check")
        volume = self.volume_table.current
        if volume is not None:
            self.bulk("check", [Mark.of_row(volume)])

    def action_restore(self) -> None:
        pool = self.current_pool()
        if pool is None or self.runner is None:
            return
        self.app.push_screen(RestoreVolumeScreen(self.runner, pool,
                                                 cursor_blink=self.cursor_blink),
                             lambda job: self.job_submitted(job, select=True))

    # -- marks and bulk actions ---------------------------------------------------------

    @on(VolumeTable.MarksChanged)
    def marks_changed(self) -> None:
        self.query_one(MarkBar).show_marks(self.volume_table.marks)
        self.refresh_bindings()  # esc clears marks, d/n/y act on them

    def action_clear_marks(self) -> None:
        count = self.volume_table.clear_marks()
        self.notify(f"{count} mark(s) cleared; esc again clears the filter"
                    if self.volume_table.filter_text else f"{count} mark(s) cleared",
                    title="marks")

    def bulk(self, action: str, marks: list[Mark] | None = None) -> None:
        """One plan for ``action`` on every marked volume (or on ``marks``), then its jobs
        and a summary."""
        if self.runner is None and action != "check":
            return
        marks = list(self.volume_table.marks) if marks is None else marks
        self.app.push_screen(BulkPlanScreen(self.inventory, self.runner, action, marks,
                                            cursor_blink=self.cursor_blink),
                             self.fixes_submitted)

    def action_audit(self) -> None:
        """The audit log lives in the journal's file."""
        path = self.runner.journal.path if self.runner is not None else journal_path()
        self.app.push_screen(AuditScreen(path))

    # -- chains -------------------------------------------------------------------------

    def action_chains(self) -> None:
        """Every cached volume as a forest of chains, across pools and hosts."""
        self.app.push_screen(ChainScreen(self.inventory, host=self.shown_host(),
                                         cursor_blink=self.cursor_blink), self.go_to_volume)

    def action_dependants(self) -> None:
        """What depends on the selected volume, found on disk in every pool of its host."""
        volume = self.volume_table.current
        if volume is None:
            return
        self.app.push_screen(ChainScreen(self.inventory, host=self.shown_host(),
                                         volume=volume, cursor_blink=self.cursor_blink),
                             self.go_to_volume)

    def action_fixes(self) -> None:
        """The fixes screen: check this host's pools, mark fixes, run them as jobs; with
        marks, one plan for the low-risk fixes of the marked volumes."""
        if self.volume_table.marks:
            return self.bulk("fix")
        self.app.push_screen(FixesScreen(self.inventory, self.runner, host=self.shown_host(),
                                         cursor_blink=self.cursor_blink),
                             self.fixes_submitted)

    def fixes_submitted(self, jobs: list[JobRecord] | None) -> None:
        for job in jobs or []:
            self.job_submitted(job)

    def shown_host(self) -> str | None:
        return self.current.key[0] if self.current is not None else self.current_host

    def go_to_volume(self, target: Target | None) -> None:
        """Select ``target``'s pool and put the cursor on it (the filter is cleared)."""
        if target is None:
            return
        host, pool, name = target
        if not self.pool_tree.select_pool(host, pool):
            self.notify(f"pool {printable(pool)} of {printable(host)} is not in the config",
                        title="chains", severity="warning")
            return
        self.current_host = None
        self.open_pool(host, pool)
        self.action_clear_filter()
        table = self.volume_table
        if not table.select_name(name):
            self.notify(f"{printable(name)} is no longer in {printable(pool)}",
                        title="chains", severity="warning")
        table.focus()

    def job_submitted(self, job: JobRecord | None, *, select: bool = False) -> None:
        """A dialog's job is in the journal: the panel shows it from now on."""
        if job is None:
            return
        if select:  # put the cursor on the new volume once it exists
            dest = job.params.get("dest_pool") or job.pool
            name = job.params.get("dest_name") or job.volume
            self.select_after[job.id] = (job.host, str(dest), str(name))
        change = self.board.submitted(job)
        self.jobs_changed([change] if change else [])

    # -- the jobs panel -------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="jobs")
    def watch_jobs(self) -> None:
        """Recover, then read the journal until the screen goes: about once a second
        while a job is active, every few seconds when idle; posts only changes."""
        runner = self.runner
        assert runner is not None
        worker = get_current_worker()
        journal = runner.journal
        try:
            try:
                recovered = runner.recover()
            except (sqlite3.Error, OSError) as err:
                self.post_message(JobActionFailed(f"cannot read the journal: {err}"))
                recovered = []
            if recovered:
                self.post_message(JobsRecovered(recovered))
            last: list[JobRecord] | None = None
            failing = False
            while not worker.is_cancelled:
                try:
                    jobs = journal.jobs(limit=PANEL_LIMIT)
                except sqlite3.Error as err:
                    if not failing:
                        self.post_message(JobActionFailed(f"cannot read the journal: {err}"))
                    failing = True
                    jobs = last or []
                else:
                    failing = False
                    if jobs != last:
                        last = jobs
                        self.post_message(JobsPolled(jobs))
                busy = any(job.state in ACTIVE for job in jobs)
                worker.cancelled_event.wait(self.JOB_POLL_BUSY if busy
                                            else self.JOB_POLL_IDLE)
        finally:
            journal.close()  # this thread's connection

    @on(JobUpdated)
    def job_updated(self, message: JobUpdated) -> None:
        # Many jobs report ~10 times a second each: paint their news together, at most
        # JOB_PAINT_HZ times a second, so keys stay quick and the wire quiet.
        self.job_news[message.job.id] = message.job
        if len(self.job_news) == 1:
            self.set_timer(1 / self.JOB_PAINT_HZ, self.paint_job_news)

    def paint_job_news(self) -> None:
        news, self.job_news = self.job_news, {}
        changes = [self.board.local_update(job) for job in news.values()]
        self.jobs_changed([c for c in changes if c is not None])

    @on(JobsPolled)
    def jobs_polled(self, message: JobsPolled) -> None:
        self.jobs_changed(self.board.polled(message.jobs))

    @on(JobRead)
    def job_read(self, message: JobRead) -> None:
        change = self.board.observe(message.job)
        self.jobs_changed([change] if change else [])

    def jobs_changed(self, changes: list[Change]) -> None:
        if not changes:
            return  # nothing new: nothing to redraw
        panel = self.jobs_panel
        panel.update_jobs()
        self.show_job_outputs()
        if any(c.after.kind == FIX_KIND for c in changes):  # the details show the last fix
            detail = self.query_one(VolumeDetail)
            detail.show_last_fix(self.last_fix_of(detail.volume))
        started = [c for c in changes if c.after.state in ACTIVE
                   and (c.before is None or c.before.state not in ACTIVE)]
        if started:
            self.jobs_hidden_by_user = False
        if started and not panel.has_class("-shown"):
            self.show_jobs()
        for change in changes:
            if change.ended and (change.before is not None
                                 or (change.after.finished or 0) >= self.board.started):
                self.job_ended(change.after)

    def last_fix_of(self, row: VolumeRow | None) -> JobRecord | None:
        return None if row is None else self.board.last_fix(row.host, row.pool, row.name)

    def show_job_outputs(self) -> None:
        """The volumes active jobs write into the shown pool, as rows of the table."""
        table = self.volume_table
        table.set_outputs(self.board.outputs(table.host, table.pool))

    def job_ended(self, job: JobRecord) -> None:
        title = printable(describe_job(job))
        if job.state == JobState.DONE:
            self.notify(title, title=f"job {job.id} done")
        elif job.state == JobState.ABORTED:
            self.notify(f"{title}: {job.error or 'cancelled'}",
                        title=f"job {job.id} cancelled", severity="warning")
        else:
            self.notify(f"{title}: {job.error}", title=f"job {job.id} failed",
                        severity="error", timeout=15)
        # Pools this console knows (no asking a host here, on the event loop); another
        # process's job may name pools of its own config.
        known = [(host, pool) for host, pool in job_pools(job)
                 if self.inventory.known_pool(host, pool) is not None]
        if known:
            self.refresh_job_pools(job, known)

    @work(thread=True, group="job-refresh")
    def refresh_job_pools(self, job: JobRecord, pools: list[tuple[str, str]]) -> None:
        errors = []
        for host, name in pools:
            try:
                self.inventory.refresh_pool(self.inventory.pool(host, name))
            except StorageError as err:
                errors.append(str(err))
            except Exception as err:  # a bug below must not take the console down
                errors.append(f"refresh failed: {type(err).__name__}: {err}")
        self.post_message(JobPoolsRefreshed(job, pools, errors))

    @on(JobPoolsRefreshed)
    def job_pools_refreshed(self, message: JobPoolsRefreshed) -> None:
        target = self.select_after.pop(message.job.id, None)
        for host, pool in message.pools:
            select = target[2] if target is not None and message.job.state == JobState.DONE \
                and target[:2] == (host, pool) else None
            self.reload_pool(host, pool, select=select)
            shown = self.current is not None and self.current.key == (host, pool)
            table = self.volume_table
            if select is not None and shown and (table.current is None
                                                 or table.current.name != select):
                self.action_clear_filter()  # the filter hid it: show it anyway
                table.select_name(select)
        for error in message.errors:
            self.notify(error, title="refresh failed", severity="error", timeout=10)

    @on(JobsRecovered)
    def jobs_recovered(self, message: JobsRecovered) -> None:
        for job in message.jobs:
            self.board.observe(job)
            how = "R resumes it, b rolls it back" if self.jobs_panel.can_act else \
                "resume or roll it back from a console that is not read-only"
            self.notify(f"{printable(describe_job(job))}: its process ended while it ran. In the "
                        f"jobs panel (J), {how}.", title=f"job {job.id} was interrupted",
                        severity="warning", timeout=20)
        self.jobs_panel.update_jobs()
        self.show_jobs()

    @on(JobsPanel.Act)
    def job_act(self, message: JobsPanel.Act) -> None:
        if self.runner is None or self.inventory.read_only:
            return
        job = message.job
        if message.action == "cancel":
            self.board.cancel_requested(job.id)
            self.jobs_panel.update_jobs()
        elif message.action == "resume":
            self.board.expect(job.id)
        self.run_job_action(message.action, job.id)

    @work(thread=True, group="job-action")
    def run_job_action(self, action: str, job_id: int) -> None:
        runner = self.runner
        assert runner is not None
        try:
            if action == "cancel":
                job = runner.cancel(job_id)
            elif action == "resume":
                job = runner.resume(job_id)
            else:
                job = runner.rollback(job_id)
        except StorageError as err:
            self.post_message(JobActionFailed(str(err), job_id=job_id))
        except KeyError as err:
            self.post_message(JobActionFailed(
                f"job {job_id}: its pool {err} is not in this console's config",
                job_id=job_id))
        except Exception as err:  # never a traceback in the console
            self.post_message(JobActionFailed(f"{type(err).__name__}: {err}", job_id=job_id))
        else:
            if action != "resume":  # resuming: the runner reports from now on
                self.post_message(JobRead(job))

    @on(JobActionFailed)
    def job_action_failed(self, message: JobActionFailed) -> None:
        if message.job_id is not None:
            self.board.forget(message.job_id)
            self.board.cancelling.discard(message.job_id)
            self.jobs_panel.update_jobs()
        self.notify(message.text, title="jobs", severity="error", timeout=10)

    @on(JobsPanel.Details)
    def job_details(self, message: JobsPanel.Details) -> None:
        job = message.job
        lines = [printable(describe_job(job)),
                 f"{job.state}, stage {job.stage}/{job.stages} {job.stage_label}".rstrip(),
                 f"by {job.who}, pool {printable(job.host)}:{printable(job.pool)}"]
        if job.error:
            lines.append(printable(job.error))
        self.notify("\n".join(lines), title=f"job {job.id}", timeout=20)

    def show_jobs(self, *, focus: bool = False) -> None:
        if self.jobs_hidden_by_user and not focus:
            return
        panel = self.jobs_panel
        panel.add_class("-shown")
        panel.update_jobs()
        if focus:
            panel.focus()

    def action_jobs(self) -> None:
        """J: show and focus the jobs panel; again: hide it."""
        panel = self.jobs_panel
        if not panel.has_class("-shown"):
            self.jobs_hidden_by_user = False
            self.show_jobs(focus=True)
        elif self.focused is not panel:
            panel.focus()
        else:
            self.jobs_hidden_by_user = True
            panel.remove_class("-shown")
            self.volume_table.focus()

    def toggle_auto_fix(self) -> None:
        """For this console only: the config keeps its ``auto_fix``."""
        if self.runner is None or self.inventory.read_only:
            return
        self.runner.auto_fix = not self.runner.auto_fix
        self.notify("a job's result is checked and its low-risk fix queued" if
                    self.runner.auto_fix else "jobs queue no fix after them",
                    title=f"auto-fix {'on' if self.runner.auto_fix else 'off'} (this console)")

    def jobs_running_here(self) -> list[int]:
        """Jobs this console's runner has not finished (quitting cancels them)."""
        return self.board.running_here()

    # -- palette ------------------------------------------------------------------------

    def palette_commands(self) -> Iterable[PaletteCommand]:
        yield PaletteCommand("Refresh all pools", "Re-read every pool from disk",
                             self.action_refresh)
        if self.check_action("create", ()):
            yield PaletteCommand("Create a volume", "A new raw or qcow2 volume in this pool",
                                 self.action_create)
        name = self.volume_table.current.name if self.volume_table.current else ""
        if self.check_action("delete", ()):
            yield PaletteCommand(f"Delete volume {name}", "Asks before deleting",
                                 self.action_delete)
        if self.check_action("resize", ()):
            yield PaletteCommand(f"Resize volume {name}", "Grow (or shrink) it, as a job",
                                 self.action_resize)
        if self.check_action("copy", ()):
            yield PaletteCommand(f"Copy volume {name}", "To a pool of the same host, as a job",
                                 self.action_copy)
        if self.check_action("snapshot", ()):
            yield PaletteCommand(f"Snapshot volume {name}",
                                 "It keeps its name; a read-only snapshot keeps its data",
                                 self.action_snapshot)
        if self.check_action("clone", ()):
            yield PaletteCommand(f"Clone snapshot {name}",
                                 "A new disk from it: an overlay, or a full copy",
                                 self.action_clone)
        if self.check_action("archive", ()):
            yield PaletteCommand(f"Archive volume {name}",
                                 "To a zstd-compressed file with checksums, as a job",
                                 self.action_archive)
        if self.check_action("restore", ()):
            yield PaletteCommand("Restore an archive", "Into a new or an existing volume "
                                 "of this pool, as a job", self.action_restore)
        if self.check_action("growfs", ()):
            yield PaletteCommand(f"Grow the file system in {name}",
                                 "Its ext2/3/4 file system fills the volume", self.action_growfs)
        if self.current is not None:
            host, pool = self.current.key
            for verb, title, help_text in self.pool_lifecycle_commands():
                yield PaletteCommand(title, help_text,
                                     partial(self.pool_lifecycle, host, pool, verb))
        yield from self.pool_admin_commands()
        yield PaletteCommand("Audit log", "Every command run on every host, newest first",
                             self.action_audit)
        yield PaletteCommand("Chains", "Every volume with what it is based on and what is "
                             "based on it, across pools and hosts", self.action_chains)
        yield PaletteCommand("Fixes", "Check this host's pools: findings by severity, "
                             "mark fixes, run them as jobs", self.action_fixes)
        if self.check_action("dependants", ()):
            yield PaletteCommand(f"What depends on {name}?",
                                 "Volumes based on it, found on disk in every pool",
                                 self.action_dependants)
        if self.runner is not None:
            yield PaletteCommand("Jobs panel", "Show, focus or hide the recent jobs",
                                 self.action_jobs)
        if self.runner is not None and not self.inventory.read_only:
            now, turn = ("on", "off") if self.runner.auto_fix else ("off", "on")
            yield PaletteCommand(f"Auto-fix after jobs: {now} (turn it {turn})",
                                 "After a job, run the low-risk fix its result needs, as a "
                                 "job (this console; the config's [jobs] auto_fix)",
                                 self.toggle_auto_fix)
        yield PaletteCommand("Filter volumes", "Show only names containing some text",
                             self.action_filter)
        if self.volume_table.filter_text:
            yield PaletteCommand("Clear the filter", "Show every volume again",
                                 self.action_clear_filter)
        for column, label in SORT_LABELS.items():
            yield PaletteCommand(f"Sort by {label}", f"Order the volumes by {label}",
                                 partial(self.action_sort_by, column))
        yield PaletteCommand("Reverse the sort order", "Ascending <-> descending",
                             self.action_reverse_sort)
        yield PaletteCommand("Focus the pools", "Move the keyboard focus to the pool tree",
                             self.action_focus_pools)
        yield PaletteCommand("Focus the volumes", "Move the keyboard focus to the volumes",
                             self.action_focus_volumes)
