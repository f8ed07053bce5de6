"""Delete a volume, after re-reading it from disk.

The plan comes first (in a worker): a volume others are based on is refused, with their
names, leaves first, unless "also delete the N volumes based on it" is ticked (a new
plan, for all of them); what holds data needs the volume's exact name typed; what holds
none needs a y. A wipe (zero or random) overwrites the data before each unlink, where
the driver can. The confirmation submits a delete job (which checks all that again on
disk); the dialog closes once the job is in the journal.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Select, Static

from backends.contract import StorageError
from backends.model import Pool
from console.inventory import DeletePlan, Inventory
from console.jobs.journal import JobRecord
from console.jobs.operations import DeleteVolume
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.messages import JobSubmitted, OperationFailed
from console.ui.screens.dialog import DialogScreen
from console.ui.screens.plan import volume_summary

WIPES = (("none: unlink only", "none"), ("zero: overwrite the data with zeroes", "zero"),
         ("random: overwrite the data with random bytes", "random"))
LISTED = 10  # dependants named in the dialog; the rest are counted


class PlanReady(Message):
    def __init__(self, plan: DeletePlan) -> None:
        super().__init__()
        self.plan = plan


class DeleteVolumeScreen(DialogScreen[JobRecord | None]):
    """Dismissed with the submitted delete job, or None when cancelled or refused."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("y", "confirm", "Yes, delete"),
        Binding("n", "cancel", "No"),
    ]

    DEFAULT_CSS = """
    DeleteVolumeScreen {
        #dialog { border: round $error; border-title-color: $error; }
        #what { height: auto; margin: 1 0 0 0; }
        #question { height: auto; margin: 1 0 0 0; }
        #refused { height: auto; margin: 1 0 0 0; color: $error; display: none; }
        #dependants { height: auto; margin: 1 0 0 0; display: none; }
        #with-dependants { border: none; padding: 0; height: 1; background: $surface;
                           display: none; }
        #wipe-row { height: 1; margin: 1 0 0 0; display: none; }
        #wipe-row Label { width: 6; color: $text-muted; }
        #wipe-row Select { width: 1fr; }
        #confirm { display: none; margin: 1 0 0 0; }
        #question { display: none; }
        LoadingIndicator { height: 1; }
        #refused.-shown, #confirm.-shown, #question.-shown, #dependants.-shown,
        #with-dependants.-shown { display: block; }
        #wipe-row.-shown { display: block; layout: horizontal; }
        LoadingIndicator.-hidden, #delete.-hidden { display: none; }
    }
    """

    def __init__(self, inventory: Inventory, runner: Runner, pool: Pool, name: str, *,
                 cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.runner = runner
        self.pool = pool
        self.volume_name = name
        self.cursor_blink = cursor_blink
        self.can_wipe = inventory.capabilities(pool).wipe
        self.plan: DeletePlan | None = None
        self.plans: dict[bool, DeletePlan] = {}  # by with_dependants
        self.busy = True  # until the plan is read from disk

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Delete {printable(self.volume_name)}"
            yield Static(f"checking {printable(self.volume_name)} on disk…", id="what")
            yield LoadingIndicator()
            yield Static("", id="refused")
            yield Static("", id="dependants")
            yield Checkbox("", id="with-dependants", compact=True)
            with Horizontal(id="wipe-row"):
                yield Label("wipe")
                yield Select(WIPES, value="none", allow_blank=False, id="wipe", compact=True)
            yield Static("", id="question")
            yield Input(placeholder="type the volume's name", id="confirm", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Delete", id="delete", variant="error", compact=True,
                             disabled=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm", Input).cursor_blink = self.cursor_blink
        self.query_one("#cancel", Button).focus()
        self.make_plan(False)

    @work(thread=True, exclusive=True, group="delete")
    def make_plan(self, with_dependants: bool) -> None:
        try:
            plan = self.inventory.plan_delete(self.pool.host, self.pool.name,
                                              self.volume_name,
                                              with_dependants=with_dependants)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(PlanReady(plan))

    @on(PlanReady)
    def plan_ready(self, message: PlanReady) -> None:
        plan = self.plan = message.plan
        self.plans[plan.with_dependants] = plan
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        for widget in self.query("Input, Button, Checkbox, Select"):
            widget.disabled = False
        volume = plan.volume
        self.query_one("#what", Static).update(
            f"{volume_summary(volume)}\n{printable(volume.path)}")
        self.show_plan(plan)

    def show_plan(self, plan: DeletePlan) -> None:
        """The dialog for ``plan``: refused, offering its dependants, or asking."""
        question = self.query_one("#question", Static)
        refused = self.query_one("#refused", Static)
        delete = self.query_one("#delete", Button)
        cancel = self.query_one("#cancel", Button)
        field = self.query_one("#confirm", Input)
        dependants = self.query_one("#dependants", Static)
        offer = self.query_one("#with-dependants", Checkbox)
        count = len(plan.dependants)
        if count and not plan.in_use:
            # Leaves first, as they would be deleted: the volume itself goes last.
            names = "\n".join(f"  • {printable(p)}" for p in plan.dependants[:LISTED])
            more = f"\n  … and {count - LISTED} more" if count > LISTED else ""
            head = "deletes, leaves first, then the volume itself:" if plan.with_dependants \
                else f"{count} volume(s) are based on it (leaves first):"
            dependants.update(f"{head}\n{names}{more}")
            offer.label = f"also delete the {count} volume(s) based on it"
            with offer.prevent(Checkbox.Changed):
                offer.value = plan.with_dependants
        dependants.set_class(bool(count and not plan.in_use), "-shown")
        offer.set_class(bool(count and not plan.in_use), "-shown")
        reason = plan.refused
        refused.set_class(bool(reason), "-shown")
        self.query_one("#wipe-row").set_class(self.can_wipe and not reason, "-shown")
        question.remove_class("-shown")
        field.remove_class("-shown")
        delete.set_class(bool(reason), "-hidden")
        delete.disabled = True
        cancel.label = "Cancel"
        if reason and plan.in_use:
            refused.update(f"Refused: {reason}")
            cancel.label = "Close"
            cancel.focus()
        elif reason:
            refused.update(f"Refused: {reason}\nD on the console shows what depends on it, "
                           "in every pool.")
            offer.focus()
        elif plan.holds_data:
            question.update("It holds data. Type its exact name to delete it:"
                            if len(plan.order) == 1 else
                            f"The {len(plan.order)} volumes hold data. Type "
                            f"{printable(self.volume_name)}'s exact name to delete them all:")
            question.add_class("-shown")
            field.add_class("-shown")
            delete.disabled = field.value != self.volume_name
            field.focus()
        else:
            what = "It holds" if len(plan.order) == 1 else \
                f"The {len(plan.order)} volumes hold"
            question.update(f"{what} no data. Delete {'it' if len(plan.order) == 1 else 'them'}?"
                            " (y / n)")
            question.add_class("-shown")
            delete.disabled = False
        self.refresh_bindings()

    @on(Checkbox.Changed, "#with-dependants")
    def dependants_toggled(self, event: Checkbox.Changed) -> None:
        if self.busy:
            return
        cached = self.plans.get(event.value)
        if cached is not None:
            self.plan = cached
            self.show_plan(cached)
            return
        self.busy = True
        for widget in self.query("Input, Button, Checkbox, Select"):
            widget.disabled = True
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.make_plan(event.value)

    def wipe(self) -> str | None:
        if not self.can_wipe:
            return None
        value = str(self.query_one("#wipe", Select).value)
        return None if value == "none" else value

    @on(Input.Changed, "#confirm")
    def typed(self, event: Input.Changed) -> None:
        self.query_one("#delete", Button).disabled = event.value != self.volume_name

    @on(Input.Submitted, "#confirm")
    def typed_enter(self) -> None:
        self.action_confirm()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm":
            plan = self.plan
            return (plan is not None and not self.busy and not plan.refused
                    and not plan.holds_data)
        return True

    @on(Button.Pressed, "#delete")
    def action_confirm(self) -> None:
        plan = self.plan
        if plan is None or self.busy or plan.refused:
            return
        typed = self.query_one("#confirm", Input).value if plan.holds_data else None
        if plan.holds_data and typed != self.volume_name:
            return
        self.busy = True
        for widget in self.query("Input, Button, Checkbox, Select"):
            widget.disabled = True
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#error", Static).remove_class("-shown")
        self.delete(DeleteVolume(self.pool.host, self.pool.name, self.volume_name,
                                 typed_name=typed, wipe=self.wipe(),
                                 with_dependants=plan.with_dependants))

    @work(thread=True, exclusive=True, group="delete")
    def delete(self, op: DeleteVolume) -> None:
        try:
            job = self.runner.submit(op)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(JobSubmitted(job))

    @on(OperationFailed)
    def failed(self, message: OperationFailed) -> None:
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        error = self.query_one("#error", Static)
        error.update(message.text)
        error.add_class("-shown")
        for widget in self.query("Input, Button, Checkbox, Select"):
            widget.disabled = False
        if self.plan is not None:
            self.show_plan(self.plan)  # as it was before the attempt
            return
        # Nothing was checked, so nothing can be deleted: say so, offer only Close.
        self.query_one("#what", Static).update(
            f"could not check {printable(self.volume_name)} on disk:")
        self.query_one("#delete", Button).add_class("-hidden")
        self.query_one("#cancel", Button).label = "Close"
        self.query_one("#cancel", Button).focus()
        self.refresh_bindings()

    @on(JobSubmitted)
    def submitted(self, message: JobSubmitted) -> None:
        self.dismiss(message.job)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self.busy or self.plan is None:
            self.dismiss(None)
