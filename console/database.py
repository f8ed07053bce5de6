"""A SQLite file shared by threads: one connection per thread, explicit transactions.

The cache, the journal and the audit log all need this; they differ in durability
(``synchronous``): the cache can lose its last writes, the journal cannot.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path


class Database:
    """``path`` None: a private in-memory database shared by this object's threads."""

    def __init__(self, path: Path | None, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._memory_uri = f"file:sc-memory-{id(self)}?mode=memory&cache=shared"
        # A shared-cache database locks tables, and SQLite's busy timeout does not
        # cover that: writers take turns here, readers read uncommitted rows.
        self._memory_writer = threading.RLock()
        # An in-memory database lives as long as one connection to it does.
        self._keepalive = self._connect() if path is None else None

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            memory = sqlite3.connect(self._memory_uri, uri=True, check_same_thread=False,
                                     isolation_level=None)
            memory.execute("PRAGMA read_uncommitted=1")
            return memory
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
        conn = self.conn
        with self._memory_writer if self.path is None else nullcontext():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close_thread(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn = self._local.__dict__.pop("conn", None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self.close_thread()
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None
