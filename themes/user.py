"""User themes: ``*.toml`` files in the config dir's ``themes/``, one theme each.

```toml
name = "solarized"        # what the palette ("Theme: solarized") and --theme call it
dark = true               # optional, default true
primary = "#268BD2"       # required; any colour Textual reads: "#RGB", "rgb(...)", "ansi_red"
background = "#002B36"    # optional, as are secondary, accent, warning, error, success,
foreground = "#839496"    # surface, panel, boost
[variables]               # optional: Textual's theme variables, e.g.
block-cursor-text-style = "reverse"
```

A file that cannot be used is reported (its path and line) and skipped: a typo in a theme
never keeps the console from starting.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from themes import COLOURS

KEYS = ("name", "dark", "variables", *COLOURS)
TEXT_STYLES = {"bold", "b", "dim", "d", "italic", "i", "underline", "u", "reverse", "r",
               "strike", "s", "blink", "none", "not"}


@dataclass(frozen=True)
class ThemeFileError:
    """Why a theme file was skipped; ``line`` is 1-based, None when no line is to blame."""

    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"theme file {where}: {self.reason}; the theme is skipped (fix the file)"


class _Invalid(Exception):
    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


def load_user_themes(directory: Path, taken: Collection[str] = ()
                     ) -> tuple[list[Theme], list[ThemeFileError]]:
    """The themes of ``directory``'s ``*.toml`` files (sorted by file name), and what was
    wrong with the others. ``taken`` are names a user theme may not reuse (built-in
    themes); of two files naming the same theme the first wins."""
    themes: list[Theme] = []
    errors: list[ThemeFileError] = []
    try:
        paths = sorted(p for p in directory.glob("*.toml") if p.is_file())
    except OSError as err:
        return [], [ThemeFileError(directory, None, f"cannot list the directory: {err}")]
    names = set(taken)
    for path in paths:
        found = load_theme_file(path, names)
        if isinstance(found, ThemeFileError):
            errors.append(found)
        else:
            names.add(found.name)
            themes.append(found)
    return themes, errors


def load_theme_file(path: Path, taken: Collection[str] = ()) -> Theme | ThemeFileError:
    """One theme file as a Theme, or why it cannot be one (its name among ``taken``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return ThemeFileError(path, None, f"cannot read it: {err}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"line (\d+)", str(err))
        return ThemeFileError(path, int(match.group(1)) if match else None,
                              f"not valid TOML: {err}")
    try:
        theme = _theme(data)
    except _Invalid as err:
        return ThemeFileError(path, _line_of(text, err.key), err.reason)
    if theme.name in taken:
        return ThemeFileError(path, _line_of(text, "name"),
                              f"a theme named {theme.name!r} exists already")
    return theme


def _theme(data: dict[str, object]) -> Theme:
    for key in data:
        if key not in KEYS:
            raise _Invalid(f"unknown key {key!r} (known: {', '.join(KEYS)})", key)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise _Invalid("'name' must be a non-empty string", "name" if "name" in data else None)
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise _Invalid("'dark' must be true or false", "dark")
    if "primary" not in data:
        raise _Invalid("'primary' is required (a colour, like \"#4C9BE8\")")
    colours = {key: _colour(data, key) for key in COLOURS if key in data}
    raw_variables = data.get("variables", {})
    if not isinstance(raw_variables, dict):
        raise _Invalid("'variables' must be a table ([variables])", "variables")
    variables: dict[str, str] = {}
    for key, value in raw_variables.items():
        if not isinstance(value, str):
            raise _Invalid(f"variable {key!r} must be a string", key)
        if key.endswith("text-style"):
            if not set(value.split()) <= TEXT_STYLES:
                raise _Invalid(f"variable {key!r}: {value!r} is not a text style "
                               f"(bold, underline, reverse, ...)", key)
        else:
            _parse_colour(value, f"variable {key!r}", key)
        variables[key] = value
    get = colours.get
    return Theme(name=name.strip(), primary=colours["primary"], secondary=get("secondary"),
                 accent=get("accent"), warning=get("warning"), error=get("error"),
                 success=get("success"), foreground=get("foreground"),
                 background=get("background"), surface=get("surface"), panel=get("panel"),
                 boost=get("boost"), dark=dark, variables=variables)


def _colour(data: dict[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise _Invalid(f"{key!r} must be a colour string, like \"#4C9BE8\"", key)
    _parse_colour(value, repr(key), key)
    return value


def _parse_colour(value: str, what: str, key: str) -> None:
    try:
        Color.parse(value)
    except ColorParseError:
        raise _Invalid(f"{what}: {value!r} is not a colour (use \"#RRGGBB\", "
                       f"\"rgb(r,g,b)\" or a name like \"ansi_red\")", key) from None


def _line_of(text: str, key: str | None) -> int | None:
    """The first line assigning ``key`` (tomllib keeps no positions)."""
    if key is None:
        return None
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None
