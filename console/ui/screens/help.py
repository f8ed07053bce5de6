"""Every key binding, read from the bindings themselves (never a hand-kept copy)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

LEGEND = (
    ("◆", "snapshot: read-only on disk"),
    ("▶", "in use: a running QEMU holds it (destructive actions are refused)"),
    ("⟳", "a job is writing it (its name, the job, how far): a volume once the job ends"),
    ("● ◌ ○", "pool fresh / stale (seen > 5 min ago) / never scanned"),
    ("✗ ↻", "pool refresh failed / refreshing"),
    ("█ ▒ ░ ▚", "space allocated / committed to volumes / free / committed past capacity"),
    ("age", "how long ago the row was read from disk (the cache paints first)"),
)

Section = tuple[str, list[tuple[str, str]]]

# Textual's generic scrolling bindings: every scrollable widget has them; listed once.
GENERIC = {"help_quit", "scroll_left", "scroll_right", "scroll_home", "scroll_end",
           "page_left", "page_right"}


def binding_sections(app: App[Any], screen: Screen[Any]) -> list[Section]:
    """(title, [(keys, description)]) for the app, ``screen`` and its widgets that have a
    ``HELP_TITLE``; actions the node refuses now (read-only, ...) are left out."""
    nodes: list[tuple[str, DOMNode]] = [("Everywhere", app),
                                        (getattr(screen, "HELP_TITLE", "Screen"), screen)]
    widgets = [w for w in screen.query("*") if getattr(w, "HELP_TITLE", "")]
    widgets.sort(key=lambda w: int(getattr(w, "HELP_ORDER", 50)))
    nodes += [(str(getattr(w, "HELP_TITLE", "")), w) for w in widgets]
    sections: list[Section] = []
    for title, node in nodes:
        grouped: dict[str, tuple[list[str], str]] = {}
        own_only = getattr(node, "HELP_OWN_ONLY", False)  # not an Input's editing keys
        for binding in _bindings(node, own_only=own_only):
            if not binding.description or binding.action in GENERIC:
                continue
            action = binding.action.removeprefix("app.").removeprefix("screen.")
            if node.check_action(action, ()) is False:
                continue
            keys, _ = grouped.setdefault(binding.action, ([], binding.description))
            display = app.get_key_display(binding)
            if display not in keys:
                keys.append(display)
        if grouped:
            sections.append((title, [(" ".join(keys), description)
                                     for keys, description in grouped.values()]))
    return sections


def _bindings(node: DOMNode, *, own_only: bool = False) -> list[Binding]:
    """The node's bindings, those declared by this project's classes first (only
    those with ``own_only``)."""
    ours = {(b.key, b.action) for cls in type(node).__mro__
            if cls.__module__.startswith(("console.", "themes"))
            for b in Binding.make_bindings(getattr(cls, "BINDINGS", []))}
    every = [binding for bindings in node._bindings.key_to_bindings.values()
             for binding in bindings
             if not own_only or (binding.key, binding.action) in ours]
    return sorted(every, key=lambda b: (b.key, b.action) not in ours)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close help"),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        #help {
            width: 76;
            max-width: 100%;
            height: auto;
            max-height: 100%;
            background: $surface;
            border: round $primary;
            border-title-color: $primary;
            border-title-style: bold;
            border-subtitle-color: $text-muted;
            padding: 0 1;
            scrollbar-size-vertical: 1;
        }
    }
    """

    def __init__(self, sections: list[Section]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as help_box:
            help_box.border_title = "Keys"
            help_box.border_subtitle = "esc closes · ↑↓ scroll"
            yield Static(self.table())

    def table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for title, rows in self.sections:
            table.add_row(Text(title, style="underline"), "")
            for keys, description in rows:
                table.add_row(keys, description)
            table.add_row("", "")
        table.add_row(Text("Symbols", style="underline"), "")
        for symbol, meaning in LEGEND:
            table.add_row(symbol, meaning)
        return table

    def on_mount(self) -> None:
        self.query_one("#help").focus()

    def action_close(self) -> None:
        self.dismiss(None)
