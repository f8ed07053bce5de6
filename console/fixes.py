"""Fixes: what a check proposes to make storage better, each one a job to run.

A check (``console.checks``) looks at volumes and pools and returns ``Finding``s (what
is wrong, with its evidence) and the ``Fix``es that would mend them. A fix names its
type (``clean``, ``optimize``, ``merge``, ``mend``), its target, why, the space it
frees or takes, its risk, and the commands it will run; running it is the job
``console.jobs.fixing.RunFix`` (progress, cancel, locks, reservations, audit), refused
on volumes in use, after which the volume is checked again.

Plain data, no I/O: the console shows these, the command line prints them as JSON, and
the journal stores a fix's ``params`` to run it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FixType(StrEnum):
    CLEAN = "clean"  # leftovers, leaked clusters, zeroed ranges, snapshots marked for removal
    OPTIMIZE = "optimize"  # flatten a deep chain, amend compat 0.10, convert
    MERGE = "merge"  # commit a snapshot into its base, rebase to drop an intermediate
    MEND = "mend"  # repair corruption (after a backup), clear a dirty bit, relink


class Risk(StrEnum):
    NONE = "none"  # nothing a guest sees changes (a leftover temporary file)
    LOW = "low"  # metadata rewritten, data unchanged (leaks, compat, rebase -u on a copy)
    MEDIUM = "medium"  # data moved between images (commit, flatten): checked after
    HIGH = "high"  # repairing corruption: a backup first, and an explicit confirmation


class Severity(StrEnum):
    """How a finding ranks on the fixes screen (the place to look first)."""

    BROKEN = "broken"
    DEGRADED = "degraded"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One thing a check found about one volume (or pool), with its evidence."""

    host: str
    pool: str
    volume: str | None  # None: about the pool
    severity: Severity
    code: str  # stable, for scripts: "leaked-clusters", "chain-too-deep", ...
    reason: str  # one line for a person, naming what and how much
    possibly_inconsistent: bool = False  # read with force-share while a QEMU writes it


@dataclass(frozen=True)
class Fix:
    """A proposed repair. ``params`` is what the job needs to run it (JSON-able)."""

    type: FixType
    host: str
    pool: str
    volume: str | None
    code: str  # the finding it answers
    reason: str
    space_change: int  # bytes: negative frees space, positive takes it (estimated)
    risk: Risk
    commands: tuple[tuple[str, ...], ...]  # what it will run, in order
    params: dict[str, Any] = field(default_factory=dict)
    needs_confirmation: bool = False  # HIGH risk: the user confirms explicitly

    @property
    def id(self) -> str:
        """Stable across checks of the same state: ``fix ID`` names it later."""
        key = json.dumps([self.type, self.host, self.pool, self.volume, self.code,
                          self.params], sort_keys=True, default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "type": str(self.type), "host": self.host,
                "pool": self.pool, "volume": self.volume, "code": self.code,
                "reason": self.reason, "space_change": self.space_change,
                "risk": str(self.risk), "commands": [list(c) for c in self.commands],
                "needs_confirmation": self.needs_confirmation, "params": self.params}
