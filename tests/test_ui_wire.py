"""Quiet on the wire (issue 6): what the console sends its terminal.

``Wire`` (console/ui/wire.py) sits between Textual's compositor and the terminal and
passes on only the cells that change; these tests read what it passed on. The Pilot
tests run the real console on the fixed demo data with a clock the test moves.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.cells import get_character_cell_size
from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual._context import visible_screen_stack
from textual.geometry import Offset, Region, Size
from textual.strip import Strip

from backends.model import Capacity
from console.inventory import Inventory
from console.jobs.journal import JobState
from console.jobs.runner import Runner
from console.ui.app import StorageConsoleApp
from console.ui.screens.main import MainScreen
from console.ui.widgets.volume_detail import VolumeDetail
from console.ui.widgets.volume_table import VolumeTable
from console.ui.wire import CellsUpdate, Wire
from tests.conftest import PATIENCE, MakeImage
from tests.conftest_ui import (
    IMAGES,
    NOW,
    OK,
    G,
    M,
    demo_cache,
    demo_config,
    demo_inventory,
    demo_journal,
    fill,
    images_volumes,
    runner_for,
    volume,
)
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


# -- a simulated terminal -----------------------------------------------------------------


class Grid:
    """A terminal as these tests model it: each cell's text and the SGR and link state it
    was written in. Writing over half a wide character blanks its other half, a
    combining mark joins the cell before the cursor, as xterm and tmux do."""

    TOKEN = re.compile(r"\x1b\[(\d*);(\d*)H|\x1b\[([0-9;:]*)m|\x1b\]8;[^;]*;([^\x1b]*)\x1b\\"
                       r"|\x1b\[[0-9;?]*[A-Za-z]|(\n)|([^\x1b\n]+)", re.S)

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        blank: tuple[str, tuple[tuple[str, ...], str]] = (" ", ((), ""))
        self.cells = [[blank] * width for _ in range(height)]
        self.x = self.y = 0
        self.sgr: tuple[str, ...] = ()
        self.link = ""

    def _put(self, x: int, cell: tuple[str, tuple[tuple[str, ...], str]]) -> None:
        row = self.cells[self.y]
        if row[x][0] == "" and x > 0:  # the right half of a wide one: its left goes too
            row[x - 1] = (" ", row[x - 1][1])
        if x + 1 < self.width and row[x + 1][0] == "" and cell[0] != "":
            row[x + 1] = (" ", row[x + 1][1])  # was the right half of what stood here
        row[x] = cell

    def feed(self, data: str) -> None:
        for match in self.TOKEN.finditer(data):
            row, col, sgr, link, newline, text = match.groups()
            if match.group(0).endswith("H") and row is not None:
                self.y, self.x = int(row or 1) - 1, int(col or 1) - 1
            elif sgr is not None:
                params = tuple(p for p in sgr.split(";") if p)
                self.sgr = () if params in ((), ("0",)) else self.sgr + params
            elif link is not None:
                self.link = link
            elif newline:
                self.y += 1
            elif text:
                for char in text:
                    self._write(char)

    def _write(self, char: str) -> None:
        if not 0 <= self.y < self.height:
            return
        look = (self.sgr, self.link)
        width = get_character_cell_size(char)
        if width == 0:
            x = self.x - 1
            while x > 0 and self.cells[self.y][x][0] == "":
                x -= 1
            if x >= 0:
                text, old = self.cells[self.y][x]
                self.cells[self.y][x] = (text + char, old)
            return
        if self.x + width > self.width:
            self.x = self.width  # no wrap: Textual never writes past the edge
            return
        self._put(self.x, (char, look))
        if width == 2:
            self._put(self.x + 1, ("", look))
        self.x += width

    def text(self) -> list[str]:
        return ["".join(char for char, _ in row) for row in self.cells]


def painted(update: RenderableType, console: Console) -> str:
    """What Textual writes for an update (App._display without the cursor)."""
    if isinstance(update, (CellsUpdate, LayoutUpdate, ChopsUpdate)):
        return update.render_segments(console)
    return console._render_buffer(console.render(update))


def test_the_grid_reads_what_textual_writes() -> None:
    grid = Grid(6, 2)
    grid.feed(painted(full([Segment("ab日c ", BOLD)], [Segment("e\u0301xyz ", None)]),
                      CONSOLE))
    assert grid.text() == ["ab日c ", "e\u0301xyz  "]
    assert grid.cells[0][2][1][0] == grid.cells[0][0][1][0] != ()
    grid.feed("\x1b[1;4Hq")  # over the right half of 日
    assert grid.text()[0] == "ab qc "


def intl_inventory() -> Inventory:
    """The demo data, the first pool with names a terminal finds hard: wide characters,
    an emoji, combining marks (a name written in NFD), ambiguous-width symbols."""
    cache = demo_cache()
    names = ["日本語-ディスク.qcow2", "cafe\u0301-nfd.qcow2", "🚀-launch.raw",
             "a\u0301\u0302\u0303-marks.img", "●◌✗▕⟳-symbols.qcow2",
             "ＦＵＬＬ-ｗｉｄｔｈ-" + "名" * 30 + ".qcow2"]
    fill(cache, IMAGES, [*images_volumes(), *((volume(IMAGES, name), OK) for name in names)],
         capacity=Capacity(900 * G, 310 * G, 590 * G, 700 * G))
    return Inventory(demo_config(), cache)


PATIENT_FRAMES = 40  # pauses of 50 ms for a loaded machine's pending refreshes to go out


class Follow:
    """Every update the console's Wire passes on, written to a simulated terminal."""

    def __init__(self, app: StorageConsoleApp) -> None:
        self.app = app
        self.grid: Grid | None = None
        self.updates = 0
        filter_update = app.wire.filter

        def following(update: RenderableType, cursor: Offset,
                      console: Console) -> RenderableType | None:
            result = filter_update(update, cursor, console)
            if isinstance(result, LayoutUpdate) and (
                    self.grid is None or (self.grid.width, self.grid.height)
                    != tuple(result.region.size)):
                self.grid = Grid(*result.region.size)  # a resized terminal
            if result is not None and self.grid is not None:
                self.grid.feed(painted(result, console))
                self.updates += 1
            return result

        app.wire.filter = following  # type: ignore[method-assign]

    async def check(self, pilot: Any, step: str) -> None:
        """The simulated terminal is what a full redraw of the screen paints, once the
        app has settled. A loaded machine may leave a refresh in the message queue when
        the redraw is taken (Textual would send it next frame, and so does the wire);
        a cell the wire dropped stays wrong however long we wait."""
        for _ in range(PATIENT_FRAMES):
            try:
                self._compare(step)
                return
            except AssertionError:
                await pilot.pause(0.05)
        self._compare(step)

    def _compare(self, step: str) -> None:
        screen = self.app.screen
        screen._compositor_refresh()  # what is pending goes out first
        assert self.grid is not None
        visible_screen_stack.set(self.app._background_screens)
        size = screen._compositor.size
        full_redraw = Grid(*size)
        full_redraw.feed(painted(LayoutUpdate([[strip] for strip in
                                               screen._compositor.render_strips()],
                                              size.region), self.app.console))
        assert self.grid.text() == full_redraw.text(), step
        for y, (shown, wanted) in enumerate(zip(self.grid.cells, full_redraw.cells,
                                                strict=True)):
            assert shown == wanted, f"{step}: line {y} differs in style"


