"""At home in a terminal: the ``:`` command line, vim keys, 80x24 and resizes, and
every key findable in the footer or the help screen (Pilot, fixed demo data)."""

from __future__ import annotations

import os

from rich.cells import cell_len
from rich.console import Console
from textual.binding import Binding
from textual.dom import DOMNode
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from console.jobs.runner import Runner
from console.ui.app import StorageConsoleApp
from console.ui.cells import shorten
from console.ui.screens.audit_log import AuditScreen
from console.ui.screens.chains import ChainScreen
from console.ui.screens.fixes import FixesScreen
from console.ui.screens.help import GENERIC, HelpScreen, binding_sections
from console.ui.screens.main import MainScreen
from console.ui.widgets.command_bar import CommandBar
from console.ui.widgets.key_footer import KeyFooter
from console.ui.widgets.pool_summary import PoolSummary
from console.ui.widgets.pool_tree import HostEntry, PoolEntry, PoolTree
from tests.conftest_ui import (
    LONG_PATH,
    big_inventory,
    demo_inventory,
    demo_journal,
    long_path_inventory,
)
from tests.test_ui import make_app, screen_text, table

SMALL = (80, 24)
KEYS = {" ": "space", ":": "colon", "/": "slash", "-": "minus", ".": "full_stop"}


async def type_line(pilot: object, text: str) -> None:
    await pilot.press(*(KEYS.get(c, c) for c in text))  # type: ignore[attr-defined]


def bar(app: StorageConsoleApp) -> CommandBar:
    return app.screen_stack[0].query_one(CommandBar)


def shown_pool(app: StorageConsoleApp) -> tuple[str | None, str | None]:
    t = table(app)
    return t.host, t.pool


# -- the : command line ------------------------------------------------------------------


async def test_command_line_jumps_to_pools_and_hosts() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert not bar(app).display
        await type_line(pilot, ":")
        await pilot.pause()
        assert bar(app).display and app.focused is bar(app)
        await type_line(pilot, "pool iso")
        await pilot.press("enter")
        await pilot.pause()
        assert shown_pool(app) == ("local", "iso")
        assert not bar(app).display and app.focused is table(app)  # keys go back
        await type_line(pilot, ":pool backup:archive")
        await pilot.press("enter")
        await pilot.pause()
        assert shown_pool(app) == ("backup", "archive")
        await type_line(pilot, ":host local")
        await pilot.press("enter")
        await pilot.pause()
        tree = app.screen.query_one(PoolTree)
        assert app.focused is tree and tree.cursor_node is not None
        data = tree.cursor_node.data
        assert isinstance(data, HostEntry) and data.host.name == "local"
        assert "host local (local): " in screen_text(app)


async def test_command_line_answers_unknown_commands_in_one_line() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await type_line(pilot, ":vol x")
        await pilot.press("enter")
        await pilot.pause()
        line = bar(app)
        assert line.display and line.has_class("-error")
        assert line.value == "unknown :vol; try :host NAME, :pool [HOST:]POOL, :jobs, " \
            ":fixes, :audit, :q"
        assert line.value in screen_text(app)  # one line, whole at 80 columns
        await type_line(pilot, "pool nowhere")  # typing replaces the answer
        await pilot.press("enter")
        await pilot.pause()
        assert line.value.startswith("no pool 'nowhere' in the config; pools: local:images")
        await pilot.press("escape")
        await pilot.pause()
        assert not line.display and shown_pool(app) == ("local", "images")


async def test_command_line_history_and_completion() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await type_line(pilot, ":po")
        await pilot.press("tab")
        assert bar(app).value == ":pool "
        await type_line(pilot, "ar")
        await pilot.press("tab")
        assert bar(app).value == ":pool archive"
        await pilot.press("enter")
        await pilot.pause()
        assert shown_pool(app) == ("backup", "archive")
        await type_line(pilot, ":pool i")
        await pilot.press("tab")
        assert bar(app).value == ":pool images"
        await pilot.press("tab")  # again: the next name
        assert bar(app).value == ":pool iso"
        await pilot.press("enter")
        await pilot.pause()
        await type_line(pilot, ":j")
        await pilot.press("up")
        assert bar(app).value == ":pool iso"
        await pilot.press("up")
        assert bar(app).value == ":pool archive"
        await pilot.press("down", "down")
        assert bar(app).value == ":j"  # what was being typed comes back
        await pilot.press("escape")
        await pilot.pause()
        assert not bar(app).display


