"""Themes: user theme files, picking one from the palette (remembered in config.toml),
NO_COLOR, --theme, and what the themes become on a 16-colour terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.color import Color as RichColor
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment, Segments
from rich.style import Style
from textual.command import CommandPalette

from console.cli import main
from console.config import Config, config_path, set_theme, themes_dir
from console.ui.app import StorageConsoleApp
from console.ui.screens.help import HelpScreen, binding_sections
from console.ui.theme_choice import UnknownTheme
from tests.conftest_ui import clock, demo_inventory
from themes import MONO_THEME, THEMES
from themes.user import ThemeFileError, load_theme_file, load_user_themes

SIZE = (100, 30)


def app_for(**kwargs: object) -> StorageConsoleApp:
    return StorageConsoleApp(demo_inventory(), refresh_on_start=False, clock=clock,
                             cursor_blink=False, **kwargs)  # type: ignore[arg-type]


# -- user theme files ---------------------------------------------------------------------


def test_a_valid_user_theme_file(tmp_path: Path) -> None:
    (tmp_path / "sea.toml").write_text(
        '# my colours\nname = "sea"\ndark = false\nprimary = "#005F87"\n'
        'background = "#EEF6FA"\nerror = "ansi_red"\n'
        '[variables]\nblock-cursor-text-style = "reverse bold"\n')
    (tmp_path / "notes.txt").write_text("not a theme")
    themes, errors = load_user_themes(tmp_path)
    assert errors == []
    (sea,) = themes
    assert (sea.name, sea.dark, sea.primary, sea.background, sea.error) == \
        ("sea", False, "#005F87", "#EEF6FA", "ansi_red")
    assert sea.variables == {"block-cursor-text-style": "reverse bold"}


@pytest.mark.parametrize(("text", "line", "reason"), [
    ('name = "x"\nprimary = "#12345"\n', 2, "'#12345' is not a colour"),
    ('name = "x"\nprimary = "#123456"\nsurface = 3\n', 3, "'surface' must be a colour"),
    ('name = "x"\nprimray = "#123456"\n', 2, "unknown key 'primray'"),
    ('name = "x"\n\nprimary = "#123456\n', 3, "not valid TOML"),
    ('dark = true\nprimary = "#123456"\n', None, "'name' must be a non-empty string"),
    ('name = "x"\n', None, "'primary' is required"),
    ('name = "x"\nprimary = "red"\n[variables]\nblock-cursor-text-style = "loud"\n', 4,
     "not a text style"),
    ('name = "x"\nprimary = "red"\ndark = "yes"\n', 3, "'dark' must be true or false"),
])
def test_an_invalid_user_theme_file_names_its_path_and_line(
        tmp_path: Path, text: str, line: int | None, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    error = load_theme_file(path)
    assert isinstance(error, ThemeFileError)
    assert (error.path, error.line) == (path, line)
    assert reason in error.reason
    assert str(error).startswith(f"theme file {path}{f':{line}' if line else ''}: ")


def test_bad_files_are_skipped_and_names_are_not_taken_twice(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('name = "ok"\nprimary = "#336699"\n')
    (tmp_path / "b.toml").write_text('name = "ok"\nprimary = "#996633"\n')
    (tmp_path / "c.toml").write_text('name = "storage-dark"\nprimary = "#996633"\n')
    (tmp_path / "d.toml").write_bytes(b'name = "\xff"\n')
    themes, errors = load_user_themes(tmp_path, taken={"storage-dark"})
    assert [t.name for t in themes] == ["ok"]
    assert [(e.path.name, e.line) for e in errors] == [("b.toml", 1), ("c.toml", 1),
                                                       ("d.toml", None)]


async def test_user_themes_are_offered_and_a_bad_file_is_reported() -> None:
    themes_dir().mkdir(parents=True)
    (themes_dir() / "sea.toml").write_text('name = "sea"\nprimary = "#005F87"\n')
    (themes_dir() / "broken.toml").write_text('name = "broken"\nprimary = "#zz"\n')
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        names = [c.name for c in app.theme_choice.commands(app)]
        assert "Theme: sea" in names and "Theme: broken" not in names
        notes = [n.message for n in app._notifications]
        assert any(f"{themes_dir() / 'broken.toml'}:2" in m for m in notes), notes


# -- picking, remembering, starting -------------------------------------------------------


async def test_the_palette_switches_theme_and_config_remembers_it() -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("# my hosts\nmax_chain_depth = 6  # deep enough\n\n[[host]]\n"
                    "name = 'local'\n")
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "storage-dark"
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Theme: storage-high")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "storage-high-contrast"
        await app.workers.wait_for_complete()
    text = path.read_text()
    assert "# my hosts" in text and "max_chain_depth = 6  # deep enough" in text
    config = Config.load(path)
    assert config.theme == "storage-high-contrast"
    assert [h.host.name for h in config.hosts] == ["local"]
    assert not any(p.name.startswith(".config.toml") for p in path.parent.iterdir())
    # ... and the next console opens with it.
    inventory = demo_inventory()
    inventory.config = config
    assert StorageConsoleApp(inventory, refresh_on_start=False).theme == \
        "storage-high-contrast"


async def test_ctrl_t_lists_the_themes_and_help_says_so() -> None:
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"light", "enter")
        await pilot.pause()
        assert app.theme == "storage-light"
        await app.workers.wait_for_complete()
        assert Config.load(config_path()).theme == "storage-light"
        sections = dict(binding_sections(app, app.screen))
        assert ("^t", "Theme…") in sections["Everywhere"]
        # t is the main screen's (trust a host's key), not a theme toggle
        assert ("t", "toggle_theme") not in {(b.key, b.action) for b in app.BINDINGS
                                             if not isinstance(b, tuple)}
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


def test_a_theme_alone_in_a_new_config_keeps_the_default_hosts() -> None:
    set_theme("storage-light")
    config = Config.load()
    assert config.theme == "storage-light" and config.default_hosts
    assert config.hosts == Config.embedded_default().hosts


def test_no_color_selects_mono_over_the_remembered_theme(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    inventory = demo_inventory()
    inventory.config = Config(inventory.config.hosts, theme="storage-light")
    app = StorageConsoleApp(inventory, refresh_on_start=False)
    assert app.theme == MONO_THEME
    assert app.no_color and app.native_ansi_color  # Textual strips colour, not greys it
    assert app_for(theme="storage-dark").theme == "storage-dark"  # --theme still wins


async def test_mono_draws_no_colour_at_all() -> None:
    app = app_for(theme=MONO_THEME)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("j", "j")
        await pilot.pause()
        styles = {seg.style for strip in app.screen._compositor.render_strips()
                  for seg in strip if seg.style is not None}
    coloured = {s for s in styles for c in (s.color, s.bgcolor)
                if c is not None and not c.is_default}
    assert coloured == set()
    assert any(s.reverse for s in styles) and any(s.bold for s in styles)


def test_unknown_theme_is_refused_with_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownTheme, match="storage-high-contrast"):
        app_for(theme="nope")
    assert main(["--theme", "nope", "--no-refresh"]) == 2
    assert "--theme: no theme 'nope': the themes are storage-dark" in capsys.readouterr().err


async def test_a_remembered_theme_that_is_gone_falls_back_with_a_warning() -> None:
    inventory = demo_inventory()
    inventory.config = Config(inventory.config.hosts, theme="deleted-one")
    app = StorageConsoleApp(inventory, refresh_on_start=False)
    assert app.theme == "storage-dark"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert any("'deleted-one' is not available" in n.message for n in app._notifications)


# -- 16 colours ---------------------------------------------------------------------------


# The roles whose colour means something, by the widget and component that draws them.
HEALTH = ("optimized", "degraded", "broken")
JOB_STATES = ("pending", "running", "aborting", "done", "failed")  # aborted, interrupted:
# the colour of aborting (one "stopped" family), told apart by their words
ALERTS = ("warning", "critical")
BAR = ("allocated", "committed", "free", "over")


def colour_number(colour: RichColor | None, system: ColorSystem) -> int | None:
    """The colour as a terminal of ``system`` gets it (Rich's downgrade, on output)."""
    if colour is None or colour.is_default:
        return None
    return colour.downgrade(system).number


@pytest.mark.parametrize("system", [ColorSystem.STANDARD, ColorSystem.EIGHT_BIT],
                         ids=["16", "256"])
@pytest.mark.parametrize("theme", [t.name for t in THEMES if not t.ansi])
async def test_meaningful_colours_stay_apart(monkeypatch: pytest.MonkeyPatch, theme: str,
                                             system: ColorSystem) -> None:
    """Health, job states, alert levels, the capacity bar, marks and the cursor keep
    distinct colours, each readable on its background, in 16 and in 256 colours."""
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    monkeypatch.setenv("TERM", "linux" if system == ColorSystem.STANDARD
                       else "xterm-256color")
    app = app_for(theme=theme, monitor=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.main_screen
        assert screen is not None

        def number(widget: str, component: str, *, background: bool = False) -> int:
            style = screen.query_one(widget).get_component_rich_style(component)
            found = colour_number(style.bgcolor if background else style.color, system)
            assert found is not None, f"{theme}: {component} has no colour"
            return found

        def ground(widget: str) -> int:
            found = colour_number(screen.query_one(widget).rich_style.bgcolor, system)
            assert found is not None
            return found

        def apart(what: str, colours: dict[str, int], background: int) -> None:
            assert len(set(colours.values())) == len(colours), f"{theme}: {what} {colours}"
            assert background not in colours.values(), \
                f"{theme}: {what} {colours} on background {background}"

        table = ground("VolumeTable")
        apart("health", {h: number("VolumeTable", f"volume-table--{h}") for h in HEALTH},
              table)
        apart("job states", {s: number("JobsPanel", f"jobs-panel--{s}") for s in JOB_STATES},
              ground("JobsPanel"))
        apart("alert levels",
              {a: number("AlertsPanel", f"alerts-panel--{a}") for a in ALERTS},
              ground("AlertsPanel"))
        for widget, prefix in (("PoolSummary", "pool-summary"), ("PoolTree", "pool-tree")):
            apart(f"{widget} capacity bar",
                  {b: number(widget, f"{prefix}--{b}") for b in BAR}, ground(widget))
        marked = number("VolumeTable", "volume-table--marked", background=True)
        screen.query_one("PoolTree").focus()
        await pilot.pause()
        blurred = screen.query_one("VolumeTable").get_component_rich_style(
            "volume-table--cursor")
        screen.query_one("VolumeTable").focus()
        await pilot.pause()
        cursor = {"cursor": number("VolumeTable", "volume-table--cursor", background=True),
                  "marked": marked}
        apart("cursor and marks", cursor, table)
        assert number("VolumeTable", "volume-table--cursor") != cursor["cursor"], theme
        if not blurred.underline:  # else the blurred cursor is a text style
            apart("blurred cursor and marks",
                  {"blurred": colour_number(blurred.bgcolor, system) or -1,
                   "marked": marked}, table)
            assert colour_number(blurred.color, system) != \
                colour_number(blurred.bgcolor, system), theme


@pytest.mark.parametrize(("term", "system"), [("xterm-256color", "256"),
                                              ("screen", "standard"), ("tmux", "standard"),
                                              ("linux", "standard")])
async def test_the_terminal_decides_the_colours(monkeypatch: pytest.MonkeyPatch, term: str,
                                                system: str) -> None:
    """What Textual writes for each TERM: only 16-colour SGR codes where that is all the
    terminal has."""
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    monkeypatch.setenv("TERM", term)
    app = app_for(theme="storage-dark")
    assert app.console.color_system == system
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        strips = app.screen._compositor.render_strips()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=app.console.color_system,
                      width=SIZE[0])
    for strip in strips:
        # Fresh styles: a Rich Style keeps the codes of the first colour system it met.
        console.print(Segments([Segment(seg.text, Style(color=seg.style.color,
                                                        bgcolor=seg.style.bgcolor))
                                for seg in strip if seg.style is not None]))
    codes = {int(c) for sgr in re.findall(r"\x1b\[([0-9;]*)m", out.getvalue())
             for c in sgr.split(";") if c}
    if system == "standard":
        assert codes and codes <= set(range(0, 10)) | set(range(30, 50)) | \
            set(range(90, 98)) | set(range(100, 108))
        assert 38 not in codes and 48 not in codes


@pytest.mark.parametrize("theme", ["storage-high-contrast", MONO_THEME])
async def test_without_colour_cursors_are_underlined_or_reversed(theme: str) -> None:
    app = app_for(theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        assert screen is not None
        table = screen.query_one("VolumeTable")
        table.focus()
        await pilot.pause()
        focused = table.get_component_rich_style("volume-table--cursor")
        screen.query_one("PoolTree").focus()
        await pilot.pause()
        blurred = table.get_component_rich_style("volume-table--cursor")
    assert focused.bold and (focused.reverse or theme != MONO_THEME)
    assert blurred.underline and not blurred.reverse
