"""One plan for an action on the marked volumes, one confirmation, then a summary.

The plan (``console.bulk.plan_bulk``, in a thread worker) lists each job it will queue in
the order it runs, what is refused and why, and the space each pool gains or loses. A
copy asks for its destination pool first (changing it plans again). Deletes that hold
data need the number of volumes typed. Once confirmed, ``carry_out`` queues the jobs
wave by wave in a worker, and the same screen becomes the summary: each job's state
as it ends, with the reason of each failure. Dismissed with the jobs it submitted.
"""

from __future__ import annotations

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
from backends.model import Pool
from console.bulk import ACTIONS, BulkPlan, Outcome, carry_out, plan_bulk
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState
from console.jobs.operations import DeleteVolume
from console.jobs.runner import Runner
from console.marks import Mark
from console.ui.cells import printable
from console.ui.screens.dialog import DialogScreen
from console.units import format_size


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


def signed_size(change: int) -> str:
    if change < 0:
        return f"frees {format_size(-change)}"
    return f"takes {format_size(change)}" if change else "no change"


def plan_table(plan: BulkPlan, outcomes: dict[int, Outcome] | None = None) -> Table:
    """Jobs in the order they run (a delete's dependants first), then the refusals, then
    the space per pool; with ``outcomes``, each job's state instead of its wave."""
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
    if not plan.jobs:
        table.add_row("", "[b]nothing to queue[/]", "")
    if plan.refused:
        table.add_row("", "", "")
        table.add_row("", f"[b red]refused ({len(plan.refused)})[/]", "")
        for refusal in plan.refused:
            table.add_row("✗", Text.assemble(
                (f"{printable(refusal.volume)}", "bold"),
                (f"  {printable(refusal.host)} › {printable(refusal.pool)}", "dim")), "")
            table.add_row("", Text(printable(refusal.reason), style="red"), "")
    if plan.effects:
        table.add_row("", "", "")
        table.add_row("", f"[b]space: {signed_size(plan.change)} in all[/]", "")
        for effect in plan.effects:
            free = "" if effect.available is None else \
                f", {format_size(effect.available - effect.reserved)} free now"
            table.add_row("", f"{printable(effect.host)} › {printable(effect.pool)}: "
                          f"{signed_size(effect.change)}{free}", "")
    return table


