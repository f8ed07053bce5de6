"""The console's Textual themes and its stylesheet, registered at start-up.

Widgets style themselves in ``DEFAULT_CSS`` with theme variables (``$primary``,
``$success``, ``$warning``, ``$error`` ...), so every theme here only picks colours.
"""

from __future__ import annotations

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

THEMES: tuple[Theme, ...] = (STORAGE_DARK, STORAGE_LIGHT)
DEFAULT_THEME = STORAGE_DARK.name


def other_theme(name: str) -> str:
    """The theme ``t`` switches to from ``name``: dark <-> light."""
    return STORAGE_LIGHT.name if name == STORAGE_DARK.name else STORAGE_DARK.name
