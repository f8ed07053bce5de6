"""A list of lines with a cursor: a Line-API ScrollView that draws only the visible
lines, so a hundred thousand of them scroll like ten. The chain view and the fixes list
are this, each with its own lines and painting (``line_text``)."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.ui.widgets.cursor_keys import CursorKeys, cursor_bindings

LineT = TypeVar("LineT")


class LineList(CursorKeys, ScrollView, Generic[LineT], can_focus=True):
    """``COMPONENT`` prefixes the component classes a subclass declares; it must have
    ``<COMPONENT>--cursor`` and ``<COMPONENT>--empty``."""

    COMPONENT: ClassVar[str] = ""

    BINDINGS: ClassVar[list[BindingType]] = [*cursor_bindings()]

    def __init__(self, *, empty_text: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[LineT] = []
        self.cursor = 0
        self.empty_text = empty_text

    def set_lines(self, lines: list[LineT], *, empty_text: str, cursor: int) -> None:
        self.lines = lines
        self.empty_text = empty_text
        self.virtual_size = Size(1, len(lines))
        self.cursor = -1
        self.refresh()
        self._set_cursor(cursor)

    def part(self, name: str) -> Style:
        """A component's colours and text style, without its background (the widget's,
        left to the cursor). The full style blends translucent colours ($text-muted);
        partial ones come out white."""
        full = self.get_component_rich_style(f"{self.COMPONENT}--{name}")
        return Style(color=full.color, bold=full.bold, italic=full.italic,
                     underline=full.underline, dim=full.dim)

    def line_text(self, line: LineT) -> Text:
        raise NotImplementedError

    # -- cursor -----------------------------------------------------------------------

    @property
    def visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height)

    def _set_cursor(self, index: int) -> None:
        index = max(0, min(index, len(self.lines) - 1))
        top = round(self.scroll_y)
        self.refresh_line(self.cursor)  # a line of the list: refresh_line takes off the scroll
        self.cursor = index
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + self.visible_rows:
            self.scroll_to(y=index - self.visible_rows + 1, animate=False)
        self.refresh_line(index)

    @property
    def cursor_rows(self) -> int:
        return len(self.lines)

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None:
            self._set_cursor(round(self.scroll_y) + offset.y)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    # -- painting -----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        index = round(self.scroll_y) + y
        if not self.lines:
            if y == 0 and self.empty_text:
                style = self.get_component_rich_style(f"{self.COMPONENT}--empty")
                return self._strip(Text(" " + self.empty_text, style=style), width, base)
            return Strip.blank(width, base)
        if not 0 <= index < len(self.lines):
            return Strip.blank(width, base)
        text = self.line_text(self.lines[index])
        if index == self.cursor:
            text.stylize(self.get_component_rich_style(f"{self.COMPONENT}--cursor"))
        return self._strip(text, width, base)

    def _strip(self, text: Text, width: int, base: Style) -> Strip:
        text.truncate(width, overflow="ellipsis")
        return Strip(list(text.render(self.app.console))).apply_style(base) \
            .extend_cell_length(width, base).crop(0, width)
