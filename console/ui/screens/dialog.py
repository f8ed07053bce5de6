"""What every dialog of the console shares: a centred box with a title, an error line
and a row of buttons. Each dialog adds only its own fields."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen
from textual.widgets import Static

ResultType = TypeVar("ResultType")


class DialogScreen(ModalScreen[ResultType]):
    """Compose a ``Vertical(id="dialog")`` holding ``#error`` and ``#buttons``."""

    DEFAULT_CSS = """
    DialogScreen {
        align: center middle;
        #dialog {
            width: 72;
            max-width: 100%;
            height: auto;
            max-height: 100%;
            padding: 0 1;
            background: $surface;
            border: round $primary;
            border-title-color: $primary;
            border-title-style: bold;
        }
        #error { color: $error; height: auto; display: none; }
        #error.-shown { display: block; }
        #buttons { height: 1; margin: 1 0 0 0; align-horizontal: right; }
        #buttons Button { margin: 0 0 0 2; }
    }
    """

    def show_error(self, text: str, *, line: str = "error") -> None:
        """``text`` on the error line (or another ``Static`` with the id ``line``); the
        empty text hides it."""
        error = self.query_one(f"#{line}", Static)
        error.update(text)
        error.set_class(bool(text), "-shown")
