"""Backing chains as a forest: bases as roots, what is based on each below it.

Plain Python over cached rows (``VolumeRow``) or volumes found on disk (``Volume``): no
I/O here, so the UI builds a forest of 100,000 volumes in a thread and only paints it.
A node is keyed by ``(host, path)``: paths are per host, and a backing may live in
another pool. Links named in a chain that the cache has no row for still get a node
(from the link's format and size) so a chain is never cut in the middle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from backends.model import Volume
from console.cache import LinkRow, VolumeRow

PROBLEM_WORDS = {
    "missing": "backing is missing",
    "loop": "backing loops back",
    "escape": "backing is outside the allowed roots",
    "not-regular": "backing is not a regular file",
    "undeclared-format": "backing has no declared format: not followed",
    "unreadable": "backing is unreadable",
    "too-deep": "chain too deep: not followed further",
}
LOOP = "loops back onto itself"  # found here, when cached chains contradict each other
MAX_GUIDES = 24  # levels of guide lines drawn; deeper ones start with an ellipsis

Key = tuple[str, str]  # (host, path)


@dataclass(frozen=True)
class ChainEntry:
    """What a node shows. ``pool`` is None for a link the cache has no row for."""

    host: str
    path: str
    name: str
    pool: str | None
    format: str
    capacity: int
    allocation: int | None
    readonly: bool = False
    health: str | None = None
    problem: str | None = None  # the chain's problem, where the chain stops

    @property
    def key(self) -> Key:
        return (self.host, self.path)

    @classmethod
    def of_row(cls, row: VolumeRow) -> ChainEntry:
        return cls(row.host, row.path, row.name, row.pool, row.format, row.capacity,
                   row.allocation, row.readonly, row.health)

    @classmethod
    def of_link(cls, host: str, link: LinkRow) -> ChainEntry:
        return cls(host, link.path, os.path.basename(link.path), None, link.format,
                   link.capacity, None)

    @classmethod
    def of_volume(cls, volume: Volume, health: str | None = None) -> ChainEntry:
        return cls(volume.host, volume.path, volume.name, volume.pool, str(volume.format),
                   volume.capacity, volume.allocation, volume.readonly, health)


def problem_text(problem: str, path: str | None) -> str:
    words = PROBLEM_WORDS.get(problem, problem)
    return f"{words}: {path}" if path else words


@dataclass(eq=False)
class ChainNode:
    entry: ChainEntry
    children: list[ChainNode] = field(default_factory=list)
    distance: int | None = None  # from the volume asked about (the dependants view)

    @property
    def unreferenced(self) -> bool:
        """A snapshot nothing is based on (a candidate for cleaning)."""
        entry = self.entry
        return entry.readonly and entry.pool is not None and entry.format != "iso" \
            and not self.children


@dataclass(frozen=True)
class ForestLine:
    node: ChainNode
    depth: int
    guides: str  # tree guides drawn before the node, "│  ├─ "
    match: bool  # its name matched the filter


def build_forest(rows: Iterable[VolumeRow]) -> list[ChainNode]:
    """The forest of ``rows``: roots (bases, volumes without backing, orphans) sorted by
    host, pool and name; children sorted by name."""
    entries: dict[Key, ChainEntry] = {}
    direct: dict[Key, Key] = {}  # a row's own backing: what it says wins
    deeper: dict[Key, Key] = {}  # links further down, as some chain saw them
    problems: dict[Key, str] = {}
    for row in rows:
        key = (row.host, row.path)
        entries[key] = ChainEntry.of_row(row)
        below = key
        for i, link in enumerate(row.chain):
            lk = (row.host, link.path)
            entries.setdefault(lk, ChainEntry.of_link(row.host, link))
            (direct if i == 0 else deeper).setdefault(below, lk)
            below = lk
        if row.chain_problem:
            problems.setdefault(below, problem_text(row.chain_problem,
                                                    row.chain_problem_path))
    for key, text in problems.items():
        entries[key] = replace(entries[key], problem=text)
    parent = {**deeper, **direct}
    parent = {k: p for k, p in parent.items() if k != p}
    nodes = {key: ChainNode(entry) for key, entry in entries.items()}
    for key, p in parent.items():
        nodes[p].children.append(nodes[key])
    roots = [nodes[k] for k in nodes if k not in parent]
    seen = _walk(roots)
    if len(seen) < len(nodes):  # contradicting chains made a cycle: cut each once
        for key in sorted(nodes):
            if key in seen:
                continue
            node = nodes[key]
            nodes[parent[key]].children.remove(node)
            if node.entry.problem is None:
                node.entry = replace(node.entry, problem=LOOP)
            roots.append(node)
            seen |= _walk([node])
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.entry.name, n.entry.pool or "", n.entry.path))
    roots.sort(key=lambda n: (n.entry.host, n.entry.pool is None, n.entry.pool or "",
                              n.entry.name, n.entry.path))
    return roots


def based_on(path: str, volumes: Iterable[Volume]) -> list[tuple[int, Volume]]:
    """Every volume of ``volumes`` based on the one at ``path``, directly (1) or through
    others (2, 3, ...), with that distance; paths compared resolved."""
    target = os.path.realpath(path)
    found: list[tuple[int, Volume]] = []
    for other in volumes:
        below = [os.path.realpath(link.path) for link in other.chain.links[1:]]
        if target in below:
            found.append((below.index(target) + 1, other))
    return found


def build_dependants(volume: ChainEntry, found: Sequence[tuple[int, ChainEntry, str | None]],
                     ) -> list[ChainNode]:
    """``volume`` as the one root, what is based on it below (``found``: distance, the
    dependant, the path it is directly based on), each with its distance."""
    root = ChainNode(volume, distance=0)
    nodes: dict[Key, ChainNode] = {volume.key: root}
    for distance, entry, _ in found:
        nodes.setdefault(entry.key, ChainNode(entry, distance=distance))
    for distance, entry, backing in sorted(found, key=lambda f: (f[0], f[1].name)):
        node = nodes[entry.key]
        if node is root:
            continue
        parent = nodes.get((entry.host, backing)) if backing else None
        # A dependant's backing is one of them or the volume, unless the disk changed
        # under us: hang it under the volume rather than lose it.
        if parent is None or parent is node or parent.distance is None \
                or parent.distance >= distance:
            parent = root
        parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.entry.name, n.entry.pool or "", n.entry.path))
    return [root]


def _walk(roots: Iterable[ChainNode]) -> set[Key]:
    seen: set[Key] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        seen.add(node.entry.key)
        stack.extend(node.children)
    return seen


def count_nodes(roots: Iterable[ChainNode]) -> int:
    return len(_walk(roots))


def flatten(roots: Sequence[ChainNode], needle: str = "") -> list[ForestLine]:
    """The forest as lines, depth first. With ``needle``, only nodes whose name contains
    it (case-insensitive), their ancestors and their descendants."""
    needle = needle.casefold()
    keep: set[int] | None = None
    if needle:
        keep = _kept(roots, needle)
    lines: list[ForestLine] = []
    # (node, depth, guides of its ancestors, is it the last of its siblings)
    stack: list[tuple[ChainNode, int, tuple[str, ...], bool]] = [
        (root, 0, (), True) for root in reversed(roots)]
    while stack:
        node, depth, above, last = stack.pop()
        if keep is not None and id(node) not in keep:
            continue
        guides = "".join(above) + (("└─ " if last else "├─ ") if depth else "")
        if depth - 1 > MAX_GUIDES:
            guides = "… " + guides
        lines.append(ForestLine(node, depth, guides,
                                bool(needle) and needle in node.entry.name.casefold()))
        children = node.children if keep is None else \
            [c for c in node.children if id(c) in keep]
        # Only the last MAX_GUIDES levels are drawn: a chain of 100,000 stays linear.
        below = (*above, "   " if last else "│  ")[-MAX_GUIDES:] if depth else above
        for i in range(len(children) - 1, -1, -1):
            stack.append((children[i], depth + 1, below, i == len(children) - 1))
    return lines


def _kept(roots: Sequence[ChainNode], needle: str) -> set[int]:
    """ids of the nodes a filter keeps: matches, their ancestors and descendants."""
    keep: set[int] = set()
    parent_of: dict[int, ChainNode] = {}
    stack: list[tuple[ChainNode, bool]] = [(root, False) for root in roots]
    while stack:
        node, inherited = stack.pop()  # inherited: an ancestor matched
        matched = needle in node.entry.name.casefold()
        if matched or inherited:
            keep.add(id(node))
        if matched:  # depth first: kept ancestors have theirs kept already
            up = parent_of.get(id(node))
            while up is not None and id(up) not in keep:
                keep.add(id(up))
                up = parent_of.get(id(up))
        for child in node.children:
            parent_of[id(child)] = node
            stack.append((child, matched or inherited))
    return keep
