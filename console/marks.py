"""Marked volumes: the set a bulk action works on, across pools and hosts.

Keyed by (host, pool, volume) so marks survive moving between pools; each keeps the
volume's sizes as the cache had them when marked, for the running count and total.
Plain Python (no Textual): the volume table holds one, the bulk planner reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from console.cache import VolumeRow

MarkKey = tuple[str, str, str]  # (host, pool, volume)


@dataclass(frozen=True)
class Mark:
    host: str
    pool: str
    volume: str
    capacity: int
    allocation: int

    @property
    def key(self) -> MarkKey:
        return (self.host, self.pool, self.volume)

    @classmethod
    def of_row(cls, row: VolumeRow) -> Mark:
        return cls(row.host, row.pool, row.name, row.capacity, row.allocation)


def _key(row: VolumeRow) -> MarkKey:
    return (row.host, row.pool, row.name)


class Marks:
    """An ordered set of marks (in the order they were made)."""

    def __init__(self) -> None:
        self._marks: dict[MarkKey, Mark] = {}

    def __len__(self) -> int:
        return len(self._marks)

    def __bool__(self) -> bool:
        return bool(self._marks)

    def __iter__(self) -> Iterator[Mark]:
        return iter(list(self._marks.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._marks

    def is_marked(self, row: VolumeRow) -> bool:
        return _key(row) in self._marks

    def add(self, rows: Iterable[VolumeRow]) -> int:
        """Mark ``rows``; returns how many were not marked before."""
        added = 0
        for row in rows:
            mark = Mark.of_row(row)
            if mark.key not in self._marks:
                added += 1
            self._marks[mark.key] = mark
        return added

    def toggle(self, row: VolumeRow) -> bool:
        """Mark or unmark ``row``; True when it is marked now."""
        key = _key(row)
        if key in self._marks:
            del self._marks[key]
            return False
        self._marks[key] = Mark.of_row(row)
        return True

    def clear(self) -> int:
        count = len(self._marks)
        self._marks.clear()
        return count

    def in_pool(self, host: str, pool: str) -> list[Mark]:
        return [m for m in self._marks.values() if (m.host, m.pool) == (host, pool)]

    def keep_only(self, host: str, pool: str, present: Iterable[str]) -> list[Mark]:
        """Drop the marks of ``pool`` whose volume is not in ``present`` (it vanished on
        refresh); returns the dropped ones."""
        names = set(present)
        gone = [m for m in self.in_pool(host, pool) if m.volume not in names]
        for mark in gone:
            del self._marks[mark.key]
        return gone

    @property
    def capacity(self) -> int:
        return sum(m.capacity for m in self._marks.values())

    @property
    def allocation(self) -> int:
        return sum(m.allocation for m in self._marks.values())

    def places(self) -> int:
        """How many pools the marks span."""
        return len({(m.host, m.pool) for m in self._marks.values()})
