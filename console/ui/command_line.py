"""The ``:`` command line without the widget: parsing, name completion and history.

Plain Python (no Textual) so it is tested alone; ``widgets/command_bar.py`` draws it and
the main screen carries out what ``parse`` returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Verb = Literal["host", "pool", "jobs", "fixes", "audit", "quit"]

# Every spelling the line takes, and what it means; the first of each is the one shown.
VERBS: dict[str, Verb] = {"host": "host", "pool": "pool", "jobs": "jobs", "fixes": "fixes",
                          "audit": "audit", "quit": "quit", "q": "quit"}
USAGE = ":host NAME, :pool [HOST:]POOL, :jobs, :fixes, :audit, :q"
NEEDS_NAME: frozenset[Verb] = frozenset({"host", "pool"})


class CommandError(ValueError):
    """The line cannot be carried out; the text says why and what would work."""


@dataclass(frozen=True)
class Command:
    """What a line asks for: ``host`` names the host of ``host`` and ``pool`` jumps."""

    verb: Verb
    host: str | None = None
    pool: str | None = None


def parse(line: str, hosts: Sequence[str], pools: Sequence[tuple[str, str]], *,
          current_host: str | None = None) -> Command:
    """The command ``line`` (with or without its leading ``:``) names.

    Args:
        hosts: The configured host names.
        pools: The configured ``(host, pool)`` pairs.
        current_host: A bare pool name found on several hosts means this host's.

    Raises:
        CommandError: Unknown command, missing or unknown name, ambiguous pool.
    """
    words = line.strip().removeprefix(":").split(None, 1)
    if not words:
        raise CommandError(f"no command; try {USAGE}")
    word, rest = words[0], (words[1].strip() if len(words) > 1 else "")
    verb = VERBS.get(word)
    if verb is None:
        raise CommandError(f"unknown :{word}; try {USAGE}")
    if verb not in NEEDS_NAME:
        if rest:
            raise CommandError(f":{word} takes no name (got {rest!r})")
        return Command(verb)
    if not rest:
        raise CommandError(f":{word} needs a name: "
                           + (":host NAME" if verb == "host" else ":pool NAME or HOST:POOL"))
    if verb == "host":
        return Command("host", host=_find_host(rest, hosts))
    host, pool = _find_pool(rest, pools, current_host)
    return Command("pool", host=host, pool=pool)


def _find_host(name: str, hosts: Sequence[str]) -> str:
    if name in hosts:
        return name
    matches = [h for h in hosts if h.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CommandError(f"host {name!r} could be {_listed(matches)}: type more of it")
    raise CommandError(f"no host {name!r} in the config; hosts: {_listed(hosts)}")


def _find_pool(name: str, pools: Sequence[tuple[str, str]],
               current_host: str | None) -> tuple[str, str]:
    exact = [(h, p) for h, p in pools if p == name]
    if not exact and ":" in name:  # HOST:POOL, unless a pool is named with the colon
        host, _, pool = name.partition(":")
        if (host, pool) in pools:
            return host, pool
        if not any(h == host for h, _ in pools):
            raise CommandError(f"no host {host!r} in the config; hosts: "
                               f"{_listed(dict.fromkeys(h for h, _ in pools))}")
        raise CommandError(f"host {host} has no pool {pool!r}; its pools: "
                           f"{_listed(p for h, p in pools if h == host)}")
    if not exact:
        exact = [(h, p) for h, p in pools if p.startswith(name)]
    if len(exact) == 1:
        return exact[0]
    if exact:
        mine = [key for key in exact if key[0] == current_host and key[1] == name]
        if len(mine) == 1:
            return mine[0]
        raise CommandError(f"pool {name!r} could be {_listed(f'{h}:{p}' for h, p in exact)}: "
                           "say HOST:POOL")
    raise CommandError(f"no pool {name!r} in the config; pools: "
                       f"{_listed(f'{h}:{p}' for h, p in pools)}")


def _listed(names: Iterable[str], limit: int = 6) -> str:
    names = list(names)
    if not names:
        return "none"
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def completions(line: str, hosts: Sequence[str],
                pools: Sequence[tuple[str, str]]) -> list[str]:
    """Whole lines that complete ``line``: a command word, then a host or pool name
    (a pool found on several hosts is offered as HOST:POOL)."""
    text = line.removeprefix(":")
    if " " not in text:
        return [f":{verb} " if verb in NEEDS_NAME else f":{verb}"
                for verb in dict.fromkeys(VERBS) if verb.startswith(text) and verb != "q"]
    word, _, partial = text.partition(" ")
    partial = partial.lstrip()
    verb = VERBS.get(word)
    if verb == "host":
        names = list(hosts)
    elif verb == "pool" and ":" in partial:
        names = [f"{h}:{p}" for h, p in pools]
    elif verb == "pool":
        count = Counter(p for _, p in pools)
        names = list(dict.fromkeys(p if count[p] == 1 else f"{h}:{p}" for h, p in pools))
    else:
        return []
    return [f":{word} {name}" for name in names if name.startswith(partial)]


class History:
    """Lines run before, oldest first; ``older``/``newer`` walk them as a shell does
    (the line being typed comes back after the newest)."""

    def __init__(self, limit: int = 100) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self._at: int | None = None  # index into lines while walking
        self._draft = ""

    def add(self, line: str) -> None:
        line = line.strip()
        if line:
            if line in self.lines:
                self.lines.remove(line)  # once, at its latest place
            self.lines.append(line)
            del self.lines[:-self.limit]
        self._at = None

    def older(self, draft: str) -> str:
        if not self.lines:
            return draft
        if self._at is None:
            self._draft, self._at = draft, len(self.lines)
        self._at = max(0, self._at - 1)
        return self.lines[self._at]

    def newer(self) -> str | None:
        """The next newer line, the draft after the newest; None when not walking."""
        if self._at is None:
            return None
        self._at += 1
        if self._at >= len(self.lines):
            self._at = None
            return self._draft
        return self.lines[self._at]
