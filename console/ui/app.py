"""The Textual application: thin. Behaviour lives in the screens and below the UI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.console import RenderableType
from textual import events, on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.theme import Theme

from console.inventory import Inventory
from console.jobs.journal import JobRecord
from console.jobs.runner import Runner
from console.ui.commands import ConsoleCommands, PaletteCommand
from console.ui.messages import JobUpdated
from console.ui.screens.confirm import ConfirmScreen
from console.ui.screens.help import HelpScreen, binding_sections
from console.ui.screens.main import MainScreen
from console.ui.theme_choice import ThemeChoice, no_color
from console.ui.wire import Wire
from themes import CSS_PATH


class StorageConsoleApp(App[None]):
    """storage-console: hosts → pools → volumes.

    Args:
        inventory: What to show and act on; its cache paints the first screen.
        runner: The job engine over the shared journal: every change to storage runs as
            its job, and the jobs panel shows them (and those of other processes).
            Without it the console only browses.
        select: ``(host, pool)`` to open on (default: the first pool).
        refresh_on_start: Re-read every pool from disk once the cache is painted.
        clock: Seconds since the epoch, for the age of cached rows (fixed in tests).
        theme: A theme name (default: NO_COLOR's monochrome one, else the one the config
            remembers, else ``storage-dark``); an unknown one raises ``UnknownTheme``.
        cursor_blink: Blinking text cursors (snapshot tests turn it off).
        monitor: The screen made for watching: alerts and events beside the pools.
        refresh_every: Seconds between refreshes of every pool (None: on demand).
    """

    TITLE = "storage-console"
    CSS_PATH = CSS_PATH
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", show=False),  # as everywhere; ? lists it
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+t", "pick_theme", "Theme…", show=False),  # or ctrl+p "Theme: …"
        Binding("ctrl+l", "redraw", "Redraw the screen", show=False),  # as in curses
    ]

    def __init__(self, inventory: Inventory, *, runner: Runner | None = None,
                 select: tuple[str, str] | None = None, refresh_on_start: bool = True,
                 clock: Callable[[], float] = time.time, theme: str | None = None,
                 cursor_blink: bool = True, monitor: bool = False,
                 refresh_every: float | None = None) -> None:
        # NO_COLOR: Textual then strips every colour rather than greying them.
        super().__init__(ansi_color=True if no_color() else None)
        self.inventory = inventory
        self.runner = runner
        self.wire = Wire()  # what the terminal shows: updates send only what changes
        self.main_screen: MainScreen | None = None
        if runner is not None:
            runner.on_update = self.job_updated
        self.select = select
        self.refresh_on_start = refresh_on_start
        self.clock = clock
        self.cursor_blink = cursor_blink
        self.monitor = monitor
        self.refresh_every = refresh_every
        self.theme_choice = ThemeChoice.load(inventory.config.source, inventory.config.theme)
        self.theme_choice.register(self)
        self.theme = self.theme_choice.start(self, theme)
        modes = ["read-only"] if inventory.read_only else []
        if monitor:
            modes.append("monitor")
        if refresh_every:
            modes.append(f"(refresh every {refresh_every:g}s)")
        if modes:
            self.sub_title = " ".join(modes)

    def get_default_screen(self) -> Screen[None]:
        self.main_screen = MainScreen(self.inventory, runner=self.runner, clock=self.clock,
                                      select=self.select,
                                      refresh_on_start=self.refresh_on_start,
                                      cursor_blink=self.cursor_blink, monitor=self.monitor,
                                      refresh_every=self.refresh_every)
        return self.main_screen

    def _display(self, screen: Screen[object], renderable: RenderableType | None) -> None:
        # Every update passes here on its way to the terminal: only changed cells go on.
        if renderable is not None and not self._batch_count:
            if self._running and not self._closed and self._driver is not None:
                cursor = self.screen.outer_size.clamp_offset(self.cursor_position)
                renderable = self.wire.filter(renderable, cursor, self.console)
            else:  # Textual writes nothing now: what the terminal shows is not known
                self.wire.forget()
        super()._display(screen, renderable)

    def action_redraw(self) -> None:
        """ctrl+l: write every cell again (something else wrote to the terminal)."""
        self.wire.forget()
        self.screen.refresh()

    def job_updated(self, job: JobRecord) -> None:
        """The runner's ``on_update``: called in job threads, so it only posts."""
        if self.main_screen is not None:
            self.main_screen.post_message(JobUpdated(job))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # q types into dialogs' fields; it quits only from the console and help.
        if action == "quit" and isinstance(self.screen, ModalScreen):
            return isinstance(self.screen, HelpScreen)
        return True

    async def action_quit(self) -> None:
        running = self.main_screen.jobs_running_here() if self.main_screen else []
        if not running:
            self.exit()
            return
        ids = ", ".join(str(i) for i in running)
        self.push_screen(
            ConfirmScreen("Quit?", f"Jobs started here are still running ({ids}). Quitting "
                          "cancels them; each removes what it wrote. Quit anyway?",
                          "Quit and cancel"),
            lambda yes: self.exit() if yes else None)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(binding_sections(self, self.screen)))

    @on(events.Mount)
    def _follow_signals(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_picked)
        self.theme_choice.report_problems(self)
        # Back from a suspend (SIGCONT): the terminal's cells are not what we wrote.
        self.app_resume_signal.subscribe(self, lambda _app: self.action_redraw())

    def _theme_picked(self, theme: Theme) -> None:
        self.theme_choice.picked(self, theme)

    def action_pick_theme(self) -> None:
        self.search_commands([(c.name, c.callback, c.help)
                              for c in self.theme_choice.commands(self)],
                             placeholder="Theme…")

    def palette_commands(self) -> Iterable[PaletteCommand]:
        yield PaletteCommand("Help: keys", "Every key binding", self.action_help)
        yield from self.theme_choice.commands(self)
        yield PaletteCommand("Quit", "Leave storage-console", self.action_quit)
