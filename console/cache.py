"""The SQLite cache of what discovery found: disposable, rebuildable, never authoritative.

The console paints from here at once; every refresh re-derives it from disk, and every
action re-probes the volume before acting. Deleted, it is rebuilt on the next refresh;
corrupt, it is moved aside with a warning and rebuilt; of another schema version, it is
dropped and rebuilt.

sqlite-utils owns the schema; the pool refresh writes with ``executemany`` inside one
explicit transaction, because sqlite-utils' ``upsert_all`` commits per batch and a
refresh must replace a pool's rows all at once or not at all.

Each thread gets its own connection (console.database; WAL lets the UI read while a
worker writes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from backends.model import Health, PoolScan, Volume
from console.database import Database

SCHEMA_VERSION = 3  # 2: volumes.in_use; 3: volumes.used_by

# Columns the volume table can sort by; each but last_seen (one value per refresh, and
# rewritten by every refresh) has an index (host, pool, column, name).
SORTABLE = ("name", "format", "capacity", "allocation", "backing", "health", "last_seen",
            "chain_depth")


def display_text(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` (SQLite TEXT must be UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class HostRow:
    name: str
    uri: str
    state: str
    error: str | None
    last_seen: float | None


@dataclass(frozen=True)
class PoolRow:
    host: str
    name: str
    kind: str
    path: str
    capacity: int
    allocation: int
    available: int
    committed: int
    volumes: int
    last_seen: float | None
    error: str | None


@dataclass(frozen=True)
class LinkRow:
    path: str
    format: str
    capacity: int


@dataclass(frozen=True)
class VolumeRow:
    """A cached volume; ``path`` is the exact file system path (non-UTF-8 preserved)."""

    host: str
    pool: str
    name: str
    path: str
    format: str
    capacity: int
    allocation: int
    backing: str | None
    backing_format: str | None
    chain_depth: int
    health: str
    reasons: tuple[str, ...]
    readonly: bool
    chain: tuple[LinkRow, ...]
    chain_problem: str | None
    chain_problem_path: str | None
    mtime: float
    last_seen: float
    in_use: bool = False  # a running QEMU held it for writing when it was last seen
    used_by: tuple[tuple[str, bool], ...] = ()  # libvirt domains naming it, and running


@dataclass(frozen=True)
class UsageSample:
    """A pool's space at one refresh: the usage history the pool's detail draws."""

    at: float
    capacity: int
    allocation: int


# Samples kept per pool. Past this, every other sample of the older half goes: recent
# refreshes stay dense, old ones thin out, and the history still spans weeks.
USAGE_SAMPLES = 240


_VOLUME_COLUMNS = ("host", "pool", "name", "path", "format", "capacity", "allocation",
                   "backing", "backing_format", "chain_depth", "health", "reasons",
                   "readonly", "chain", "chain_problem", "chain_problem_path", "mtime",
                   "in_use", "used_by", "last_seen")


def _volume_row(row: sqlite3.Row | tuple[object, ...]) -> VolumeRow:
    (host, pool, name, path, fmt, capacity, allocation, backing, backing_format,
     chain_depth, health, reasons, readonly, chain, chain_problem, chain_problem_path,
     mtime, in_use, used_by, last_seen) = tuple(row)
    return VolumeRow(
        host=str(host), pool=str(pool), name=str(name),
        path=os.fsdecode(path) if isinstance(path, bytes) else str(path),
        format=str(fmt), capacity=int(capacity), allocation=int(allocation),  # type: ignore[call-overload]
        backing=os.fsdecode(backing) if isinstance(backing, bytes) else None,
        backing_format=str(backing_format) if backing_format else None,
        chain_depth=int(chain_depth), health=str(health),  # type: ignore[call-overload]
        reasons=tuple(json.loads(str(reasons))), readonly=bool(readonly),
        chain=tuple(LinkRow(os.fsdecode(bytes.fromhex(p)), f, c)
                    for p, f, c in json.loads(str(chain))),
        chain_problem=str(chain_problem) if chain_problem else None,
        chain_problem_path=str(chain_problem_path) if chain_problem_path else None,
        mtime=float(mtime), last_seen=float(last_seen),  # type: ignore[arg-type]
        in_use=bool(in_use),
        used_by=tuple((str(d), bool(r)) for d, r in json.loads(str(used_by)))
        if used_by else (),
    )


class CacheCorrupt(Exception):
    pass


class Cache:
    """The cache file at ``path`` (``None``: in memory, for tests and benchmarks)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self.warning: str | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # A cache may lose its last writes in a crash: it is rebuilt from disk anyway.
        self.db = Database(self.path, synchronous="NORMAL")
        try:
            self._prepare()
        except sqlite3.DatabaseError as err:
            self._move_aside(err)
            self._prepare()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.db.transaction()

    def _move_aside(self, err: Exception) -> None:
        assert self.path is not None
        self.db.close_thread()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        self.warning = (f"the cache {self.path} was unreadable ({err}); moved it to "
                        f"{aside} and rebuilt it from disk")

    def _prepare(self) -> None:
        conn = self.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                             "WHERE type='table'")}
        if version == SCHEMA_VERSION and {"hosts", "pools", "volumes", "usage"} <= tables:
            return  # the common case: no schema work, and no sqlite-utils import
        import sqlite_utils

        db = sqlite_utils.Database(conn)
        if version not in (0, SCHEMA_VERSION):
            for name in db.table_names():
                db.table(name).drop()
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if "hosts" not in db.table_names():
            db.table("hosts").create({"name": str, "uri": str, "state": str, "error": str,
                                "last_seen": float}, pk="name")
        if "pools" not in db.table_names():
            db.table("pools").create({"host": str, "name": str, "kind": str, "path": str,
                                "capacity": int, "allocation": int, "available": int,
                                "committed": int, "volumes": int, "last_seen": float,
                                "error": str}, pk=("host", "name"))
        if "volumes" not in db.table_names():
            db.table("volumes").create({
                "host": str, "pool": str, "name": str, "path": bytes, "format": str,
                "capacity": int, "allocation": int, "backing": bytes,
                "backing_format": str, "chain_depth": int, "health": str, "reasons": str,
                "readonly": int, "chain": str, "chain_problem": str,
                "chain_problem_path": str, "mtime": float, "in_use": int,
                "used_by": str, "last_seen": float,
            }, pk=("host", "pool", "name"))
            for column in SORTABLE:
                if column not in ("name", "last_seen"):
                    db.table("volumes").create_index(["host", "pool", column, "name"])
            db.table("volumes").create_index(["host", "backing"])
        if "usage" not in db.table_names():  # added without a new version: nothing to drop
            db.table("usage").create({"host": str, "pool": str, "at": float,
                                      "capacity": int, "allocation": int})
            db.table("usage").create_index(["host", "pool", "at"])

    def close(self) -> None:
        self.db.close()

    # -- writes -------------------------------------------------------------------

    def record_host(self, name: str, uri: str, state: str, error: str | None = None,
                    seen_at: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO hosts (name, uri, state, error, last_seen) VALUES (?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET uri=excluded.uri, state=excluded.state, "
                "error=excluded.error, last_seen=coalesce(excluded.last_seen, last_seen)",
                (name, uri, state, error, seen_at))

    def record_pool_error(self, host: str, pool: str, kind: str, path: str,
                          error: str) -> None:
        """Keep a pool's rows (now stale) but remember why its refresh failed."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO pools (host, name, kind, path, capacity, allocation, available,"
                " committed, volumes, error) VALUES (?,?,?,?,0,0,0,0,0,?) "
                "ON CONFLICT(host, name) DO UPDATE SET error=excluded.error",
                (host, pool, kind, path, error))

    def replace_pool(self, scan: PoolScan, healths: Sequence[Health],
                     seen_at: float | None = None) -> None:
        """Write a whole pool refresh atomically: changed and new volumes upserted,
        vanished ones dropped, every row's ``last_seen`` moved to this refresh.

        Rows whose content did not change are not rewritten (a steady-state refresh of
        10,000 volumes writes almost nothing but one UPDATE of ``last_seen``).
        """
        seen = time.time() if seen_at is None else seen_at
        pool = scan.pool
        cap = pool.capacity
        if len(healths) != len(scan.volumes):
            raise ValueError("one health per volume")
        content = ",".join(_VOLUME_COLUMNS[:-1])
        placeholders = ",".join("?" * len(_VOLUME_COLUMNS))
        updates = ",".join(f"{c}=excluded.{c}" for c in _VOLUME_COLUMNS[3:])
        with self.transaction() as conn:
            stored = {row[2]: row for row in conn.execute(
                f"SELECT {content} FROM volumes WHERE host=? AND pool=?",
                (pool.host, pool.name))}
            names = set()
            changed = []
            # Rows are computed inside the transaction: a failure rolls all back.
            for v, h in zip(scan.volumes, healths, strict=True):
                row = self._volume_values(v, h)
                names.add(row[2])
                if stored.get(row[2]) != row:
                    changed.append((*row, seen))
            conn.executemany(
                f"INSERT INTO volumes ({','.join(_VOLUME_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(host, pool, name) DO UPDATE SET {updates}", changed)
            conn.executemany("DELETE FROM volumes WHERE host=? AND pool=? AND name=?",
                             [(pool.host, pool.name, n) for n in stored.keys() - names])
            conn.execute("UPDATE volumes SET last_seen=? WHERE host=? AND pool=? "
                         "AND last_seen<>?", (seen, pool.host, pool.name, seen))
            conn.execute(
                "INSERT INTO pools (host, name, kind, path, capacity, allocation, available,"
                " committed, volumes, last_seen, error) VALUES (?,?,?,?,?,?,?,?,?,?,NULL) "
                "ON CONFLICT(host, name) DO UPDATE SET kind=excluded.kind, "
                "path=excluded.path, capacity=excluded.capacity, "
                "allocation=excluded.allocation, available=excluded.available, "
                "committed=excluded.committed, volumes=excluded.volumes, "
                "last_seen=excluded.last_seen, error=NULL",
                (pool.host, pool.name, pool.kind, pool.path,
                 cap.capacity if cap else 0, cap.allocation if cap else 0,
                 cap.available if cap else 0, cap.committed if cap else 0,
                 len(scan.volumes), seen))
            if cap is not None and cap.capacity > 0:
                self._record_usage(conn, pool.host, pool.name,
                                   UsageSample(seen, cap.capacity, cap.allocation))

    @staticmethod
    def _record_usage(conn: sqlite3.Connection, host: str, pool: str,
                      sample: UsageSample) -> None:
        conn.execute("INSERT INTO usage (host, pool, at, capacity, allocation) "
                     "VALUES (?,?,?,?,?)", (host, pool, sample.at, sample.capacity,
                                            sample.allocation))
        count = conn.execute("SELECT count(*) FROM usage WHERE host=? AND pool=?",
                             (host, pool)).fetchone()[0]
        if count <= USAGE_SAMPLES:
            return
        older = conn.execute("SELECT rowid FROM usage WHERE host=? AND pool=? "
                             "ORDER BY at, rowid LIMIT ?", (host, pool, count // 2)).fetchall()
        conn.executemany("DELETE FROM usage WHERE rowid=?", older[1::2])

    @staticmethod
    def _volume_values(v: Volume, h: Health) -> tuple[object, ...]:
        """A volume's row, ``last_seen`` excluded, typed as SQLite gives it back."""
        chain = "[]" if v.chain.depth == 1 else json.dumps(
            [[os.fsencode(link.path).hex(), link.format, link.capacity]
             for link in v.chain.links[1:]])
        return (
            v.host, v.pool, display_text(v.name), os.fsencode(v.path), str(v.format),
            v.capacity, v.allocation, os.fsencode(v.backing) if v.backing else None,
            v.backing_format, v.chain_depth, str(h.state), json.dumps(list(h.reasons)),
            int(v.readonly), chain,
            str(v.chain.problem) if v.chain.problem else None,
            display_text(v.chain.problem_path) if v.chain.problem_path else None,
            float(v.mtime), int(v.in_use),
            json.dumps([[d, d in v.used_by_running] for d in v.used_by]) if v.used_by
            else None,
        )

    def forget_host(self, host: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM usage WHERE host=?", (host,))
            conn.execute("DELETE FROM volumes WHERE host=?", (host,))
            conn.execute("DELETE FROM pools WHERE host=?", (host,))
            conn.execute("DELETE FROM hosts WHERE name=?", (host,))

    def forget_pool(self, host: str, pool: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM usage WHERE host=? AND pool=?", (host, pool))
            conn.execute("DELETE FROM volumes WHERE host=? AND pool=?", (host, pool))
            conn.execute("DELETE FROM pools WHERE host=? AND name=?", (host, pool))

    # -- reads --------------------------------------------------------------------

    def hosts(self) -> list[HostRow]:
        cur = self.conn.execute(
            "SELECT name, uri, state, error, last_seen FROM hosts ORDER BY name")
        return [HostRow(*row) for row in cur]

    def pools(self, host: str | None = None) -> list[PoolRow]:
        sql = ("SELECT host, name, kind, path, capacity, allocation, available, committed,"
               " volumes, last_seen, error FROM pools")
        args: tuple[str, ...] = ()
        if host is not None:
            sql, args = sql + " WHERE host=?", (host,)
        return [PoolRow(*row) for row in self.conn.execute(sql + " ORDER BY host, name", args)]

    @staticmethod
    def _where(host: str, pool: str, filter_text: str) -> tuple[str, list[object]]:
        where = "host=? AND pool=?"
        args: list[object] = [host, pool]
        if filter_text:
            escaped = (filter_text.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            where += " AND name LIKE ? ESCAPE '\\'"
            args.append(f"%{escaped}%")
        return where, args

    def count_volumes(self, host: str, pool: str, filter_text: str = "") -> int:
        where, args = self._where(host, pool, filter_text)
        return int(self.conn.execute(f"SELECT count(*) FROM volumes WHERE {where}",
                                     args).fetchone()[0])

    def volume_page(self, host: str, pool: str, *, sort: str = "name",
                    descending: bool = False, filter_text: str = "", offset: int = 0,
                    limit: int = 100) -> list[VolumeRow]:
        """One page of a pool's volumes, filtered (substring of the name) and sorted."""
        if sort not in SORTABLE:
            raise ValueError(f"cannot sort by {sort!r}")
        where, args = self._where(host, pool, filter_text)
        # health sorts alphabetically as broken < degraded < optimized: worst first.
        direction = "DESC" if descending else "ASC"
        order = f"{sort} {direction}, name {direction}" if sort != "name" else f"name {direction}"
        sql = (f"SELECT {','.join(_VOLUME_COLUMNS)} FROM volumes WHERE {where} "
               f"ORDER BY {order} LIMIT ? OFFSET ?")
        return [_volume_row(r) for r in self.conn.execute(sql, [*args, limit, offset])]

    def volume(self, host: str, pool: str, name: str) -> VolumeRow | None:
        row = self.conn.execute(
            f"SELECT {','.join(_VOLUME_COLUMNS)} FROM volumes "
            "WHERE host=? AND pool=? AND name=?", (host, pool, name)).fetchone()
        return _volume_row(row) if row else None

    def present(self, host: str, pool: str, names: Sequence[str]) -> set[str]:
        """Which of ``names`` the pool's cached volumes hold: one query per 500 names."""
        found: set[str] = set()
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            found.update(r[0] for r in self.conn.execute(
                "SELECT name FROM volumes WHERE host=? AND pool=? AND name IN "
                f"({','.join('?' * len(chunk))})", (host, pool, *chunk)))
        return found

    def dependants(self, host: str, path: str) -> list[VolumeRow]:
        """Cached volumes of ``host`` directly based on the file at ``path``."""
        cur = self.conn.execute(
            f"SELECT {','.join(_VOLUME_COLUMNS)} FROM volumes WHERE host=? AND backing=? "
            "ORDER BY pool, name", (host, os.fsencode(path)))
        return [_volume_row(r) for r in cur]

    def usage_history(self, host: str, pool: str) -> list[UsageSample]:
        """The pool's recorded space, oldest first (at most ``USAGE_SAMPLES``)."""
        cur = self.conn.execute("SELECT at, capacity, allocation FROM usage WHERE host=? "
                                "AND pool=? ORDER BY at, rowid", (host, pool))
        return [UsageSample(float(at), int(c), int(a)) for at, c, a in cur]

    def healths(self) -> dict[tuple[str, str, str], str]:
        """Every cached volume's health by (host, pool, name): what the monitor diffs."""
        cur = self.conn.execute("SELECT host, pool, name, health FROM volumes")
        return {(str(h), str(p), str(n)): str(health) for h, p, n, health in cur}

    def all_volumes(self) -> Iterator[VolumeRow]:
        """Every cached volume of every host and pool (for the chain view: read it in a
        thread, it may be 100,000 rows)."""
        cur = self.conn.execute(f"SELECT {','.join(_VOLUME_COLUMNS)} FROM volumes "
                                "ORDER BY host, pool, name")
        for r in cur:
            yield _volume_row(r)
