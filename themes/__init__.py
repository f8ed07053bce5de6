"""The console's Textual themes and its stylesheet, registered at start-up.

Widgets style themselves in ``DEFAULT_CSS`` with theme variables (``$primary``,
``$success``, ``$warning``, ``$error`` ...), so every theme here only picks colours.
User themes (files in the config dir) are read by ``themes.user``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from textual.theme import Theme

CSS_PATH = Path(__file__).with_name("console.tcss")

STORAGE_DARK = Theme(
    name="storage-dark",
    primary="#4C9BE8",
    secondary="#2E6DA4",
    accent="#E0A030",
    warning="#E5C07B",
    error="#E06C75",
    success="#7BC47F",
    foreground="#D8DEE9",
    background="#14181F",
    surface="#1C222B",
    panel="#27303C",
    dark=True,
)

STORAGE_LIGHT = Theme(
    name="storage-light",
    primary="#1F6FB2",
    secondary="#3C5A80",
    accent="#B35C00",
    warning="#9A6700",
    error="#C62828",
    success="#2E7D32",
    foreground="#1F2328",
    background="#F6F7F9",
    surface="#FFFFFF",
    panel="#E3E7ED",
    dark=False,
)

# Colours of the 16-colour palette itself (xterm's bright set, black, white), so the
# theme looks the same on the linux console and under screen as in a truecolour xterm.
STORAGE_HIGH_CONTRAST = Theme(
    name="storage-high-contrast",
    primary="#55FFFF",
    secondary="#5555FF",
    accent="#FF55FF",
    warning="#FFFF55",
    error="#FF5555",
    success="#55FF55",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#000000",
    boost="#000000",
    dark=True,
    variables={
        "text-muted": "#FFFFFF",  # muted text blended to grey is too faint here
        "block-cursor-foreground": "#000000",
        "block-cursor-background": "#FFFFFF",
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-foreground": "#FFFFFF",
        "block-cursor-blurred-background": "#000000",
        "block-cursor-blurred-text-style": "underline",
        "footer-key-foreground": "#FFFF55",
        "footer-background": "#000000",
        "border": "#FFFFFF",
        "border-blurred": "#FFFFFF",
        "input-cursor-text-style": "reverse",
        "input-selection-background": "#5555FF",
        "scrollbar": "#FFFFFF",
        "scrollbar-background": "#000000",
    },
)

# No colour at all: the terminal's own foreground and background, and only bold,
# reverse and underline to tell things apart (the theme NO_COLOR selects).
_DEFAULT = "ansi_default"
STORAGE_MONO = Theme(
    name="storage-mono",
    ansi=True,
    primary=_DEFAULT,
    secondary=_DEFAULT,
    accent=_DEFAULT,
    warning=_DEFAULT,
    error=_DEFAULT,
    success=_DEFAULT,
    foreground=_DEFAULT,
    background=_DEFAULT,
    surface=_DEFAULT,
    panel=_DEFAULT,
    boost=_DEFAULT,
    dark=True,
    variables={
        "ansi-background": _DEFAULT,  # Textual's ANSI themes must define these two
        "ansi-foreground": _DEFAULT,
        "text-muted": _DEFAULT,
        "text-disabled": _DEFAULT,
        "foreground-muted": _DEFAULT,
        "block-cursor-foreground": _DEFAULT,
        "block-cursor-background": _DEFAULT,
        "block-cursor-text-style": "reverse bold",
        "block-cursor-blurred-foreground": _DEFAULT,
        "block-cursor-blurred-background": _DEFAULT,
        "block-cursor-blurred-text-style": "underline",
        "block-hover-background": _DEFAULT,
        "border": _DEFAULT,
        "border-blurred": _DEFAULT,
        "footer-key-foreground": _DEFAULT,
        "footer-background": _DEFAULT,
        "input-cursor-foreground": _DEFAULT,
        "input-cursor-background": _DEFAULT,
        "input-cursor-text-style": "reverse",
        "input-selection-background": _DEFAULT,
        "input-selection-foreground": _DEFAULT,
        "link-color": _DEFAULT,
        "link-color-hover": _DEFAULT,
        "link-background-hover": _DEFAULT,
        "scrollbar": _DEFAULT,
        "scrollbar-hover": _DEFAULT,
        "scrollbar-active": _DEFAULT,
        "scrollbar-background": _DEFAULT,
        "scrollbar-background-hover": _DEFAULT,
        "scrollbar-background-active": _DEFAULT,
        "screen-selection-background": _DEFAULT,
        "screen-selection-foreground": _DEFAULT,
    },
)

THEMES: tuple[Theme, ...] = (STORAGE_DARK, STORAGE_LIGHT, STORAGE_HIGH_CONTRAST,
                             STORAGE_MONO)
DEFAULT_THEME = STORAGE_DARK.name
MONO_THEME = STORAGE_MONO.name
# A Theme's colour fields (the rest of a theme's colours are its variables).
COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground",
           "background", "surface", "panel", "boost")

# What the themes become where the terminal has 16 colours (TERM=linux, screen, tmux,
# the Windows console): colours of that palette itself (Rich's), so its nearest-colour
# downgrade cannot merge two meanings (storage-dark's green and yellow both became grey,
# its accent and error one red). storage-dark's backgrounds are of the first 8, the
# linux console's backgrounds. High contrast is made of the palette already.
_SIXTEEN: dict[str, dict[str, str]] = {
    STORAGE_DARK.name: {
        "primary": "#55FFFF", "secondary": "#0000AA", "accent": "#FF55FF",
        "warning": "#FFFF55", "error": "#FF5555", "success": "#55FF55",
        "foreground": "#FFFFFF", "background": "#000000", "surface": "#000000",
        "panel": "#0000AA", "boost": "#000000",
        "text-muted": "#AAAAAA", "block-cursor-background": "#00AAAA",
        "block-cursor-foreground": "#000000",
        "block-cursor-blurred-background": "#0000AA",
        "block-cursor-blurred-foreground": "#FFFFFF",
    },
    STORAGE_LIGHT.name: {
        "primary": "#0000AA", "secondary": "#0000AA", "accent": "#AA00AA",
        "warning": "#AA5500", "error": "#AA0000", "success": "#00AA00",
        "foreground": "#000000", "background": "#FFFFFF", "surface": "#FFFFFF",
        "panel": "#AAAAAA", "boost": "#FFFFFF",
        "text-muted": "#555555", "block-cursor-foreground": "#FFFFFF",
        "block-cursor-blurred-background": "#00AAAA",
        "block-cursor-blurred-foreground": "#000000",
    },
}


def for_colour_system(theme: Theme, system: str | None) -> Theme:
    """``theme`` as a terminal of ``system`` (Rich's name: "standard", "256", ...) shows
    it best: its 16-colour choices where it has only 16 colours, else itself."""
    sixteen = _SIXTEEN.get(theme.name)
    if sixteen is None or system not in ("standard", "windows"):
        return theme
    get = sixteen.get
    variables = {k: v for k, v in sixteen.items() if k not in COLOURS}
    return replace(theme, primary=sixteen["primary"], secondary=get("secondary"),
                   accent=get("accent"), warning=get("warning"), error=get("error"),
                   success=get("success"), foreground=get("foreground"),
                   background=get("background"), surface=get("surface"),
                   panel=get("panel"), boost=get("boost"),
                   variables={**theme.variables, **variables})
