"""One plan for an action on the marked volumes, one confirmation, then a summary.

The plan (``console.bulk.plan_bulk``, in a thread worker) lists each job it will queue in
the order it runs, what is refused and why, and the space each pool gains or loses. An
action with a parameter asks for it in the row above the plan (a copy's destination
pool, an archive's directory, a resize's size, a delete's wipe) and plans again when it
changes. Deletes that hold data need the number of volumes typed. Once confirmed,
``carry_out`` queues the jobs wave by wave in a worker, and the same screen becomes the
summary: each job's state as it ends, with the reason of each failure. A check queues
no job: confirmed, it runs (``check_marked``) and the summary is each volume's health.
Dismissed with the jobs it submitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, LoadingIndicator, Select, Static

from backends.contract import StorageError
from backends.model import HealthState, Pool
from console.bulk import (
    ACTIONS,
    WIPES,
    BulkPlan,
    Outcome,
    Refusal,
    carry_out,
    check_marked,
    plan_bulk,
    resize_target,
)
from console.checks import CheckReport
from console.config import archive_dir
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState
from console.jobs.operations import DeleteVolume
from console.jobs.runner import Runner
from console.marks import Mark
from console.ui.cells import printable
from console.ui.screens.dialog import DialogScreen
from console.units import format_size

# What each action asks before it plans: (label, widget id); the others ask nothing.
PARAMETERS: dict[str, tuple[str, str]] = {
    "copy": ("copy to", "dest"), "archive": ("into dir", "directory"),
    "resize": ("size", "size"), "delete": ("wipe", "wipe")}
HEALTH_STYLE = {HealthState.OPTIMIZED: "green", HealthState.DEGRADED: "yellow",
                HealthState.BROKEN: "bold red"}


class BulkPlanned(Message):
    def __init__(self, plan: BulkPlan) -> None:
        super().__init__()
        self.plan = plan


class BulkFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class BulkProgress(Message):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class BulkFinished(Message):
    pass


class BulkChecked(Message):
    def __init__(self, report: CheckReport) -> None:
        super().__init__()
        self.report = report


def signed_size(change: int) -> str:
    if change < 0:
        return f"frees {format_size(-change)}"
    return f"takes {format_size(change)}" if change else "no change"


def volume_at(volume: str, host: str, pool: str) -> Text:
    """A volume's name in bold, then where it is (``host › pool``) dimmed."""
    return Text.assemble((printable(volume), "bold"),
                         (f"  {printable(host)} › {printable(pool)}", "dim"))


