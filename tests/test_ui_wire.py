"""Quiet on the wire (issue 6): what the console sends its terminal.

``Wire`` (console/ui/wire.py) sits between Textual's compositor and the terminal and
passes on only the cells that change; these tests read what it passed on. The Pilot
tests run the real console on the fixed demo data with a clock the test moves.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.geometry import Offset, Region, Size
from textual.strip import Strip

from console.jobs.journal import JobState
from console.jobs.runner import Runner
from console.ui.app import StorageConsoleApp
from console.ui.screens.main import MainScreen
from console.ui.widgets.volume_detail import VolumeDetail
from console.ui.widgets.volume_table import VolumeTable
from console.ui.wire import CellsUpdate, Wire
from tests.conftest import PATIENCE, MakeImage
from tests.conftest_ui import NOW, G, M, demo_inventory, demo_journal, runner_for
from tests.test_console_tty import Tmux

PLAIN = Style(color="white", bgcolor="black")
BOLD = Style(color="red", bgcolor="black", bold=True)
CONSOLE = Console(color_system="256", force_terminal=True, width=80)


def full(*lines: list[Segment]) -> LayoutUpdate:
    """A whole-screen update of these lines."""
    width = Strip(lines[0]).cell_length
    return LayoutUpdate([[Strip(line)] for line in lines], Region(0, 0, width, len(lines)))


def partial(y: int, x1: int, x2: int, line: list[Segment]) -> ChopsUpdate:
    """An update of columns [x1, x2) of line ``y``, the line as one chop (one widget)."""
    strip = Strip(line)
    chops: list[dict[int, Strip | None]] = [{0: None} for _ in range(y + 1)]
    chops[y] = {0: strip}
    ends = [[strip.cell_length] for _ in range(y + 1)]
    return ChopsUpdate(chops, [(y, x1, x2)], ends)


def runs(update: RenderableType | None) -> list[tuple[int, int, str]]:
    """(x, y, text) of each run of cells an update writes."""
    assert isinstance(update, CellsUpdate)
    return [(x, y, "".join(char for char, _ in cells)) for x, y, cells in update.runs]


def wire_after(*lines: list[Segment]) -> Wire:
    wire = Wire()
    assert wire.filter(full(*lines), Offset(0, 0), CONSOLE) is not None
    return wire


def test_a_full_update_goes_out_whole_and_is_remembered() -> None:
    update = full([Segment("abc", PLAIN)], [Segment("def", PLAIN)])
    wire = Wire()
    assert wire.filter(update, Offset(0, 0), CONSOLE) is update
    assert wire.size == Size(3, 2)
    assert [char for char, _ in wire.lines[1]] == ["d", "e", "f"]


def test_an_update_that_changes_nothing_is_not_sent() -> None:
    wire = wire_after([Segment("disk-01   1m", PLAIN)])
    update = partial(0, 0, 12, [Segment("disk-01   1m", PLAIN)])
    assert wire.filter(update, Offset(0, 0), CONSOLE) is None
    assert wire.updates_dropped == 1


def test_only_the_changed_cells_are_sent_with_their_style_once() -> None:
    wire = wire_after([Segment("disk-01   ", PLAIN), Segment("1m", BOLD)])
    update = wire.filter(partial(0, 0, 12, [Segment("disk-01   ", PLAIN), Segment("2m", BOLD)]),
                         Offset(0, 0), CONSOLE)
    assert runs(update) == [(10, 0, "2")]
    assert isinstance(update, CellsUpdate)
    sent = update.render_segments(CONSOLE)
    assert sent == "\x1b[1;11H" + Strip.render_style(BOLD, "2", CONSOLE._color_system)
    assert wire.filter(partial(0, 0, 12, [Segment("disk-01   ", PLAIN), Segment("2m", BOLD)]),
                       Offset(0, 0), CONSOLE) is None  # now the terminal shows it


def test_a_style_change_alone_is_a_change() -> None:
    wire = wire_after([Segment("ab", PLAIN)])
    assert runs(wire.filter(partial(0, 0, 2, [Segment("a", PLAIN), Segment("b", BOLD)]),
                            Offset(0, 0), CONSOLE)) == [(1, 0, "b")]


def test_near_changes_go_as_one_run_far_ones_as_two() -> None:
    wire = wire_after([Segment("a" * 40, PLAIN)])
    line = "b" + "a" * 3 + "b" + "a" * 30 + "b" + "a" * 4
    assert runs(wire.filter(partial(0, 0, 40, [Segment(line, PLAIN)]), Offset(0, 0),
                            CONSOLE)) == [(0, 0, "baaab"), (35, 0, "b")]


def test_runs_in_one_style_share_its_escape_sequence() -> None:
    wire = wire_after([Segment("a" * 30, PLAIN)], [Segment("a" * 30, PLAIN)])
    update = ChopsUpdate([{0: Strip([Segment("b" + "a" * 29, PLAIN)])},
                          {0: Strip([Segment("a" * 29 + "b", PLAIN)])}],
                         [(0, 0, 30), (1, 0, 30)], [[30], [30]])
    sent = wire.filter(update, Offset(0, 0), CONSOLE)
    assert isinstance(sent, CellsUpdate)
    start, end = Strip.render_style(PLAIN, "\0", CONSOLE._color_system).split("\0")
    assert sent.render_segments(CONSOLE) == f"\x1b[1;1H{start}b\x1b[2;30Hb{end}"


def test_a_wide_character_is_never_sent_in_halves() -> None:
    wire = wire_after([Segment("ab日c", PLAIN)])  # 日 takes columns 2 and 3
    assert runs(wire.filter(partial(0, 0, 5, [Segment("ab月c", PLAIN)]), Offset(0, 0),
                            CONSOLE)) == [(2, 0, "月")]
    # A narrow character where the right half of the wide one was: the left half too.
    assert runs(wire.filter(partial(0, 3, 5, [Segment("abyxc", PLAIN)]), Offset(0, 0),
                            CONSOLE)) == [(2, 0, "yx")]
    assert [char for char, _ in wire.lines[0]] == ["a", "b", "y", "x", "c"]
    # A wide character over two narrow ones, one of them unchanged: both cells.
    assert runs(wire.filter(partial(0, 0, 5, [Segment("ab日c", PLAIN)]), Offset(0, 0),
                            CONSOLE)) == [(2, 0, "日")]


def test_what_it_cannot_follow_makes_it_forget() -> None:
    wire = wire_after([Segment("ab", PLAIN)])
    assert wire.filter(Segment("x"), Offset(0, 0), CONSOLE) is not None  # not the compositor's
    assert wire.size is None
    update = partial(0, 0, 2, [Segment("ab", PLAIN)])
    assert wire.filter(update, Offset(0, 0), CONSOLE) is update  # sent whole until a full one
    wire = wire_after([Segment("ab", PLAIN)])
    wider = partial(0, 0, 3, [Segment("abc", PLAIN)])  # the terminal has been resized
    assert wire.filter(wider, Offset(0, 0), CONSOLE) is wider
    assert wire.size is None


# -- the console ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def console_app(clock: Clock) -> StorageConsoleApp:
    inventory = demo_inventory()
    return StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                             clock=clock, cursor_blink=False)


def sent_runs(app: StorageConsoleApp) -> list[tuple[int, int, str]]:
    """From now on, (x, y, text) of every run of cells the console sends."""
    sent: list[tuple[int, int, str]] = []
    filter_update = app.wire.filter

    def recording(update: RenderableType, cursor: Offset, console: Console) -> Any:
        result = filter_update(update, cursor, console)
        if isinstance(result, CellsUpdate):
            sent.extend(runs(result))
        elif result is not None:
            sent.append((-1, -1, f"a whole {type(result).__name__}"))
        return result

    app.wire.filter = recording  # type: ignore[method-assign]
    return sent


async def test_the_console_goes_through_the_wire() -> None:
    """Textual (pinned) still hands every update to App._display as the compositor's
    LayoutUpdate or ChopsUpdate: the first screen is remembered cell by cell."""
    app = console_app(Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.wire.size == Size(80, 24)
        sent = sent_runs(app)
        await pilot.press("j")  # the cursor moves a row down: those rows change
        await pilot.pause()
        assert sent and all(x >= 0 for x, _, _ in sent)
        assert app.wire.size == Size(80, 24)  # partial updates: it still knows the screen
        sent.clear()
        await pilot.press("ctrl+l")  # redraw: every cell again
        await pilot.pause()
        assert sent == [(-1, -1, "a whole LayoutUpdate")]


async def test_a_tick_with_nothing_changed_sends_nothing() -> None:
    app = console_app(Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        sent = sent_runs(app)
        updates = app.wire.updates_sent + app.wire.updates_dropped
        screen.repaint_ages()  # the clock stands still: no age moved on
        await pilot.pause()
        assert app.wire.updates_sent + app.wire.updates_dropped == updates  # nothing repainted
        screen.query_one(VolumeTable).refresh()  # a repaint of it all, nothing different
        await pilot.pause()
        assert sent == []
        assert app.wire.updates_dropped > 0


async def test_a_changed_age_sends_only_its_cells() -> None:
    clock = Clock()
    app = console_app(clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        table = screen.query_one(VolumeTable)
        rows = table.row_count
        assert table.current is not None and table.current.last_seen == NOW - 90  # 1m
        sent = sent_runs(app)
        clock.now += 60  # 1m -> 2m: one digit a row
        screen.repaint_ages()
        await pilot.pause()
        digits = [run for run in sent if run[2] == "2"]
        # Each visible row's age, the summary's and the details' "seen 2m ago": that
        # digit, nothing else.
        assert sent == digits, sent
        visible = min(rows, table.scrollable_content_region.height - 1)
        column = table.region.right - 2  # "  2m", right-aligned, then the scrollbar
        in_table = [y for x, y, _ in digits if x == column]
        assert len(in_table) == visible
        assert len(digits) == visible + 2


async def test_the_details_say_how_old_the_volume_is_as_time_passes() -> None:
    clock = Clock()
    app = console_app(clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        detail = screen.query_one(VolumeDetail)
        assert "seen 1m ago" in detail.describe().plain
        clock.now += 10 * 60
        screen.repaint_ages()
        await pilot.pause()
        shown = str(detail.query_one("#detail-body").render())
        assert "seen 11m ago" in shown and "seen 1m ago" not in shown


# -- a real terminal ------------------------------------------------------------------------


def test_the_terminal_shows_what_a_full_redraw_shows(tmp_path: Path, pool_dir: Path,
                                                     make_image: MakeImage) -> None:
    """The real console in tmux, after keys, a dialog, the help, a filter and a resize,
    every one sent as changed cells only: the screen tmux holds (text and colours) is
    the one a full redraw (ctrl+l) paints. Digits are masked: the clock tick may change
    "seen 20s ago" between the two captures."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is needed")
    for n in range(12):
        make_image(pool_dir / f"disk-{n:02}.qcow2", "qcow2", "8M")
    tmux = Tmux(tmp_path / "tmux.sock")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k.startswith(("XDG_", "STORAGE_")))
    tmux("new-session", "-d", "-s", "sc", "-x", "80", "-y", "24",
         f"cd {shlex.quote(os.getcwd())} && env TERM=xterm-256color {env} "
         f"{shlex.quote(sys.executable)} -m console.cli {shlex.quote(str(pool_dir))}; "
         "sleep 60")
    try:
        tmux.wait_for("disk-05.qcow2", timeout=PATIENCE)
        tmux("resize-window", "-t", "sc", "-x", "100", "-y", "30")  # full updates
        time.sleep(1)
        tmux("resize-window", "-t", "sc", "-x", "80", "-y", "24")
        time.sleep(1)
        steps: list[tuple[list[str], str | None]] = [
            (["j", "j", "j"], None), (["/"], None), (["disk-1"], None), (["Enter"], None),
            (["Escape"], "disk-05.qcow2"), (["?"], "─ Keys ─"), (["Escape"], None),
            (["s"], "fmt▲"), (["c"], "Create a volume"), (["Escape"], None),
            (["k"], None)]
        for keys, wanted in steps:
            tmux("send-keys", "-t", "sc", *keys)
            if wanted is not None:
                tmux.wait_for(wanted)
            time.sleep(0.3)
        assert "Create a volume" not in tmux.screen() and "Keys" not in tmux.screen()

        def colours() -> str:
            """The screen with its colour sequences; digits of the text masked."""
            parts = re.split(r"(\x1b\[[0-9;:]*m)", tmux("capture-pane", "-p", "-e",
                                                          "-t", "sc"))
            return "".join(part if part.startswith("\x1b") else re.sub(r"[0-9]", "#", part)
                           for part in parts)

        sent = colours()
        tmux("send-keys", "-t", "sc", "C-l")
        time.sleep(1.5)
        assert colours() == sent
        assert "Traceback" not in sent
    finally:
        tmux("kill-server")


async def test_a_jobs_rate_and_time_left_are_renewed_every_2s_its_percent_at_once() -> None:
    inventory = demo_inventory()
    app = StorageConsoleApp(inventory, runner=Runner(demo_journal(), inventory),
                            refresh_on_start=False, clock=Clock(), cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        assert screen is not None
        panel = screen.jobs_panel
        while not any(job.state == JobState.RUNNING for job in panel.rows) \
                or not panel.scrollable_content_region.width:  # shown and laid out
            await pilot.pause(0.02)
        pace = Clock()
        panel.pace = pace
        panel.slow_words.clear()
        job = next(job for job in panel.rows if job.state == JobState.RUNNING)
        y = panel.rows.index(job)

        def line() -> str:
            return panel.render_line(y).text

        assert "42%" in line() and "180M/s" in line() and "eta 5:29" in line()
        faster = replace(job, percent=43.0, done_bytes=43 * G, throughput=200.0 * M)
        screen.jobs_changed([c for c in [screen.board.observe(faster)] if c is not None])
        pace.now += 1.0
        assert "43%" in line() and "180M/s" in line() and "eta 5:29" in line()
        pace.now += 1.0
        assert "43%" in line() and "200M/s" in line() and "eta 4:51" in line()
