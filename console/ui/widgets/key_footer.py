"""The footer: Textual's, cut to its width.

Textual's footer lays every shown key out in one row and docks the palette key over its
right end: keys that do not fit run on under the palette key, and in the compact style
(under 110 columns) the palette key's ``margin-right: 1`` left the last column open, so
the letter of an overflowing key that fell there showed after it ("^p palettee").
This footer shows only the keys that fit, the focused panel's first, then ``?`` and
``J``, then the screen's in their order; the palette key reaches the edge. Every key
dropped here is in the help screen (tests/test_ui_terminal.py checks).
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Kept before the screen's other keys, whatever has the focus.
KEEP: frozenset[str] = frozenset({"help", "jobs"})


def key_width(key_display: str, description: str, *, compact: bool) -> int:
    """Cells a (non-grouped) FooterKey takes with its margin, as Textual's CSS lays it
    out (pinned Textual: compact ``k desc`` + margin 1, else `` k desc `` no margin)."""
    words = cell_len(description)
    if compact:
        return cell_len(key_display) + (1 + words if description else 0) + 1
    return 1 + cell_len(key_display) + 1 + (words + 1 if description else 0)


class KeyFooter(Footer):
    """Shows the keys that fit the width, the focused widget's first."""

    DEFAULT_CSS: ClassVar[str] = """
    KeyFooter.-compact FooterKey.-command-palette {
        margin-right: 0;
        padding-right: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.composed_width = 0

    def compose(self) -> ComposeResult:
        # The console binds no key groups: Textual's footer yields plain FooterKeys.
        keys = [key for key in super().compose() if isinstance(key, FooterKey)]
        palette = [key for key in keys if key.has_class("-command-palette")]
        keys = [key for key in keys if key not in palette]
        if not keys:  # the bindings are not ready yet (Textual composes an empty footer)
            yield from palette
            return
        width = self.size.width or self.app.size.width
        self.composed_width = width  # a resize to another width composes again
        # The palette key: a border, its words, padding 1 (no margin: it ends the line).
        room = width - sum(key_width(key.key_display, key.description, compact=self.compact)
                           + 2 - (1 if self.compact else 0) for key in palette)
        focused = {binding.action for node, binding, _, _ in
                   self.screen.active_bindings.values() if node is self.screen.focused}

        def rank(key: FooterKey) -> int:
            return 0 if key.action in focused else 1 if key.action in KEEP else 2

        widths = [key_width(key.key_display, key.description, compact=self.compact)
                  for key in keys]
        shown = set(range(len(keys)))
        used = sum(widths)
        # The least wanted go first, the last of them first.
        for index in sorted(shown, key=lambda i: (-rank(keys[i]), -i)):
            if used <= room:
                break
            shown.discard(index)
            used -= widths[index]
        yield from (key for i, key in enumerate(keys) if i in shown)
        yield from palette

    def on_resize(self, event: events.Resize) -> None:
        if self.composed_width and event.size.width != self.composed_width:
            self.call_after_refresh(self.recompose)