def plan_table(plan: BulkPlan, outcomes: dict[int, Outcome] | None = None) -> Table:
    """Jobs in the order they run (a delete's dependants first) with each one's space,
    what is held for review, the refusals, then the space per pool; with ``outcomes``,
    each job's state instead of its wave."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", no_wrap=True)
    table.add_column()
    table.add_column(no_wrap=True)
    waves = plan.waves > 1
    for index, planned in enumerate(plan.jobs):
        op = planned.op
        what = f"{printable(op.describe())}  [dim]{printable(op.host)} › " \
               f"{printable(op.pool)}[/]"
        if isinstance(op, DeleteVolume) and op.typed_name:
            what += "  [b]holds data[/]"
        change = sum(b for _, _, b in planned.space)
        staged = sum(b for _, _, b in planned.staging)
        if change or planned.committed or staged:
            virtual = f", +{format_size(planned.committed)} virtual" \
                if planned.committed else ""
            staging = f", {format_size(staged)} staging in its pool while it runs" \
                if staged else ""
            what += f"  [dim]{signed_size(change)}{virtual}{staging}[/]"
        outcome = (outcomes or {}).get(index)
        if outcomes is None:
            state = f"step {planned.wave + 1}" if waves else ""
        elif outcome is None:
            state = "[dim]waiting[/]"
        elif outcome.job is None:
            state = "[red]not run[/]"
        elif outcome.job.state == JobState.DONE:
            state = f"[green]done[/] #{outcome.job.id}"
        elif outcome.ended:
            state = f"[red]{outcome.job.state}[/] #{outcome.job.id}"
        else:
            state = f"queued #{outcome.job.id}"
        table.add_row(f"{index + 1}.", what, state)
        if outcome is not None and outcome.ended and not outcome.succeeded:
            table.add_row("", Text(printable(outcome.reason or "cancelled"), style="red"), "")
    for index, (host, pool, name) in enumerate(plan.checks):
        table.add_row(f"{index + 1}.", f"check {printable(name)}  [dim]{printable(host)} › "
                      f"{printable(pool)}[/]", "")
    if plan.checks:
        table.add_row("", "[dim]read-only: the header, the chain, qemu-img check, the "
                      "zeroes[/]", "")
    if not plan.jobs and not plan.checks:
        table.add_row("", "[b]nothing to queue[/]", "")
    if plan.held:
        table.add_row("", "", "")
        table.add_row("", f"[b]not queued here ({len(plan.held)}): review them one by one "
                      "in the fixes screen (F)[/]", "")
        for held in plan.held:
            table.add_row("·", volume_at(held.volume, held.host, held.pool), "")
            table.add_row("", Text(printable(held.reason), style="yellow"), "")
    if plan.refused:
        table.add_row("", "", "")
        table.add_row("", f"[b red]refused ({len(plan.refused)})[/]", "")
        for refusal in plan.refused:
            table.add_row("✗", volume_at(refusal.volume, refusal.host, refusal.pool), "")
            table.add_row("", Text(printable(refusal.reason), style="red"), "")
    if plan.effects:
        table.add_row("", "", "")
        table.add_row("", f"[b]space: {signed_size(plan.change)} in all[/]", "")
        for effect in plan.effects:
            free = "" if effect.available is None else \
                f", {format_size(effect.available - effect.reserved)} free now"
            virtual = f", +{format_size(effect.committed)} virtual size (allocated as " \
                "guests write)" if effect.committed else ""
            staging = f", and {format_size(effect.staging)} of staging files while the " \
                "copies run (removed after)" if effect.staging else ""
            table.add_row("", f"{printable(effect.host)} › {printable(effect.pool)}: "
                          f"{signed_size(effect.change)}{free}{virtual}{staging}", "")
    return table


def check_table(report: CheckReport, refused: Sequence[Refusal] = ()) -> Table:
    """Each checked volume's health with its reasons, then what could not be checked,
    and the marked volumes the plan refused, each with why."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column()
    for checked in report.volumes:
        v, health = checked.volume, checked.health
        table.add_row(Text(str(health.state), style=HEALTH_STYLE[health.state]),
                      volume_at(v.name, v.host, v.pool))
        for reason in health.reasons:
            table.add_row("", Text(printable(reason)))
        fixes = sum(1 for f in report.fixes if (f.host, f.pool, f.volume) == (v.host, v.pool,
                                                                              v.name))
        if fixes:
            table.add_row("", Text(f"{fixes} fix(es) proposed: F with the marks plans them",
                                   style="dim"))
    for error in report.errors:
        table.add_row(Text("not checked", style="red"), Text(printable(error), style="red"))
    for refusal in refused:
        table.add_row(Text("refused", style="red"),
                      volume_at(refusal.volume, refusal.host, refusal.pool))
        table.add_row("", Text(printable(refusal.reason), style="red"))
    return table


