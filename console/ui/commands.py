"""The command palette (ctrl+p): every action the console offers right now.

Screens and the app describe their commands (``palette_commands``) and hide what they
cannot do (read-only, driver without the capability), so the palette never offers an
action that a key would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class PaletteCommand:
    name: str
    help: str
    callback: Callable[[], object]


@runtime_checkable
class CommandSource(Protocol):
    def palette_commands(self) -> Iterable[PaletteCommand]: ...


class ConsoleCommands(Provider):
    """Commands of the screen the palette was opened on, then the app's."""

    def _commands(self) -> list[PaletteCommand]:
        commands: list[PaletteCommand] = []
        for source in (self.screen, self.app):
            if isinstance(source, CommandSource):
                commands.extend(source.palette_commands())
        return commands

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.callback,
                          text=command.name, help=command.help)