class BulkPlanScreen(DialogScreen[list[JobRecord]]):
    """Dismissed with the jobs it submitted (empty when cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Cancel"),
        Binding("y", "confirm", "Queue the jobs"),
    ]

    DEFAULT_CSS = """
    BulkPlanScreen {
        #dialog { width: 100; height: auto; max-height: 100%; }
        #dest-row { height: 1; margin: 1 0 0 0; display: none; }
        #dest-row.-shown { display: block; layout: horizontal; }
        #dest-row Static { width: 8; color: $text-muted; }
        #dest-row Select { width: 1fr; }
        #body { height: auto; max-height: 60vh; margin: 1 0 0 0; }
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
                 plan: BulkPlan | None = None, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.runner = runner
        self.action = action
        self.marks = marks
        self.dest = dest
        self.plan = plan
        self.cursor_blink = cursor_blink
        self.outcomes: dict[int, Outcome] | None = None  # once confirmed
        self.submitted: list[JobRecord] = []
        self.finished = False
        self.busy = plan is None

    @property
    def data_held(self) -> int:
        """How many delete jobs are of volumes holding data (typed to confirm)."""
        plan = self.plan
        return 0 if plan is None else sum(
            1 for j in plan.jobs if isinstance(j.op, DeleteVolume) and j.op.typed_name)

    def destinations(self) -> list[tuple[str, str]]:
        """Pools a copy can go to: those of the marked volumes' hosts."""
        hosts = {m.host for m in self.marks}
        pools: list[Pool] = [p for p in self.inventory.pools() if p.host in hosts]
        return [(f"{printable(p.host)} › {printable(p.name)}", f"{p.host}\0{p.name}")
                for p in pools]

    def compose(self) -> ComposeResult:
        count = len(self.marks)
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"{ACTIONS[self.action]} {count} marked volume" \
                f"{'s' if count != 1 else ''}: the plan"
            with Horizontal(id="dest-row"):
                yield Static("copy to")
                yield Select(self.destinations(), prompt="choose a pool", id="dest",
                             compact=True)
            yield LoadingIndicator()
            with VerticalScroll(id="body"):
                yield Static("", id="plan")
            yield Static("", id="question")
            yield Input(placeholder="the number of volumes", id="typed", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Queue", id="queue", variant="warning", compact=True,
                             disabled=True)
                yield Button("Cancel", id="close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#typed", Input).cursor_blink = self.cursor_blink
        self.query_one("#close", Button).focus()
        if self.action == "copy":
            self.query_one("#dest-row").add_class("-shown")
            if self.dest is not None:
                with self.prevent(Select.Changed):
                    self.query_one("#dest", Select).value = "\0".join(self.dest)
            else:
                self.busy = False
                self.query_one(LoadingIndicator).add_class("-hidden")
                self.query_one("#plan", Static).update("choose the pool to copy them to")
                self.query_one("#dest", Select).focus()
                return
        if self.plan is not None:
            self.show_plan(self.plan)
        else:
            self.make_plan()

    @on(Select.Changed, "#dest")
    def dest_changed(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or self.outcomes is not None:
            return
        host, _, pool = str(event.value).partition("\0")
        self.dest = (host, pool)
        self.busy = True
        self.plan = None
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#queue", Button).disabled = True
        self.make_plan()

    @work(thread=True, exclusive=True, group="bulk-plan")
    def make_plan(self) -> None:
        try:
            plan = plan_bulk(self.inventory, self.runner, self.action, self.marks,
                             dest=self.dest)
        except StorageError as err:
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
        error = self.query_one("#error", Static)
        error.update(message.text)
        error.add_class("-shown")

    def show_plan(self, plan: BulkPlan) -> None:
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        self.query_one("#plan", Static).update(plan_table(plan))
        queue = self.query_one("#queue", Button)
        question = self.query_one("#question", Static)
        typed = self.query_one("#typed", Input)
        jobs = len(plan.jobs)
        queue.label = f"Queue {jobs} job{'s' if jobs != 1 else ''}"
        queue.set_class(not jobs, "-hidden")
        held = self.data_held
        if not jobs:
            question.update("Nothing can be done: see why above.")
        elif held:
            question.update(f"{held} of the volumes hold data. Type {held} to delete them.")
        else:
            question.update(f"Queue the {jobs} job{'s' if jobs != 1 else ''}? (y / esc)")
        typed.set_class(bool(held), "-shown")
        queue.disabled = (bool(held) and typed.value != str(held)) or not jobs
        if held:
            typed.focus()
        elif jobs:
            queue.focus()
        self.refresh_bindings()

    @on(Input.Changed, "#typed")
    def typed_changed(self, event: Input.Changed) -> None:
        if self.plan is not None and self.plan.jobs:
            self.query_one("#queue", Button).disabled = event.value != str(self.data_held)

    @on(Input.Submitted, "#typed")
    def typed_enter(self) -> None:
        self.action_confirm()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm":
            plan = self.plan
            return (plan is not None and bool(plan.jobs) and not self.busy
                    and self.outcomes is None and not self.data_held)
        return True

    @on(Button.Pressed, "#queue")
    def action_confirm(self) -> None:
        plan = self.plan
        if plan is None or self.busy or self.outcomes is not None or not plan.jobs \
                or self.runner is None:
            return
        held = self.data_held
        if held and self.query_one("#typed", Input).value != str(held):
            return
        self.outcomes = {}
        self.busy = True
        self.query_one("#queue", Button).add_class("-hidden")
        self.query_one("#typed", Input).remove_class("-shown")
        self.query_one("#dest", Select).disabled = True
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#close", Button).label = "Close"
        self.query_one("#close", Button).focus()
        self.update_summary()
        self.carry_out(plan)

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
        self.query_one("#dialog").border_title = \
            f"{ACTIONS[self.action]} {len(self.marks)} marked volumes: " \
            f"{'summary' if self.finished else 'running'}"

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        """Closing while jobs run leaves them running: the jobs panel follows them."""
        self.dismiss(self.submitted)
