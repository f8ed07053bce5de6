"""Delete a volume, after re-reading it from disk.

The plan comes first (in a worker): a volume others are based on is refused, with their
names; one that holds data needs its exact name typed; an empty one needs a y. The
confirmation submits a delete job (which checks all that again on disk); the dialog
closes once the job is in the journal.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, LoadingIndicator, Static

from backends.contract import StorageError
from backends.model import Pool
from console.inventory import DeletePlan, Inventory
from console.jobs.journal import JobRecord
from console.jobs.operations import DeleteVolume
from console.jobs.runner import Runner
from console.ui.cells import printable
from console.ui.messages import JobSubmitted, OperationFailed
from console.ui.screens.dialog import DialogScreen
from console.units import format_size


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
        #confirm { display: none; margin: 1 0 0 0; }
        #question { display: none; }
        LoadingIndicator { height: 1; }
        #refused.-shown, #confirm.-shown, #question.-shown { display: block; }
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
        self.plan: DeletePlan | None = None
        self.busy = True  # until the plan is read from disk

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Delete {printable(self.volume_name)}"
            yield Static(f"checking {printable(self.volume_name)} on disk…", id="what")
            yield LoadingIndicator()
            yield Static("", id="refused")
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
        self.make_plan()

    @work(thread=True, exclusive=True, group="delete")
    def make_plan(self) -> None:
        try:
            plan = self.inventory.plan_delete(self.pool.host, self.pool.name,
                                              self.volume_name)
        except StorageError as err:
            self.post_message(OperationFailed(str(err)))
        except Exception as err:  # never a traceback in the console
            self.post_message(OperationFailed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(PlanReady(plan))

    @on(PlanReady)
    def plan_ready(self, message: PlanReady) -> None:
        plan = self.plan = message.plan
        self.busy = False
        self.query_one(LoadingIndicator).add_class("-hidden")
        volume = plan.volume
        self.query_one("#what", Static).update(
            f"{printable(volume.name)}: {volume.format}, {format_size(volume.capacity)} "
            f"virtual, {format_size(volume.allocation)} allocated\n{printable(volume.path)}")
        question = self.query_one("#question", Static)
        delete = self.query_one("#delete", Button)
        if plan.refused:
            refused = self.query_one("#refused", Static)
            names = "\n".join(f"  • {printable(p)}" for p in plan.dependants[:10])
            more = f"\n  … and {len(plan.dependants) - 10} more" \
                if len(plan.dependants) > 10 else ""
            refused.update(f"Refused: {plan.refused}\n{names}{more}")
            refused.add_class("-shown")
            delete.add_class("-hidden")
            cancel = self.query_one("#cancel", Button)
            cancel.label = "Close"
            cancel.focus()
        elif plan.holds_data:
            question.update("It holds data. Type its exact name to delete it:")
            question.add_class("-shown")
            field = self.query_one("#confirm", Input)
            field.add_class("-shown")
            field.focus()
        else:
            question.update("It holds no data. Delete it? (y / n)")
            question.add_class("-shown")
            delete.disabled = False
        self.refresh_bindings()

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
        for widget in self.query("Input, Button"):
            widget.disabled = True
        self.query_one(LoadingIndicator).remove_class("-hidden")
        self.query_one("#error", Static).remove_class("-shown")
        self.delete(typed)

    @work(thread=True, exclusive=True, group="delete")
    def delete(self, typed: str | None) -> None:
        try:
            job = self.runner.submit(DeleteVolume(self.pool.host, self.pool.name,
                                                  self.volume_name, typed_name=typed))
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
        for widget in self.query("Input, Button"):
            widget.disabled = False
        if self.plan is not None and self.plan.holds_data:
            self.query_one("#delete", Button).disabled = \
                self.query_one("#confirm", Input).value != self.volume_name
        elif self.plan is None:
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