class BulkPlanScreen(DialogScreen[list[JobRecord]]):
    """Dismissed with the jobs it submitted (empty when cancelled, and for a check)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Cancel"),
        Binding("y", "confirm", "Queue the jobs"),
    ]

    DEFAULT_CSS = """
    BulkPlanScreen {
        #dialog { width: 100; height: auto; max-height: 100%; }
        #param-row { height: 1; margin: 1 0 0 0; }
        #param-row Static { width: 10; color: $text-muted; }
        #param-row Select, #param-row Input { width: 1fr; }
        #plan-scroll { height: auto; max-height: 60vh; margin: 1 0 0 0; }
        #plan { height: auto; }
        #question { height: auto; margin: 1 0 0 0; }
        #typed { display: none; }
        #typed.-shown { display: block; }
        LoadingIndicator { height: 1; }
        LoadingIndicator.-hidden, #queue.-hidden { display: none; }
    }
    """

    def __init__(self, inventory: Inventory, runner: Runner | None, action: str,
                 marks: list[Mark], *, dest: tuple[str, str] | None = None,
                 directory: str | None = None, size: str | None = None,
                 plan: BulkPlan | None = None, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.runner = runner
        self.action = action
        self.marks = marks
        self.dest = dest
        self.directory = directory if directory is not None else str(archive_dir())
        self.new_size = size
        self.wipe = "none"
        self.plan = plan
        self.cursor_blink = cursor_blink
        self.outcomes: dict[int, Outcome] | None = None  # once confirmed
        self.report: CheckReport | None = None  # a check's, once run
        self.submitted: list[JobRecord] = []
        self.finished = False
        self.busy = plan is None

    @property
    def data_held(self) -> int:
        """How many delete jobs are of volumes holding data (typed to confirm)."""
        plan = self.plan
        return 0 if plan is None else sum(
            1 for j in plan.jobs if isinstance(j.op, DeleteVolume) and j.op.typed_name)

    @property
    def count(self) -> int:
        """What a confirmation starts: the jobs, or the volumes a check reads."""
        plan = self.plan
        return 0 if plan is None else len(plan.jobs) or len(plan.checks)

    def destinations(self) -> list[tuple[str, str]]:
        """Pools a copy can go to: those of the marked volumes' hosts, and the directory
        pools of other hosts (a transfer; the plan refuses a volume not in one)."""
        hosts = {m.host for m in self.marks}
        pools: list[Pool] = [p for p in self.inventory.pools()
                             if p.host in hosts or p.kind == "dir"]
        return [(f"{printable(p.host)} › {printable(p.name)}", f"{p.host}\0{p.name}")
                for p in pools]

    def parameter(self) -> ComposeResult:
        if self.action == "copy":
            yield Select(self.destinations(), prompt="choose a pool", id="dest",
                         compact=True)
        elif self.action == "archive":
            yield Input(self.directory, placeholder="a directory on the volumes' hosts; "
                        "Enter plans", id="directory", compact=True)
        elif self.action == "resize":
            yield Input(self.new_size or "", placeholder="+10G grows each by 10G, 30G makes "
                        "each 30G; Enter plans", id="size", compact=True)
        elif self.action == "delete":
            yield Select([("none" if w == "none" else f"{w}: overwrite, then delete", w)
                          for w in WIPES], value="none", allow_blank=False, id="wipe",
                         compact=True)

    def compose(self) -> ComposeResult:
        count = len(self.marks)
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"{ACTIONS[self.action]} {count} marked volume" \
                f"{'s' if count != 1 else ''}: the plan"
            if self.action in PARAMETERS:
                with Horizontal(id="param-row"):
                    yield Static(PARAMETERS[self.action][0])
                    yield from self.parameter()
            yield LoadingIndicator()
            with VerticalScroll(id="plan-scroll"):
                yield Static("", id="plan")
            yield Static("", id="question")
            yield Input(placeholder="the number of volumes", id="typed", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Queue", id="queue", variant="warning", compact=True,
                             disabled=True)
                yield Button("Cancel", id="close", compact=True)

    def on_mount(self) -> None:
        for field in self.query(Input).results(Input):
            field.cursor_blink = self.cursor_blink
        self.query_one("#close", Button).focus()
        if self.action == "copy" and self.dest is not None:
            with self.prevent(Select.Changed):
                self.query_one("#dest", Select).value = "\0".join(self.dest)
        waiting = {"copy": "choose the pool to copy them to" if self.dest is None else "",
                   "resize": "enter the new size (or +size), then Enter"
                   if self.new_size is None else ""}.get(self.action)
        if self.plan is not None:
            self.show_plan(self.plan)
        elif waiting:
            self.busy = False
            self.query_one(LoadingIndicator).add_class("-hidden")
            self.query_one("#plan", Static).update(waiting)
            self.query_one(f"#{PARAMETERS[self.action][1]}").focus()
        else:
            self.make_plan()

    def replan(self) -> None:
        self.busy = True
        self.plan = None
        self.show_error("")
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#queue", Button).disabled = True
        self.make_plan()

    @on(Select.Changed, "#dest")
    def dest_changed(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or self.outcomes is not None:
            return
        host, _, pool = str(event.value).partition("\0")
        self.dest = (host, pool)
        self.replan()

    @on(Select.Changed, "#wipe")
    def wipe_changed(self, event: Select.Changed) -> None:
        if self.outcomes is None and str(event.value) != self.wipe:
            self.wipe = str(event.value)
            self.replan()

    @on(Input.Submitted, "#directory, #size")
    def parameter_entered(self, event: Input.Submitted) -> None:
        if self.outcomes is not None or self.busy:
            return
        value = event.value.strip()
        planned = self.new_size if event.input.id == "size" else self.directory
        if self.plan is not None and value == planned:
            if self.count:
                self.query_one("#queue", Button).focus()
            return
        if event.input.id == "size":
            try:
                resize_target(value)
            except ValueError as err:
                self.show_error(f"size: {err}")
                return
            self.new_size = value
        else:
            self.directory = value
        self.replan()

    @work(thread=True, exclusive=True, group="bulk-plan")
    def make_plan(self) -> None:
        try:
            plan = plan_bulk(self.inventory, self.runner, self.action, self.marks,
                             dest=self.dest, directory=self.directory, size=self.new_size,
                             wipe=self.wipe)
        except (StorageError, ValueError) as err:
            self.post_message(BulkFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(BulkFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(BulkPlanned(plan))

    @on(BulkPlanned)
    def planned(self, message: BulkPlanned) -> None:
        self.plan = message.plan
        self.show_plan(message.plan)

    @on(BulkFailed)
    def plan_failed(self, message: BulkFailed) -> None:
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        self.show_error(message.text)

    def show_plan(self, plan: BulkPlan) -> None:
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        self.query_one("#plan", Static).update(plan_table(plan))
        queue = self.query_one("#queue", Button)
        question = self.query_one("#question", Static)
        typed = self.query_one("#typed", Input)
        count = self.count
        s = "s" if count != 1 else ""
        checking = bool(plan.checks)
        queue.label = f"Check {count} volume{s}" if checking else f"Queue {count} job{s}"
        queue.set_class(not count, "-hidden")
        held = self.data_held
        if not count:
            question.update("Nothing can be done: see why above.")
        elif held:
            verb = "holds" if held == 1 else "hold"
            question.update(f"{held} of the volumes {verb} data. Type {held} to delete them.")
        elif checking:
            question.update(f"Check the {count} volume{s}? Nothing is written. (y / esc)")
        else:
            keys = "(enter, then y / esc)" if self.text_parameter is not None else "(y / esc)"
            if count > 1 and self.runner is not None:
                # Said before confirming: how many run at once is the config's, not the plan's.
                question.update(f"Queue the {count} jobs? At most {self.runner.per_pool} run "
                                f"at once in a pool, {self.runner.per_host} on a host (\\[jobs] "
                                f"in config.toml). {keys}")
            else:
                question.update(f"Queue the {count} job{s}? {keys}")
        typed.set_class(bool(held), "-shown")
        queue.disabled = (bool(held) and typed.value != str(held)) or not count
        if held:
            typed.focus()
        elif self.text_parameter is not None:
            # Typing goes on into the field (a "y" in a path must not queue the jobs to
            # the old one): Enter with the planned value moves on to the Queue button.
            self.text_parameter.focus()
        elif count:
            queue.focus()
        self.refresh_bindings()

    @property
    def text_parameter(self) -> Input | None:
        """The typed parameter (archive directory, new size), if this action has one."""
        wanted = PARAMETERS.get(self.action, ("", ""))[1]
        found = self.query(f"#param-row #{wanted}").results(Input) if wanted else iter(())
        return next(iter(found), None)

    @on(Input.Changed, "#typed")
    def typed_changed(self, event: Input.Changed) -> None:
        if self.plan is not None and self.plan.jobs:
            self.query_one("#queue", Button).disabled = event.value != str(self.data_held)

    @on(Input.Submitted, "#typed")
    def typed_enter(self) -> None:
        self.action_confirm()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm":
            return (self.plan is not None and bool(self.count) and not self.busy
                    and self.outcomes is None and not self.data_held)
        return True

    @on(Button.Pressed, "#queue")
    def action_confirm(self) -> None:
        plan = self.plan
        if plan is None or self.busy or self.outcomes is not None or not self.count:
            return
        if plan.jobs and self.runner is None:
            return
        held = self.data_held
        if held and self.query_one("#typed", Input).value != str(held):
            return
        self.outcomes = {}
        self.busy = True
        self.query_one("#queue", Button).add_class("-hidden")
        self.query_one("#typed", Input).remove_class("-shown")
        for field in self.query("#param-row Input, #param-row Select"):
            field.disabled = True
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#close", Button).label = "Close"
        self.query_one("#close", Button).focus()
        if plan.checks:
            self.query_one("#question", Static).update("Checking…")
            self.run_check(plan)
            return
        self.update_summary()
        self.carry_out(plan)

    @work(thread=True, exclusive=True, group="bulk-run")
    def run_check(self, plan: BulkPlan) -> None:
        journal = self.runner.journal if self.runner is not None else None
        try:
            self.post_message(BulkChecked(check_marked(self.inventory, journal,
                                                       plan.checks)))
        except Exception as err:  # never a traceback in the console
            self.post_message(BulkFailed(f"{type(err).__name__}: {err}"))
        finally:
            self.post_message(BulkFinished())

    @on(BulkChecked)
    def checked(self, message: BulkChecked) -> None:
        self.report = report = message.report
        refused = self.plan.refused if self.plan is not None else ()
        self.query_one("#plan", Static).update(check_table(report, refused))
        states = [c.health.state for c in report.volumes]
        words = [f"{states.count(state)} {state}" for state in HealthState
                 if state in states]
        if report.errors:
            words.append(f"{len(report.errors)} not checked")
        if self.plan is not None and self.plan.refused:
            words.append(f"{len(self.plan.refused)} refused")
        self.query_one("#question", Static).update("Summary: " + ", ".join(words))

    @work(thread=True, exclusive=True, group="bulk-run")
    def carry_out(self, plan: BulkPlan) -> None:
        runner = self.runner
        assert runner is not None
        try:
            carry_out(runner, plan, lambda o: self.post_message(BulkProgress(o)))
        except Exception as err:  # never a traceback in the console
            self.post_message(BulkFailed(f"{type(err).__name__}: {err}"))
        finally:
            self.post_message(BulkFinished())

    @on(BulkProgress)
    def progressed(self, message: BulkProgress) -> None:
        assert self.outcomes is not None
        outcome = message.outcome
        if outcome.job is not None and outcome.index not in self.outcomes:
            self.submitted.append(outcome.job)
        self.outcomes[outcome.index] = outcome
        self.update_summary()

    @on(BulkFinished)
    def all_finished(self) -> None:
        self.finished = True
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        self.update_summary()

    def update_summary(self) -> None:
        plan, outcomes = self.plan, self.outcomes
        if plan is None or outcomes is None:
            return
        title = f"{ACTIONS[self.action]} {len(self.marks)} marked volumes: " \
            f"{'summary' if self.finished else 'running'}"
        self.query_one("#dialog").border_title = title
        if plan.checks:
            return  # the check's summary is its report
        self.query_one("#plan", Static).update(plan_table(plan, outcomes))
        done = sum(1 for o in outcomes.values() if o.succeeded)
        failed = sum(1 for o in outcomes.values() if o.ended and not o.succeeded)
        running = len(plan.jobs) - done - failed
        words = [f"{done} done", f"{failed} failed"]
        if running:
            words.append(f"{running} to go")
        if plan.refused:
            words.append(f"{len(plan.refused)} refused")
        self.query_one("#question", Static).update(
            ("Summary: " if self.finished else "Running: ") + ", ".join(words))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        """Closing while jobs run leaves them running: the jobs panel follows them."""
        self.dismiss(self.submitted)
