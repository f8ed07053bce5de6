"""The cursor of a scrolled line list repaints the rows it leaves and reaches."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region

from console.ui.widgets.line_list import LineList


class Numbers(LineList[int]):
    COMPONENT: ClassVar[str] = "numbers"
    COMPONENT_CLASSES: ClassVar[set[str]] = {"numbers--cursor", "numbers--empty"}
    DEFAULT_CSS = "Numbers { height: 10; }"

    def line_text(self, line: int) -> Text:
        return Text(f"line {line}")


class NumbersApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Numbers(empty_text="none")


async def test_moving_the_cursor_after_scrolling_repaints_its_rows_on_screen() -> None:
    app = NumbersApp()
    async with app.run_test(size=(40, 12)) as pilot:
        numbers = app.query_one(Numbers)
        numbers.set_lines(list(range(100)), empty_text="none", cursor=0)
        await pilot.pause()
        numbers._set_cursor(30)  # below the first ten rows: the list scrolls
        await pilot.pause()
        top = round(numbers.scroll_y)
        assert top > 0 and numbers.cursor == 30
        asked: list[Region] = []
        refresh = numbers.refresh

        def spy(*regions: Region, **kwargs: object) -> object:
            asked.extend(regions)
            return refresh(*regions, **kwargs)  # type: ignore[arg-type]

        numbers.refresh = spy  # type: ignore[method-assign]
        numbers._set_cursor(28)
        rows = sorted(region.y for region in asked)
        assert rows == [28 - top, 30 - top], (rows, top)
