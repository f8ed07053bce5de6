"""One line under the volume table while volumes are marked: how many, in how many
pools, their total size, and the keys that act on them. Hidden when nothing is marked."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from console.marks import Marks
from console.ui.widgets.volume_table import MARKED
from console.units import format_size

# The keys that act on every marked volume, from the most to the fewest words.
WORDS = " · d delete · n snapshot · y copy · esc clears"
KEYS = " · d n y a e f F K act on them · esc clears"
ESC = " · esc clears"


class MarkBar(Widget):
    DEFAULT_CSS = """
    MarkBar {
        height: 1;
        padding: 0 1;
        background: $accent 30%;
        color: $foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        display: none;
    }
    MarkBar.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.marks = Marks()

    def show_marks(self, marks: Marks) -> None:
        self.marks = marks
        self.set_class(bool(marks), "-shown")
        self.refresh()

    def render(self) -> Text:
        marks = self.marks
        count, places = len(marks), marks.places()
        where = f" in {places} pools" if places > 1 else ""
        size = f" · {format_size(marks.capacity)}"
        allocated = f" ({format_size(marks.allocation)} allocated)"
        # The footer has no room for esc at 80 columns: this line must keep it, so the
        # words give way first, then the allocation.
        width = self.content_region.width
        for middle, keys in ((size + allocated, WORDS), (size, WORDS), (size + allocated, KEYS),
                             (size, KEYS), (size, ESC)):
            if len(f"{MARKED} {count:,} marked{where}{middle}{keys}") <= width:
                break
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(f"{MARKED} {count:,} marked{where}", "bold")
        text.append(middle)
        text.append(keys, "dim")
        return text
