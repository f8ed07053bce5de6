"""Which domains use which volumes, from the disk sources in every domain's XML.

A disk names its volume by file path (``<source file=...>``), device path (``dev``), or
pool and volume (``<source pool=... volume=...>``, type volume); its ``<backingStore>``
chain names the images beneath it, which a running domain holds open too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class DiskUsers:
    """Domain names by volume path and by (pool, volume), and the running ones."""

    by_path: dict[str, list[str]] = field(default_factory=dict)
    by_volume: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)

    def users(self, pool: str, name: str, path: str) -> tuple[str, ...]:
        found = dict.fromkeys(self.by_path.get(path, ()))
        found.update(dict.fromkeys(self.by_volume.get((pool, name), ())))
        return tuple(sorted(found))

    def running_users(self, pool: str, name: str, path: str) -> tuple[str, ...]:
        return tuple(d for d in self.users(pool, name, path) if d in self.running)


def disk_sources(xml: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(paths, (pool, volume) pairs) the domain's disks and their chains name."""
    root = ET.fromstring(xml)
    paths: list[str] = []
    volumes: list[tuple[str, str]] = []
    for disk in root.iterfind("devices/disk"):
        node: ET.Element | None = disk
        while node is not None:
            source = node.find("source")
            if source is not None:
                for attribute in ("file", "dev"):
                    value = source.get(attribute)
                    if value:
                        paths.append(value)
                if source.get("pool") and source.get("volume"):
                    volumes.append((source.get("pool", ""), source.get("volume", "")))
            node = node.find("backingStore")
    return paths, volumes


def collect_users(domains: Iterable[tuple[str, bool, str]]) -> DiskUsers:
    """From (name, running, XML) of every domain."""
    users = DiskUsers()
    for name, running, xml in domains:
        paths, volumes = disk_sources(xml)
        for path in paths:
            users.by_path.setdefault(path, []).append(name)
        for pair in volumes:
            users.by_volume.setdefault(pair, []).append(name)
        if running:
            users.running.add(name)
    return users
