"""The fixes screen (F): the place to look first on a troubled host.

A check (``console.checks.check_pools``) of the current host's pools, or of every pool
with ``a``, runs in a thread worker; its findings come grouped by severity (broken,
degraded, info) then fix type, each with its fix. ``space`` marks a fix, ``*`` marks all
shown, ``esc`` clears the marks (then closes); ``enter`` shows one plan for the marked
fixes (their commands and the combined space effect), asks again for each high-risk one,
and on yes submits one fix job each (``console.jobs.fixing.RunFix``). Read-only: the
findings show, nothing runs.
"""

from __future__ import annotations

import shlex
from typing import ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from backends.contract import StorageError
from console.checks import CheckReport, check_pools
from console.fixes import Fix, Risk
from console.inventory import Inventory
from console.jobs.fixing import RunFix
from console.jobs.journal import JobRecord
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.screens.confirm import ConfirmScreen
from console.ui.widgets.fix_list import FixList, group_lines, space_effect


class Checked(Message):
    def __init__(self, report: CheckReport | None, error: str = "") -> None:
        super().__init__()
        self.report = report
        self.error = error


class FixesSubmitted(Message):
    def __init__(self, jobs: list[JobRecord], errors: list[str]) -> None:
        super().__init__()
        self.jobs = jobs
        self.errors = errors


def needs_confirmation(fix: Fix) -> bool:
    return fix.needs_confirmation or fix.risk == Risk.HIGH


def plan_text(fixes: list[Fix]) -> str:
    """What the marked fixes will run, in order, and their combined space effect (as
    console markup: names and commands escaped)."""
    lines: list[str] = []
    for fix in fixes:
        name = printable(fix.volume or "(the pool)")
        lines.append(f"[b]{escape(name)}[/b] ({escape(printable(fix.pool))}): {fix.type}, "
                     f"{fix.risk} risk, {space_effect(fix.space_change)}")
        lines.append(f"  {escape(printable(fix.reason))}")
        lines.extend(f"  $ {escape(printable(shlex.join(c)))}" for c in fix.commands)
    total = sum(f.space_change for f in fixes)
    lines.append("")
    lines.append(f"Total: {space_effect(total)} (estimated)")
    high = [f for f in fixes if needs_confirmation(f)]
    if high:
        lines.append(f"[b]{len(high)} high-risk fix(es)[/b]: each is asked again on its own.")
    return "\n".join(lines)