async def test_the_simulated_terminal_after_a_random_session_is_a_full_redraw() -> None:
    """Keys, dialogs, the help, a filter, toasts coming and going, resizes, the clock,
    themes and ctrl+l, in a random order (a fixed seed): after every step the cells the
    Wire sent, written to a simulated terminal, are those a full redraw paints."""
    rng = random.Random(6)
    clock = Clock()
    inventory = intl_inventory()
    app = StorageConsoleApp(inventory, runner=runner_for(inventory), refresh_on_start=False,
                            clock=clock, cursor_blink=False)
    moves = ["j", "k", "down", "up", "pagedown", "pageup", "home", "end", "s", "S", "tab",
             "shift+tab", "p", "v", "space"]
    async with app.run_test(size=(100, 30)) as pilot:
        follow = Follow(app)
        await pilot.press("ctrl+l")
        await pilot.pause()
        await follow.check(pilot, "start")
        sizes = [(100, 30), (80, 24), (61, 19), (120, 40), (81, 25)]
        themes = ["storage-light", "storage-dark", "storage-high-contrast", "storage-mono"]
        for step in range(160):
            choice = rng.random()
            if choice < 0.45:
                keys = [rng.choice(moves)]
            elif choice < 0.55:
                keys = [rng.choice(["question_mark", "c", "e", "J", "C"]), "escape"][
                    : rng.randint(1, 2)]
            elif choice < 0.6:
                keys = ["slash", *rng.choice(["d", "名", "caf", "x"]), "enter"]
            elif choice < 0.65:
                keys = ["escape"]
            elif choice < 0.72:
                app.notify(rng.choice(["disk full on 日本語", "cafe\u0301 done", "ok"]),
                           title=rng.choice(["job 3 done", "refresh failed"]),
                           severity=rng.choice(["information", "warning", "error"]))
                keys = []
            elif choice < 0.77:
                app.clear_notifications()
                keys = []
            elif choice < 0.84:
                await pilot.resize_terminal(*rng.choice(sizes))
                keys = []
            elif choice < 0.93:
                clock.now += rng.choice([1, 59, 3600])
                if app.main_screen is not None:
                    app.main_screen.repaint_ages()
                keys = []
            elif choice < 0.97:
                app.theme = rng.choice(themes)
                keys = []
            else:
                keys = ["ctrl+l"]
            if keys:
                await pilot.press(*keys)
            await pilot.pause()
            await follow.check(pilot, f"step {step}: {choice:.2f} {keys}")
        assert follow.updates > 100
        assert app.wire.cells_sent > 0


