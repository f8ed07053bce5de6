"""The audit log: every command run on every host, who asked, when, the argv, the exit
status and how long it took. Kept beside the journal (durable state, not the cache).

Transports report each command they run to ``AuditLog.record`` (wired by the inventory),
so nothing that changes storage runs unrecorded, whichever layer asked for it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from console.database import Database
from console.jobs.journal import who_am_i

_acting = threading.local()  # who the commands of this thread are run for, when not us


@contextlib.contextmanager
def acting_as(who: str) -> Iterator[None]:
    """Record the commands this thread runs meanwhile as ``who``: a job another job
    started (``user@host, started by job 7``) says so in every entry of its commands."""
    before = getattr(_acting, "who", None)
    _acting.who = who
    try:
        yield
    finally:
        _acting.who = before


@dataclass(frozen=True)
class AuditEntry:
    id: int
    when: float
    who: str
    host: str
    argv: tuple[str, ...]
    returncode: int
    duration: float


class AuditLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.who = who_am_i()
        self.db = Database(self.path, synchronous="FULL")
        self.conn.execute("""CREATE TABLE IF NOT EXISTS audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
            host TEXT NOT NULL, argv TEXT NOT NULL, returncode INTEGER NOT NULL,
            duration REAL NOT NULL)""")

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def record(self, host: str, argv: tuple[str, ...], returncode: int,
               duration: float) -> None:
        # Names may not be UTF-8: keep them as the surrogate escapes JSON can carry.
        self.conn.execute(
            "INSERT INTO audit (at, who, host, argv, returncode, duration) "
            "VALUES (?,?,?,?,?,?)",
            (time.time(), getattr(_acting, "who", None) or self.who, host,
             json.dumps(list(argv)), returncode, duration))

    def entries(self, *, host: str | None = None, limit: int = 200) -> list[AuditEntry]:
        """Newest first."""
        sql = "SELECT id, at, who, host, argv, returncode, duration FROM audit"
        args: list[object] = []
        if host is not None:
            sql += " WHERE host=?"
            args.append(host)
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [AuditEntry(i, at, who, h, tuple(json.loads(a)), rc, d)
                for i, at, who, h, a, rc, d in rows]