async def test_command_line_opens_jobs_fixes_audit_and_quits() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await type_line(pilot, ":jobs")
        await pilot.press("enter")
        await pilot.pause()
        main = app.screen
        assert isinstance(main, MainScreen)
        assert main.jobs_panel.has_class("-shown") and app.focused is main.jobs_panel
        await type_line(pilot, ":audit")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AuditScreen)
        await pilot.press("escape")
        await pilot.pause()
        await type_line(pilot, ":fixes")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FixesScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is main
        await type_line(pilot, ":q")
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_code == 0


# -- vim keys -----------------------------------------------------------------------------


async def test_vim_keys_in_the_pool_tree() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.press("p")  # focus the pools
        tree = app.screen.query_one(PoolTree)
        assert app.focused is tree
        await pilot.press("h")  # a pool: up to its host
        await pilot.pause()
        node = tree.cursor_node
        assert node is not None and isinstance(node.data, HostEntry)
        await pilot.press("h")  # the host folds
        await pilot.pause()
        assert not node.is_expanded
        await pilot.press("l")  # and opens
        await pilot.pause()
        assert node.is_expanded
        await pilot.press("l")  # to its first pool
        await pilot.pause()
        assert tree.cursor_node is not None and isinstance(tree.cursor_node.data, PoolEntry)
        await pilot.press("G")
        await pilot.pause()
        last = tree.cursor_node
        assert last is not None and isinstance(last.data, PoolEntry)
        assert last.data.key == ("backup", "archive")
        await pilot.press("g", "j", "l")  # the first pool, selected: the volumes get keys
        await pilot.pause()
        assert shown_pool(app) == ("local", "images") and app.focused is table(app)


async def test_half_page_keys_in_the_volume_table() -> None:
    app = make_app(big_inventory(500))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        t = table(app)
        half = t.visible_rows // 2
        assert half >= 1
        await pilot.press("ctrl+d")
        assert t.cursor == half
        await pilot.press("ctrl+d", "ctrl+d")
        assert t.cursor == 3 * half
        await pilot.press("ctrl+u")
        assert t.cursor == 2 * half
        await pilot.press("G")
        assert t.cursor == t.row_count - 1


# -- 80x24 and resizes ------------------------------------------------------------------


async def test_with_marks_the_footer_keeps_help_at_80x24() -> None:
    # "esc Clear marks" in the footer pushed `?` behind the palette key, and what
    # overflowed showed its last letter at the right edge ("^p palettee").
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("space", "space")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert "? Help" in lines[-1] and lines[-1].rstrip().endswith("^p palette")
        assert any("2 marked" in line and line.rstrip().endswith("esc clears")
                   for line in lines), "the marks bar keeps esc at 80 columns"


async def footer_line(app: StorageConsoleApp, pilot: object) -> str:
    """The footer's line, after checking that no key runs under the palette key and that
    the palette key reaches the right edge (its margin left the last column to whatever
    key ran under it: "^p palettee")."""
    footer = app.screen.query_one(KeyFooter)
    for _ in range(50):  # the footer composes its keys again after a refresh
        if any(key.region.width for key in footer.query(FooterKey)):
            break
        await pilot.pause()  # type: ignore[attr-defined]
    keys = list(footer.query(FooterKey))
    palette = [key for key in keys if key.has_class("-command-palette")]
    assert len(palette) == 1 and palette[0].region.right == app.size.width
    edge = palette[0].region.x
    assert [key.key_display for key in keys
            if key is not palette[0] and key.region.right > edge] == []
    line = screen_text(app).splitlines()[-1]
    assert "? Help" in line and line.rstrip().endswith(" ▏^p palette"), line
    return line


async def test_the_footer_fits_80_columns_whatever_has_the_focus() -> None:
    inventory = demo_inventory()
    app = make_app(inventory, runner=Runner(demo_journal(), inventory))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        line = await footer_line(app, pilot)
        assert line.startswith("/ Filter r Refresh c Create d Delete e Resize"), line
        for keys, focused in ((["p"], "PoolTree"), (["v", "tab"], "VolumeDetail"),
                              (["J"], "JobsPanel"), (["j", "j"], "JobsPanel"),
                              (["v"], "VolumeTable"), (["tab", "tab"], "JobsPanel")):
            await pilot.press(*keys)
            await pilot.pause()
            assert type(app.focused).__name__ == focused, keys
            line = await footer_line(app, pilot)
            if focused == "JobsPanel":  # its own keys first, then J and ?
                assert line.startswith("x Cancel job R Resume b Roll back z Dismiss ended "
                                       "J Jobs ? Help "), line
            else:
                assert "/ Filter" in line and "J Jobs" in line, line
        await pilot.press("v", "space", "space")  # marks shown
        await pilot.pause()
        assert screen.volume_table.marks and "/ Filter" in await footer_line(app, pilot)
        await pilot.resize_terminal(120, 40)  # the keys that fit come back
        await pilot.pause()
        await pilot.press("J")
        await pilot.pause()
        assert "/ Filter" in await footer_line(app, pilot)