def chopped(*chops: tuple[int, str | None]) -> dict[int, Strip | None]:
    """One line as chops (the parts of widgets): (column, text or None if not rendered)."""
    return {x: None if text is None else Strip([Segment(text, PLAIN)]) for x, text in chops}


def test_a_combining_mark_that_leads_a_chop_stays_on_the_cell_before() -> None:
    """A name in NFD cut by a widget's edge (a toast over the table): the accent starts
    the next chop. The terminal puts it on the cell before; so does the wire."""
    line = chopped((0, "cafe"), (4, "\u0301xyz"))
    whole = LayoutUpdate([[strip for strip in line.values() if strip is not None]],
                         Region(0, 0, 7, 1))
    wire, grid = Wire(), Grid(7, 1)
    grid.feed(painted(whole, CONSOLE))
    assert wire.filter(whole, Offset(0, 0), CONSOLE) is whole
    assert grid.text() == ["cafe\u0301xyz"]
    # The same line again: nothing to send (it sent "e", which dropped the accent).
    assert wire.filter(ChopsUpdate([line], [(0, 0, 7)], [[4, 7]]), Offset(0, 0),
                       CONSOLE) is None
    # Only the second chop changes its mark: the cell before goes with it.
    line = chopped((0, "cafe"), (4, "\u0300xyz"))
    sent = wire.filter(ChopsUpdate([line], [(0, 4, 7)], [[4, 7]]), Offset(0, 0), CONSOLE)
    assert runs(sent) == [(3, 0, "e\u0300")]
    assert sent is not None
    grid.feed(painted(sent, CONSOLE))
    assert grid.text() == ["cafe\u0300xyz"]
    # ... and when that cell is not rendered, the update goes whole.
    line = chopped((0, None), (4, "\u0301xyz"))
    update = ChopsUpdate([line], [(0, 4, 7)], [[4, 7]])
    assert wire.filter(update, Offset(0, 0), CONSOLE) is update
    assert wire.size is None


def test_half_a_wide_character_left_on_the_screen_is_not_believed() -> None:
    """A new chop starts on the right half of a wide character (the layout moved): the
    terminal blanks the left half, and the wire no longer trusts that cell."""
    wire = wire_after([Segment("ab日cd", PLAIN)])
    update = ChopsUpdate([chopped((0, None), (3, "xyz"))], [(0, 3, 6)], [[3, 6]])
    assert runs(wire.filter(update, Offset(0, 0), CONSOLE)) == [(3, 0, "xyz")]
    assert wire.lines[0][2] not in {(" ", ""), ("日", wire.lines[0][3][1])}
    update = ChopsUpdate([chopped((0, "ab "), (3, "xyz"))], [(0, 0, 6)], [[3, 6]])
    assert runs(wire.filter(update, Offset(0, 0), CONSOLE)) == [(2, 0, " ")]


def test_an_error_while_filtering_sends_the_update_whole(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    wire = wire_after([Segment("abc", PLAIN)], [Segment("def", PLAIN)])

    def broken(style: Style | None) -> str:
        raise RuntimeError("a style the wire cannot read")

    monkeypatch.setattr(wire, "_look", broken)
    update = ChopsUpdate([chopped((0, "abc")), chopped((0, "xyz"))], [(0, 0, 3), (1, 0, 3)],
                         [[3], [3]])
    assert wire.filter(update, Offset(0, 0), CONSOLE) is update
    assert wire.size is None and wire.lines == []  # half-compared lines are not trusted
    monkeypatch.undo()
    assert wire.filter(update, Offset(0, 0), CONSOLE) is update  # until a full update
    assert wire.filter(full([Segment("a\u0301bc", PLAIN)]), Offset(0, 0), CONSOLE) is not None
    assert wire.size == Size(3, 1)


def test_many_styles_never_lose_their_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The styles table is cleared between updates, never in one: every run ends its
    style, or the colour would bleed into the next cells written."""
    monkeypatch.setattr("console.ui.wire.LOOKS_KEPT", 3)
    wire = wire_after([Segment("a" * 8, PLAIN)])
    grid = Grid(8, 1)
    grid.feed(painted(full([Segment("a" * 8, PLAIN)]), CONSOLE))
    for step in range(1, 6):
        line = [Segment(char, Style(color=f"color({step * 8 + n})", bgcolor="black"))
                for n, char in enumerate("bcdefghi")]
        sent = wire.filter(partial(0, 0, 8, line), Offset(0, 0), CONSOLE)
        assert sent is not None
        grid.feed(painted(sent, CONSOLE))
        expected = Grid(8, 1)
        expected.feed(painted(full(line), CONSOLE))
        assert grid.cells == expected.cells
        assert painted(sent, CONSOLE).endswith("\x1b[0m")
    assert len(wire._ends) <= 3 + 8


async def test_a_resume_from_suspend_redraws_every_cell() -> None:
    app = console_app(Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        sent = sent_runs(app)
        app.app_resume_signal.publish(app)
        await pilot.pause()
        assert sent == [(-1, -1, "a whole LayoutUpdate")]
