"""The ``:`` command line drawn: one line docked at the bottom, hidden until ``:``.

Enter parses the line (``console.ui.command_line``) and posts ``CommandBar.Run`` for the
screen to carry out, or shows what went wrong in the line itself; esc closes; up/down
walk the history; tab completes command words and host/pool names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input
from textual.widgets.input import Selection

from console.ui.command_line import Command, CommandError, History, completions, parse

# The configured names, read when the line needs them (hosts, (host, pool) pairs).
Names = Callable[[], tuple[Sequence[str], Sequence[tuple[str, str]], str | None]]


class CommandBar(Input):
    """``:host NAME``, ``:pool NAME``, ``:jobs``, ``:fixes``, ``:audit``, ``:q``."""

    HELP_ORDER: ClassVar[int] = 4
    HELP_TITLE: ClassVar[str] = "Command line (after :)"
    HELP_OWN_ONLY: ClassVar[bool] = True  # the editing keys are every text field's

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("up", "older", "Older command", show=False),
        Binding("down", "newer", "Newer command", show=False),
        Binding("tab", "complete", "Complete"),
    ]

    DEFAULT_CSS = """
    CommandBar {
        display: none;
        height: 1;
        &.-open { display: block; }
        &.-error { color: $error; }
    }
    """

    class Run(Message):
        """A parsed command for the screen to carry out."""

        def __init__(self, command: Command) -> None:
            super().__init__()
            self.command = command

    def __init__(self, names: Names, *, id: str | None = None) -> None:
        super().__init__(placeholder=":host NAME  :pool NAME  :jobs  :fixes  :audit  :q",
                         id=id, compact=True, select_on_focus=False)
        self.names = names
        self.history = History()
        self._choices: list[str] = []
        self._choice = 0
        self._error = ""  # the answer shown in the line, selected so typing replaces it
        self._return_to: Widget | None = None

    def open(self) -> None:
        focused = self.screen.focused
        self._return_to = focused if focused is not self else self._return_to
        self.value = ":"
        self.cursor_position = 1
        self.remove_class("-error")
        self.add_class("-open")
        self.focus()

    def action_close(self) -> None:
        self.value = ""
        self._error = ""
        self.remove_class("-open", "-error")
        if self.screen.focused is self:
            back = self._return_to
            if back is not None and back.is_attached and back.display:
                back.focus()
            else:
                self.screen.focus_next()

    def action_older(self) -> None:
        self.show(self.history.older(self.value))

    def action_newer(self) -> None:
        line = self.history.newer()
        if line is not None:
            self.show(line)

    def action_complete(self) -> None:
        if self._choices and self.value in self._choices:  # tab again: the next one
            self._choice = (self._choices.index(self.value) + 1) % len(self._choices)
        else:
            hosts, pools, _ = self.names()
            self._choices = completions(self.value, hosts, pools)
            self._choice = 0
        if self._choices:
            self.show(self._choices[self._choice])

    def show(self, line: str) -> None:
        self._error = ""
        self.value = line
        self.cursor_position = len(line)
        self.remove_class("-error")

    @on(Input.Changed)
    def changed(self, event: Input.Changed) -> None:
        if event.value not in self._choices:
            self._choices = []
        if self._error and event.value != self._error:
            self._error = ""
            self.remove_class("-error")
        if not self.value and self.has_class("-open"):  # not a stale event of a close
            self.action_close()  # backspace over the ':' leaves, as in vim

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._error and event.value == self._error:
            self.action_close()  # enter on the answer: done reading it
            return
        hosts, pools, current_host = self.names()
        try:
            command = parse(event.value, hosts, pools, current_host=current_host)
        except CommandError as err:
            self.history.add(event.value)
            self._error = str(err)
            self.value = self._error  # one line, in place; typing replaces it
            self.selection = Selection(len(self._error), 0)  # the start shows
            self.add_class("-error")
            return
        self.history.add(event.value)
        self.action_close()
        self.post_message(self.Run(command))