async def test_the_monitor_footer_fits_80_columns() -> None:
    inventory = demo_inventory(read_only=True)
    app = make_app(inventory, runner=Runner(demo_journal(), inventory), monitor=True)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert "/ Filter" in await footer_line(app, pilot)
        await pilot.press("J")
        await pilot.pause()
        assert type(app.focused).__name__ == "JobsPanel"
        assert "z Dismiss ended" in await footer_line(app, pilot)


async def test_marked_rows_lead_with_a_symbol_without_colour() -> None:
    """storage-mono (NO_COLOR) draws a mark as bold, which an in-use row has too: the
    row's first cell says it, in every theme, and the row still fits 80 columns."""
    app = make_app(demo_inventory(), theme="storage-mono")
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("space", "j", "space")  # base-debian12.qcow2 and deep.qcow2
        await pilot.pause()
        t = table(app)
        rows = screen_text(app).splitlines()[t.region.y + 1:t.region.bottom]
        cells = [line[t.region.x:t.region.right] for line in rows]
        marked = [line for line in cells if line.startswith("✓")]
        assert len(marked) == 2 and len(t.marks) == 2, cells
        assert marked[0].startswith("✓◆ base-debian12") and marked[1].startswith("✓  deep")
        assert cells[1].startswith("   db01.raw") and all(
            line.rstrip().endswith("1m") for line in cells if line.strip()), cells


async def test_a_job_description_takes_the_free_width_at_80x24() -> None:
    """A description is cut only where the words after it need the room: not for a
    running copy with no rate yet, nor for a done job's short "took 2s"."""
    inventory = demo_inventory()
    journal = demo_journal()
    with journal.transaction() as conn:  # job 8 just started: no rate, no time left
        conn.execute("UPDATE jobs SET throughput=0 WHERE id=8")
    app = make_app(inventory, runner=Runner(journal, inventory))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.press("J", *["j"] * 5)  # down to the oldest: every line was shown
        await pilot.pause()
        lines = screen_text(app).splitlines()
        running = next(line for line in lines if "#8 " in line)
        assert "copy db01.raw → db01-copy.qcow2 in iso ████▏" in running, running
        done = next(line for line in lines if "#7 " in line)
        assert "create web03.qcow2 (qcow2, 20G)  took 2s" in done, done
        failed = next(line for line in lines if "#9 " in line)  # the error needs it
        assert "resize web01.qcow2 …  a running QEMU" in failed, failed


async def test_everything_important_shows_at_80x24_and_across_resizes() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()

        def check() -> None:
            text = screen_text(app)
            lines = text.splitlines()
            assert len(lines) == app.size.height
            assert all(len(line) <= app.size.width for line in lines)
            for expected in ("storage-console", "images", "iso", "archive",  # the pools
                             "base-debian12.qcow2", "db01.raw",  # volumes
                             "local › images"):  # where we are
                assert expected in text, f"{expected!r} missing at {app.size}:\n{text}"
            footer = lines[-1]
            for key in ("/", "r", "c", "J", "?"):
                assert f"{key} " in footer or f" {key}" in footer, footer

        check()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert app.size == (120, 40)
        check()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        check()
        await type_line(pilot, ":pool iso")  # the command line fits at 80 too
        await pilot.pause()
        assert ":pool iso" in screen_text(app).splitlines()[-2]
        await pilot.press("enter")
        await pilot.pause()
        assert shown_pool(app) == ("local", "iso")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "Keys" in screen_text(app)
        await pilot.resize_terminal(60, 20)  # smaller than anyone should use: no crash
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


def test_shorten_cuts_in_the_middle_keeping_more_of_the_end() -> None:
    assert shorten("/srv/images", 20) == "/srv/images"
    cut = shorten(LONG_PATH, 30)
    assert len(cut) == 30 and cut.startswith("/srv/") and cut.endswith("/vm-images/tier-1")
    assert "…" in cut
    assert shorten("界界界界界界界界", 7) == "界…界界"  # cells, not characters
    assert shorten("abc", 0) == "" and shorten("abcdef", 1) == "…"
    nfd = "cafe\u0301/e\u0301e\u0301e\u0301e\u0301e\u0301"  # a name written in NFD
    assert shorten(nfd, 5) == "c…e\u0301e\u0301e\u0301"  # no mark on the ellipsis
    assert shorten("界界", 2) == "…"
    for width in range(8):  # never wider than asked, whatever the characters
        for text in (nfd, "界界界界", "a\u0301\u0302" * 5, LONG_PATH):
            assert cell_len(shorten(text, width)) <= width


