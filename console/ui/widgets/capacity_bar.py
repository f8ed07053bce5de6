"""A pool's space as a bar: allocated, committed (promised to volumes), free.

Committed is the sum of the volumes' capacities, so thin provisioning can take it past
the pool's capacity: the bar then grows a red tail beyond the capacity mark.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from console.units import format_size

ALLOCATED, COMMITTED, FREE, OVER = "█", "▒", "░", "▚"


@dataclass(frozen=True)
class BarStyles:
    allocated: Style
    committed: Style
    free: Style
    over: Style


def capacity_bar(capacity: int, allocation: int, committed: int, width: int,
                 styles: BarStyles) -> Text:
    """``width`` cells; glyphs differ too, so it reads without colour."""
    text = Text(no_wrap=True, overflow="crop")
    if width <= 0:
        return text
    if capacity <= 0:
        text.append("·" * width, styles.free)
        return text
    scale = max(capacity, committed, allocation)
    for cell in range(width):
        middle = (cell + 0.5) * scale / width
        if middle >= capacity:
            text.append(OVER, styles.over)
        elif middle < allocation:
            text.append(ALLOCATED, styles.allocated)
        elif middle < committed:
            text.append(COMMITTED, styles.committed)
        else:
            text.append(FREE, styles.free)
    return text


def capacity_words(capacity: int, allocation: int, available: int, committed: int) -> str:
    """``12G used · 40G committed · 60G free of 100G``; over-commit in percent."""
    if capacity <= 0:
        return "capacity unknown"
    over = f" = {100 * committed // capacity}% of capacity!" if committed > capacity else ""
    return (f"{format_size(allocation)} used · {format_size(committed)} committed{over} · "
            f"{format_size(available)} free of {format_size(capacity)}")
