"""Which theme the console shows: at start (--theme, NO_COLOR, config.toml), from the
palette ("Theme: NAME", ctrl+t), and remembered in config.toml when the user picks one.

Precedence at start: ``--theme`` (an explicit choice beats the environment), then
NO_COLOR (the monochrome theme), then the theme config.toml remembers, then the default.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App
from textual.theme import BUILTIN_THEMES, Theme

from console.config import ConfigError, config_path, set_theme, themes_dir
from console.ui.commands import PaletteCommand
from themes import DEFAULT_THEME, MONO_THEME, THEMES, for_colour_system
from themes.user import load_user_themes

DESCRIPTIONS = {
    "storage-dark": "dark background (the default)",
    "storage-light": "light background",
    "storage-high-contrast": "black and bright colours of the 16-colour palette",
    "storage-mono": "no colour: bold, reverse, underline (chosen when NO_COLOR is set)",
}


class UnknownTheme(ValueError):
    """``--theme`` names no theme; the message lists those there are."""


def no_color(environ: Mapping[str, str] | None = None) -> bool:
    """NO_COLOR as Textual reads it: set at all, even empty."""
    return "NO_COLOR" in (os.environ if environ is None else environ)


@dataclass
class ThemeChoice:
    """The console's themes (built-in and the user's) and where the pick is remembered.

    Args:
        user_themes: Themes read from the config dir's ``themes/``.
        problems: Theme files that were skipped, and the remembered theme when it is gone.
        config_file: The config.toml the pick is written to.
        remembered: The theme config.toml names now.
    """

    user_themes: list[Theme]
    problems: list[str]
    config_file: Path
    remembered: str | None = None
    _writing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, config_file: Path | None, remembered: str | None,
             directory: Path | None = None) -> ThemeChoice:
        """Read the user's theme files (small, read once before the event loop runs)."""
        taken = {t.name for t in THEMES} | set(BUILTIN_THEMES)
        found, errors = load_user_themes(directory or themes_dir(), taken)
        return cls(found, [str(e) for e in errors], config_file or config_path(),
                   remembered)

    @property
    def themes(self) -> list[Theme]:
        """The console's own themes, then the user's: what "Theme: …" offers."""
        return [*THEMES, *self.user_themes]

    def register(self, app: App[Any]) -> None:
        """Each theme as the app's terminal shows it best (its own 16-colour choices)."""
        for theme in self.themes:
            app.register_theme(for_colour_system(theme, app.console.color_system))

    def start(self, app: App[Any], asked: str | None,
              environ: Mapping[str, str] | None = None) -> str:
        """The theme to open with (after ``register``).

        Raises:
            UnknownTheme: ``asked`` is no registered theme.
        """
        available = app.available_themes
        if asked is not None:
            if asked not in available:
                ours = ", ".join(t.name for t in self.themes)
                raise UnknownTheme(f"no theme {asked!r}: the themes are {ours} (and "
                                   f"Textual's own: {', '.join(sorted(BUILTIN_THEMES))})")
            return asked
        if no_color(environ):
            return MONO_THEME
        if self.remembered is not None:
            if self.remembered in available:
                return self.remembered
            self.problems.append(f"{self.config_file}: theme {self.remembered!r} is not "
                                 f"available (was its file removed?); showing "
                                 f"{DEFAULT_THEME}: pick one with ctrl+t")
        return DEFAULT_THEME

    def commands(self, app: App[Any]) -> Iterable[PaletteCommand]:
        """"Theme: NAME" for each theme; picking one shows it (and remembers it)."""
        for theme in self.themes:
            about = DESCRIPTIONS.get(theme.name, "your theme file")
            if theme.name == app.theme:
                about = f"shown now: {about}"
            yield PaletteCommand(f"Theme: {theme.name}", about,
                                 partial(setattr, app, "theme", theme.name))

    def picked(self, app: App[Any], theme: Theme) -> None:
        """The app's theme changed (palette, ctrl+t, Textual's theme picker): remember it
        in a thread, as it writes and fsyncs a file."""
        if theme.name != self.remembered:
            app.run_worker(partial(self.remember, app, theme.name), thread=True,
                           group="theme", description=f"remember theme {theme.name}")

    def remember(self, app: App[Any], name: str) -> None:
        """Write ``name`` into config.toml (thread). One write at a time: two quick picks
        share the temp file's name."""
        with self._writing:
            try:
                set_theme(name, self.config_file)
            except ConfigError as err:
                app.call_from_thread(app.notify, f"{err}: the theme is shown, not remembered",
                                     title="theme", severity="warning", timeout=10)
                return
            self.remembered = name

    def report_problems(self, app: App[Any]) -> None:
        for problem in self.problems:
            app.notify(problem, title="theme", severity="warning", timeout=15)