class FixesScreen(ModalScreen[list[JobRecord] | None]):
    """Dismissed with the fix jobs submitted (None when closed without running any).

    Args:
        inventory: The pools to check.
        runner: Runs the fix jobs (None: the console only browses).
        host: The console's current host: its pools are checked (every pool when None).
    """

    HELP_TITLE: ClassVar[str] = "Fixes"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark"),
        Binding("asterisk", "mark_all", "Mark all shown"),
        Binding("enter", "run", "Plan and run"),
        Binding("a", "all_pools", "All pools / this host"),
        Binding("r", "recheck", "Check again"),
        Binding("escape", "close", "Clear marks / close"),
    ]

    DEFAULT_CSS = """
    FixesScreen {
        align: center middle;
        #fixes {
            width: 100%;
            height: 100%;
            background: $surface;
            border: round $primary;
            border-title-color: $primary;
            border-title-style: bold;
            border-subtitle-color: $text-muted;
        }
        #fix-status { height: 1; color: $text-muted; padding: 0 1; }
    }
    """

    def __init__(self, inventory: Inventory, runner: Runner | None, *, host: str | None,
                 cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.runner = runner
        self.host = host
        self.cursor_blink = cursor_blink
        self.all_pools = host is None
        self.report: CheckReport | None = None
        self.marked: dict[str, Fix] = {}
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="fixes") as box:
            box.border_subtitle = ("space marks · * marks all · enter plans and runs · "
                                   "a all pools · esc clears, closes")
            yield FixList(host=self.host, id="fix-list")
            yield Static("", id="fix-status")

    @property
    def view(self) -> FixList:
        return self.query_one(FixList)

    @property
    def can_run(self) -> bool:
        return self.runner is not None and not self.inventory.read_only

    def on_mount(self) -> None:
        self.view.focus()
        self.start_check()

    def scope(self) -> str:
        return "every pool" if self.all_pools or self.host is None \
            else f"the pools of {printable(self.host)}"

    def start_check(self) -> None:
        self.report = None
        self.marked = {}
        self.view.set_marked(set())
        self.query_one("#fixes", Vertical).border_title = f"Fixes: {self.scope()}"
        self.view.show([], empty_text=f"checking {self.scope()} (qemu-img check of each "
                       "image)…")
        self.update_status()
        self.check(self.all_pools)

    # -- the check ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="fixes")
    def check(self, all_pools: bool) -> None:
        pools = [p for p in self.inventory.pools()
                 if all_pools or self.host is None or p.host == self.host]
        journal = self.runner.journal if self.runner is not None else None
        try:
            report = check_pools(self.inventory, pools, journal=journal)
        except StorageError as err:
            self.post_message(Checked(None, str(err)))
            return
        except Exception as err:  # never a traceback in the console
            self.post_message(Checked(None, f"{type(err).__name__}: {err}"))
            return
        finally:
            self.inventory.cache.db.close_thread()
            if journal is not None:
                journal.db.close_thread()
        self.post_message(Checked(report))

    @on(Checked)
    def checked(self, message: Checked) -> None:
        self.report = message.report
        if message.report is None:
            self.view.show([], empty_text=f"the check failed: {message.error}")
        else:
            report = message.report
            empty = "nothing found: every volume checked is fine"
            if report.errors:
                empty = "nothing found in what could be checked"
            self.view.show(group_lines(report.findings, report.fixes), empty_text=empty)
            for error in report.errors:
                self.notify(printable(error), title="not checked", severity="warning",
                            timeout=10)
        self.update_status()

    def update_status(self) -> None:
        report = self.report
        if report is None:
            status = "checking…"
        else:
            status = f"{len(report.findings)} finding(s) · {len(report.fixes)} fix(es)"
            if self.marked:
                total = sum(f.space_change for f in self.marked.values())
                status += f" · {len(self.marked)} marked: {space_effect(total)}"
            if report.errors:
                status += f" · {len(report.errors)} pool(s) not checked"
        if not self.can_run:
            status += " · read-only: fixes are shown, not run"
        self.query_one("#fix-status", Static).update(status)

    # -- keys -------------------------------------------------------------------------

    def refuse(self) -> bool:
        """True (and a message) when fixes cannot run here."""
        if self.can_run:
            return False
        why = "read-only mode" if self.inventory.read_only else "no job engine"
        self.notify(f"{why}: fixes are shown, not run", title="fixes", severity="warning")
        return True

    def set_marks(self, marked: dict[str, Fix]) -> None:
        self.marked = marked
        self.view.set_marked(set(marked))
        self.update_status()

    def action_mark(self) -> None:
        line = self.view.current
        if self.refuse() or line is None or line.finding is None:
            return
        fix = line.fix
        if fix is None:
            self.notify("no fix is proposed for this finding", title="fixes")
            return
        marked = dict(self.marked)
        if marked.pop(fix.id, None) is None:
            marked[fix.id] = fix
        self.set_marks(marked)
        self.view.action_cursor_down()

    def action_mark_all(self) -> None:
        if self.refuse():
            return
        self.set_marks({fix.id: fix for fix in self.view.fixes()})

    def action_all_pools(self) -> None:
        if self.host is None:
            return
        self.all_pools = not self.all_pools
        self.start_check()

    def action_recheck(self) -> None:
        self.start_check()

    def action_close(self) -> None:
        if self.marked:
            self.set_marks({})
            return
        self.dismiss(None)

    def action_run(self) -> None:
        if self.refuse() or self.busy:
            return
        fixes = [f for f in self.view.fixes() if f.id in self.marked]
        if not fixes:
            self.notify("mark fixes with space (or all with *) first", title="fixes")
            return
        self.busy = True
        self.ask(fixes)

    @work(exclusive=True, group="fixes-ask")
    async def ask(self, fixes: list[Fix]) -> None:
        """The plan, then each high-risk fix on its own; then the jobs."""
        submitting = False
        try:
            title = f"Run {len(fixes)} fix(es)?"
            if not await self.app.push_screen_wait(
                    ConfirmScreen(title, plan_text(fixes), "Run them")):
                return
            confirmed: set[str] = set()
            for fix in fixes:
                if not needs_confirmation(fix):
                    continue
                question = (f"{escape(printable(fix.reason))}\n\nThis is a high-risk "
                            f"{fix.type} of [b]{escape(printable(fix.volume or ''))}[/b] "
                            f"({escape(printable(fix.pool))}): a backup is taken first. "
                            "Run it?")
                if await self.app.push_screen_wait(
                        ConfirmScreen("High-risk fix", question, "Yes, this one too")):
                    confirmed.add(fix.id)
            chosen = [f for f in fixes if not needs_confirmation(f) or f.id in confirmed]
            if not chosen:
                return
            submitting = True
            self.submit(chosen)
        finally:
            if not submitting:
                self.busy = False

    @work(thread=True, exclusive=True, group="fixes-submit")
    def submit(self, fixes: list[Fix]) -> None:
        runner = self.runner
        assert runner is not None
        jobs: list[JobRecord] = []
        errors: list[str] = []
        try:
            for fix in fixes:
                try:
                    op = RunFix.from_fix(fix, confirmed=needs_confirmation(fix), marked=True)
                    jobs.append(runner.submit(op))
                except StorageError as err:
                    errors.append(str(err))
                except Exception as err:  # never a traceback in the console
                    errors.append(f"{type(err).__name__}: {err}")
        finally:
            runner.journal.db.close_thread()
        self.post_message(FixesSubmitted(jobs, errors))

    @on(FixesSubmitted)
    def submitted(self, message: FixesSubmitted) -> None:
        self.busy = False
        for error in message.errors:
            self.notify(printable(error), title="fix refused", severity="error", timeout=10)
        if message.jobs:
            self.dismiss(message.jobs)
