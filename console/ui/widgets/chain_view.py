"""The chain forest as lines: a Line-API ScrollView drawing only the visible ones.

The lines come flattened (``console.chains.flatten``, in a thread); painting one is a
few appends, so a forest of 100,000 volumes scrolls like one of ten.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from console.chains import ChainNode, ForestLine
from console.ui.cells import printable
from console.ui.widgets.line_list import LineList
from console.units import format_size

HEALTH_MARKS = {"optimized": "●", "degraded": "▲", "broken": "✗"}
SNAPSHOT_MARK = "◆"
UNCACHED_MARK = "○"  # a link some chain names that the cache has no row for


class ChainView(LineList[ForestLine]):
    """Args:
        host: The host shown without its name (the one the console is on).
    """

    HELP_ORDER: ClassVar[int] = 1
    HELP_TITLE: ClassVar[str] = "Chains (focused)"

    COMPONENT: ClassVar[str] = "chain-view"

    BINDINGS: ClassVar[list[BindingType]] = [
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
        super().__init__(empty_text="reading the cache…", id=id)
        self.host = host

    def show(self, lines: list[ForestLine], *, empty_text: str = "",
             select: ChainNode | None = None) -> None:
        """Show ``lines``, the cursor on ``select`` (or the node it was on, or the first
        match, or the top)."""
        keep = select if select is not None else self.current
        # On a filter, the cursor goes to a match: the node it was on if it still is one.
        matches = [i for i, line in enumerate(lines) if line.match]
        kept = [i for i, line in enumerate(lines) if line.node is keep
                and (line.match or not matches)]
        self.set_lines(lines, empty_text=empty_text, cursor=(kept or matches or [0])[0])

    @property
    def current(self) -> ChainNode | None:
        return self.lines[self.cursor].node if 0 <= self.cursor < len(self.lines) else None

    def action_select(self) -> None:
        node = self.current
        if node is not None:
            self.post_message(self.Selected(node))

    def line_text(self, line: ForestLine) -> Text:
        """One node: guides, distance, marks, name, then format · size · allocation ·
        pool (@host when not this one), and the problem or "unreferenced"."""
        part = self.part
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