def summary_lines(app: StorageConsoleApp) -> list[str]:
    summary = app.screen.query_one(PoolSummary)
    lines = screen_text(app).splitlines()[summary.region.y:summary.region.bottom]
    return [line[summary.region.x:summary.region.right].strip() for line in lines]


async def test_a_long_pool_path_degrades_gracefully_in_the_summary() -> None:
    app = make_app(long_path_inventory())
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        wide = summary_lines(app)[0]
        assert wide == f"local › {LONG_PATH}  3 volumes · by name ▲ · seen 30s ago"
        await pilot.resize_terminal(*SMALL)
        await pilot.pause()
        # the sort goes, then the fresh age, and the path is cut in its middle
        title, space = summary_lines(app)
        assert len(title) <= app.screen.query_one(PoolSummary).content_region.width
        assert title.startswith("local › /srv/") and "…" in title, title
        assert title.endswith("/vm-images/tier-1  3 volumes"), title
        assert "30G used" in space
        await pilot.resize_terminal(120, 30)  # wider: the age is back, and more path
        await pilot.pause()
        wider = summary_lines(app)[0]
        assert wider.endswith("/vm-images/tier-1  3 volumes · seen 30s ago"), wider
        assert "…" in wider and "by name" not in wider
        await pilot.resize_terminal(60, 20)  # narrower than anyone should use: a stub
        await pilot.pause()
        stub = summary_lines(app)[0]
        assert stub.startswith("local › /srv") and stub.endswith("…s/tier-1  3 volumes"), stub


# -- every key findable ---------------------------------------------------------------


def ours(node: DOMNode) -> list[Binding]:
    """The bindings this project declares on ``node``'s classes."""
    return [b for cls in type(node).__mro__ if cls.__module__.startswith("console.")
            for b in Binding.make_bindings(cls.__dict__.get("BINDINGS", []))]


def help_text(app: StorageConsoleApp) -> str:
    help_screen = HelpScreen(binding_sections(app, app.screen))
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(help_screen.table())
    return console.export_text()


def unlisted(app: StorageConsoleApp) -> list[str]:
    """Every key of the app, the screen and its widgets that is neither in the help
    screen for this screen nor in the footer."""
    helped = help_text(app)
    footer = "\n".join(screen_text(app).splitlines()[-1:]) \
        if app.screen.query(Footer) else ""
    missing = []
    for node in [app, app.screen, *app.screen.query("*")]:
        for binding in ours(node):
            action = binding.action
            if action in GENERIC or node.check_action(action, ()) is False:
                continue  # refused here (read-only, no job engine...): not offered
            display = app.get_key_display(binding)
            if f"{display} " not in helped and f" {display}" not in helped \
                    and display not in footer:
                missing.append(f"{type(node).__name__}: {binding.key} ({action})")
    return missing


async def test_every_key_is_in_the_footer_or_the_help_screen() -> None:
    app = make_app(demo_inventory())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert unlisted(app) == []
        for key, screen_type in (("F", FixesScreen), ("C", ChainScreen),
                                 ("A", AuditScreen)):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen_type)
            assert unlisted(app) == [], screen_type.__name__
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, MainScreen)


async def test_every_key_of_the_monitor_is_in_the_footer_or_the_help_screen() -> None:
    app = make_app(demo_inventory(read_only=True), monitor=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.screen.query("EventsLog") and unlisted(app) == []


# A focused widget's key that means something else on the screen: only where the help
# says so and the meaning is the expected one there (decisions.md, "At home over SSH").
MEANT_TWICE = {("PoolTree", "l"),  # open the pool (vim); on the table: clone
               ("CommandBar", "escape")}  # close the line; on the table: clear


async def test_a_focused_panel_key_never_means_another_screen_key() -> None:
    """A panel's key that falls through (refused there now) must not do something else:
    the jobs panel's "dismiss ended" was D, the screen's "what depends on this?"."""
    app = make_app(demo_inventory())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        meanings = {key: b.action for b in ours(screen) for key in b.key.split(",")}
        clashes = {(type(w).__name__, key) for w in screen.query("*") for b in ours(w)
                   for key in b.key.split(",")
                   if meanings.get(key, b.action) != b.action}
        assert clashes == MEANT_TWICE
        await pilot.press("J")  # the jobs panel focused: D still shows the dependants
        await pilot.pause()
        assert type(app.focused).__name__ == "JobsPanel"
        await pilot.press("D")
        await pilot.pause()
        assert isinstance(app.screen, ChainScreen)
