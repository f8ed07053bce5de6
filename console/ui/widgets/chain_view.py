"""The chain forest as lines: a Line-API ScrollView drawing only the visible ones.

The lines come flattened (``console.chains.flatten``, in a thread); painting one is a
few appends, so a forest of 100,000 volumes scrolls like one of ten.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.chains import ChainNode, ForestLine
from console.ui.cells import printable
from console.units import format_size

HEALTH_MARKS = {"optimized": "●", "degraded": "▲", "broken": "✗"}
SNAPSHOT_MARK = "◆"
UNCACHED_MARK = "○"  # a link some chain names that the cache has no row for


class ChainView(ScrollView, can_focus=True):
    """Args:
        host: The host shown without its name (the one the console is on).
    """

    HELP_ORDER: ClassVar[int] = 1
    HELP_TITLE: ClassVar[str] = "Chains (focused)"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("enter", "select", "Go to the volume"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "chain-view--cursor",
        "chain-view--guide",
        "chain-view--muted",
        "chain-view--match",
        "chain-view--optimized",
        "chain-view--degraded",
        "chain-view--broken",
        "chain-view--problem",
        "chain-view--snapshot",
        "chain-view--distance",
        "chain-view--empty",
    }

    DEFAULT_CSS = """
    ChainView {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        & > .chain-view--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .chain-view--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .chain-view--guide { color: $text-muted; }
        & > .chain-view--muted { color: $text-muted; }
        & > .chain-view--match { text-style: bold underline; }
        & > .chain-view--optimized { color: $success; }
        & > .chain-view--degraded { color: $warning; }
        & > .chain-view--broken { color: $error; text-style: bold; }
        & > .chain-view--problem { color: $error; text-style: bold; }
        & > .chain-view--snapshot { color: $accent; }
        & > .chain-view--distance { color: $accent; text-style: bold; }
        & > .chain-view--empty { color: $text-muted; text-style: italic; }
    }
    """

    class Selected(Message):
        """Enter on a node."""

        def __init__(self, node: ChainNode) -> None:
            super().__init__()
            self.node = node

    def __init__(self, *, host: str | None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.host = host
        self.lines: list[ForestLine] = []
        self.cursor = 0
        self.empty_text = "reading the cache…"

    def show(self, lines: list[ForestLine], *, empty_text: str = "",
             select: ChainNode | None = None) -> None:
        """Show ``lines``, the cursor on ``select`` (or the node it was on, or the first
        match, or the top)."""
        keep = select if select is not None else self.current
        self.lines = lines
        self.empty_text = empty_text
        self.virtual_size = Size(1, len(lines))
        # On a filter, the cursor goes to a match: the node it was on if it still is one.
        matches = [i for i, line in enumerate(lines) if line.match]
        kept = [i for i, line in enumerate(lines) if line.node is keep
                and (line.match or not matches)]
        index = (kept or matches or [0])[0]
        self.cursor = -1
        self.refresh()
        self._set_cursor(index)

    @property
    def current(self) -> ChainNode | None:
        return self.lines[self.cursor].node if 0 <= self.cursor < len(self.lines) else None

    # -- cursor -----------------------------------------------------------------------

    @property
    def visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height)

    def _set_cursor(self, index: int) -> None:
        index = max(0, min(index, len(self.lines) - 1))
        top = round(self.scroll_y)
        self.refresh_line(self.cursor - top)
        self.cursor = index
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + self.visible_rows:
            self.scroll_to(y=index - self.visible_rows + 1, animate=False)
        self.refresh_line(index - round(self.scroll_y))

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        self._set_cursor(self.cursor - self.visible_rows)

    def action_page_down(self) -> None:
        self._set_cursor(self.cursor + self.visible_rows)

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(len(self.lines) - 1)

    def action_select(self) -> None:
        node = self.current
        if node is not None:
            self.post_message(self.Selected(node))

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
                style = self.get_component_rich_style("chain-view--empty")
                return self._strip(Text(" " + self.empty_text, style=style), width, base)
            return Strip.blank(width, base)
        if not 0 <= index < len(self.lines):
            return Strip.blank(width, base)
        text = self.line_text(self.lines[index])
        if index == self.cursor:
            text.stylize(self.get_component_rich_style("chain-view--cursor"))
        return self._strip(text, width, base)

    def _strip(self, text: Text, width: int, base: Style) -> Strip:
        text.truncate(width, overflow="ellipsis")
        return Strip(list(text.render(self.app.console))).apply_style(base) \
            .extend_cell_length(width, base).crop(0, width)

    def line_text(self, line: ForestLine) -> Text:
        """One node: guides, distance, marks, name, then format · size · allocation ·
        pool (@host when not this one), and the problem or "unreferenced"."""
        def part(name: str) -> Style:
            # The full style blends translucent colours ($text-muted); partial ones
            # come out white. The background is the widget's: left to the cursor.
            full = self.get_component_rich_style(f"chain-view--{name}")
            return Style(color=full.color, bold=full.bold, italic=full.italic,
                         underline=full.underline, dim=full.dim)

        node, entry = line.node, line.node.entry
        muted = part("muted")
        text = Text(no_wrap=True, end="")
        text.append(" " + line.guides, part("guide"))
        if node.distance:
            text.append(f"{node.distance} ", part("distance"))
        if entry.pool is None:
            text.append(UNCACHED_MARK + " ", muted)
        else:
            health = entry.health or ""
            text.append(HEALTH_MARKS.get(health, "·") + " ", part(health) if health in
                        HEALTH_MARKS else muted)
        if entry.readonly:
            text.append(SNAPSHOT_MARK + " ", part("snapshot"))
        name_style = part("problem") if entry.problem else Style()
        if line.match:
            name_style += part("match")
        text.append(printable(entry.name), name_style)
        facts = [entry.format, format_size(entry.capacity)]
        if entry.allocation is not None:
            facts.append(f"{format_size(entry.allocation)} alloc")
        where = printable(entry.pool) if entry.pool is not None else "not in the cache"
        if entry.host != self.host:
            where += f" @{printable(entry.host)}"
        facts.append(where)
        text.append("  " + " · ".join(facts), muted)
        if entry.problem:
            text.append(f"  ✗ {printable(entry.problem)}", part("problem"))
        elif node.unreferenced:
            text.append("  unreferenced", muted)
        return text
