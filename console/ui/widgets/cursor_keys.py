"""The cursor keys of a list (up/down, pages, half pages, first/last), shared by the
Line-API lists: each says how many rows it has, how many are in sight, and how to move
its cursor."""

from __future__ import annotations

from textual.binding import Binding


def cursor_bindings(first: str = "First", last: str = "Last") -> list[Binding]:
    """The keys for ``CursorKeys``' actions; ``first`` and ``last`` describe home/end."""
    return [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("ctrl+u", "half_page_up", "Half a page up", show=False),  # as in vim
        Binding("ctrl+d", "half_page_down", "Half a page down", show=False),
        Binding("home,g", "first", first, show=False),
        Binding("end,G", "last", last, show=False),
    ]


class CursorKeys:
    """Cursor actions for a widget with ``cursor``, ``visible_rows``, ``cursor_rows``
    and ``_set_cursor`` (which clamps). List it before the widget's base class: Textual's
    ``Widget`` has page actions of its own (they scroll without moving the cursor)."""

    cursor: int

    @property
    def visible_rows(self) -> int:
        raise NotImplementedError

    @property
    def cursor_rows(self) -> int:
        """How many rows the cursor can be on."""
        raise NotImplementedError

    def _set_cursor(self, index: int) -> None:
        raise NotImplementedError

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        self._set_cursor(self.cursor - self.visible_rows)

    def action_page_down(self) -> None:
        self._set_cursor(self.cursor + self.visible_rows)

    def action_half_page_up(self) -> None:
        self._set_cursor(self.cursor - max(1, self.visible_rows // 2))

    def action_half_page_down(self) -> None:
        self._set_cursor(self.cursor + max(1, self.visible_rows // 2))

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(self.cursor_rows - 1)
