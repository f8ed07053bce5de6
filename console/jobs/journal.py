"""The journal: a durable record of every job, in an SQLite file of its own.

It lives in the XDG state dir, never beside the cache (the cache is disposable, this is
not), with ``synchronous=FULL`` so a commit is on disk when it returns: ``submit`` is
the moment a job is "committed to disk". Consoles and command lines on the same machine
share it, so a job started from the command line shows up in a running console.

An active job names its owner (host name, pid and the pid's start time): the process
that queued it while it waits, the one running it after. After a crash, a job whose
owner is gone is marked ``interrupted``; a job another live process queued or runs is
left alone, however long it has waited for a slot.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from console.database import Database

SCHEMA_VERSION = 1
UNCANCELLABLE = "uncancellable"  # in ``resume``: why a cancel is refused right now
_UNCANCELLABLE_PATH = f"$.{UNCANCELLABLE}"


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.ABORTED)


ACTIVE = (JobState.PENDING, JobState.RUNNING, JobState.ABORTING)


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    params: dict[str, Any]
    host: str
    pool: str
    volume: str
    state: JobState
    stage: int = 0
    stages: int = 1
    stage_label: str = ""
    percent: float = -1.0
    done_bytes: int = 0
    total_bytes: int = 0
    throughput: float = 0.0  # bytes per second over the current stage
    error: str | None = None
    who: str = ""
    owner: str | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    resume: dict[str, Any] = field(default_factory=dict)

    @property
    def eta(self) -> float | None:
        """Seconds left in the current stage, when it can be told."""
        if self.throughput <= 0 or self.total_bytes <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / self.throughput)


_COLUMNS = ("id", "kind", "params", "host", "pool", "volume", "state", "stage", "stages",
            "stage_label", "percent", "done_bytes", "total_bytes", "throughput", "error",
            "who", "owner", "created", "started", "finished", "resume")


def _record(row: Sequence[Any]) -> JobRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["params"] = json.loads(values["params"])
    values["resume"] = json.loads(values["resume"] or "{}")
    values["state"] = JobState(values["state"])
    return JobRecord(**values)


def who_am_i() -> str:
    """``user@host`` for the record of who asked for a job."""
    try:
        user = os.getlogin()
    except OSError:
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
    return f"{user}@{socket.gethostname()}"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': split after the last ')'.
    return data[data.rindex(b")") + 2:].split()[19].decode()


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process named in ``owner`` still runs. A process on another host is
    assumed alive: only that host can tell."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True
    return pid.isdigit() and _start_time(int(pid)) == started


class Journal:
    """The journal file at ``path``; one connection per thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(self.path, synchronous="FULL")  # committed means on disk
        self.owner = this_process()
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(
                    f"journal {self.path} has schema {version}, this version knows "
                    f"{SCHEMA_VERSION}: it is not deleted (it records jobs); move it away")
            conn.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                params TEXT NOT NULL, host TEXT NOT NULL, pool TEXT NOT NULL,
                volume TEXT NOT NULL, state TEXT NOT NULL, stage INTEGER NOT NULL DEFAULT 0,
                stages INTEGER NOT NULL DEFAULT 1, stage_label TEXT NOT NULL DEFAULT '',
                percent REAL NOT NULL DEFAULT -1, done_bytes INTEGER NOT NULL DEFAULT 0,
                total_bytes INTEGER NOT NULL DEFAULT 0, throughput REAL NOT NULL DEFAULT 0,
                error TEXT, who TEXT NOT NULL, owner TEXT, created REAL NOT NULL,
                started REAL, finished REAL, resume TEXT NOT NULL DEFAULT '{}')""")
            conn.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state)")
            conn.execute("""CREATE TABLE IF NOT EXISTS reservations (
                job_id INTEGER PRIMARY KEY, host TEXT NOT NULL, pool TEXT NOT NULL,
                bytes INTEGER NOT NULL, expires REAL NOT NULL)""")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.db.transaction()

    def close(self) -> None:
        self.db.close()

    # -- writes -------------------------------------------------------------------

    def submit(self, kind: str, params: dict[str, Any], host: str, pool: str, volume: str,
               *, who: str | None = None) -> JobRecord:
        """Record a new pending job; returns once it is on disk."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (kind, params, host, pool, volume, state, who, owner, "
                "created) VALUES (?,?,?,?,?,?,?,?,?)",
                (kind, json.dumps(params), host, pool, volume, str(JobState.PENDING),
                 who or who_am_i(), self.owner, now))
            job_id = cur.lastrowid
        assert job_id is not None
        return self.get(job_id)

    def start(self, job_id: int, stages: int) -> bool:
        """Pending → running, owned by this process; False (and nothing changed) when
        the job is no longer pending: cancelled meanwhile, by anyone."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state=?, owner=?, started=?, stages=?, stage=1, "
                "error=NULL, finished=NULL, resume=json_remove(resume, ?) "
                "WHERE id=? AND state=?",
                (str(JobState.RUNNING), self.owner, time.time(), stages,
                 _UNCANCELLABLE_PATH, job_id, str(JobState.PENDING)))
            return cur.rowcount == 1

    def progress(self, job_id: int, *, stage: int, stages: int, label: str, percent: float,
                 done: int, total: int, throughput: float) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET stage=?, stages=?, stage_label=?, percent=?, "
                         "done_bytes=?, total_bytes=?, throughput=? WHERE id=?",
                         (stage, stages, label, percent, done, total, throughput, job_id))

    def remember(self, job_id: int, **resume: Any) -> None:
        """Record what resuming or rolling back will need (e.g. a temporary file's
        name) before the step that creates it runs."""
        with self.transaction() as conn:
            row = conn.execute("SELECT resume FROM jobs WHERE id=?", (job_id,)).fetchone()
            merged = {**json.loads(row[0] or "{}"), **resume}
            conn.execute("UPDATE jobs SET resume=? WHERE id=?", (json.dumps(merged), job_id))

    def refuse_cancel(self, job_id: int, reason: str) -> bool:
        """From now on a cancel of the running job is refused, with ``reason``. False (and
        nothing changed) when it is no longer running: a cancel came first."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE jobs SET resume=json_set(resume, ?, ?) "
                               "WHERE id=? AND state=?",
                               (_UNCANCELLABLE_PATH, reason, job_id,
                                str(JobState.RUNNING)))
            return cur.rowcount == 1

    def allow_cancel(self, job_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET resume=json_remove(resume, ?) WHERE id=?",
                         (_UNCANCELLABLE_PATH, job_id))

    def request_cancel(self, job_id: int) -> str | None:
        """Mark a pending or running job aborting; or, while it runs a call that cannot be
        interrupted (``refuse_cancel``), change nothing and return why. One transaction,
        so a cancel and the start of such a call never both win."""
        with self.transaction() as conn:
            row = conn.execute("SELECT state, resume FROM jobs WHERE id=?",
                               (job_id,)).fetchone()
            if row is None:
                return None
            reason = json.loads(row[1] or "{}").get(UNCANCELLABLE)
            if row[0] == str(JobState.RUNNING) and reason:
                return str(reason)
            if row[0] in (str(JobState.PENDING), str(JobState.RUNNING)):
                conn.execute("UPDATE jobs SET state=? WHERE id=?",
                             (str(JobState.ABORTING), job_id))
            return None

    def finish(self, job_id: int, state: JobState, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET state=?, error=?, finished=?, owner=NULL, "
                         "percent=CASE WHEN ?='done' THEN 100 ELSE percent END WHERE id=?",
                         (str(state), error, time.time(), str(state), job_id))
            # -id: the job's staging reservation (``reservations.staging_key``)
            conn.execute("DELETE FROM reservations WHERE job_id IN (?, ?)",
                         (job_id, -job_id))

    def set_state(self, job_id: int, state: JobState, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET state=?, error=coalesce(?, error) WHERE id=?",
                         (str(state), error, job_id))

    def requeue(self, job_id: int) -> None:
        """An ended job waits again, queued by this process (to resume it)."""
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET state=?, owner=? WHERE id=?",
                         (str(JobState.PENDING), self.owner, job_id))

    def recover(self) -> list[JobRecord]:
        """Mark jobs whose owner died while they were pending, running or aborting as
        ``interrupted``; returns them (to offer resume or roll back)."""
        found = []
        with self.transaction() as conn:
            marks = ",".join("?" * len(ACTIVE))
            rows = conn.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE state IN "
                                f"({marks})", [str(s) for s in ACTIVE]).fetchall()
            for row in rows:
                job = _record(row)
                if job.owner is None and job.state == JobState.PENDING:
                    # A journal from before pending jobs named the process that queued
                    # them: such a job is taken as orphaned once a minute old.
                    if time.time() - job.created < 60:
                        continue
                elif owner_alive(job.owner):
                    continue
                conn.execute("UPDATE jobs SET state=?, owner=NULL, error=? WHERE id=?",
                             (str(JobState.INTERRUPTED),
                              f"interrupted while {job.state}: the process running it "
                              "ended", job.id))
                conn.execute("DELETE FROM reservations WHERE job_id IN (?, ?)",
                             (job.id, -job.id))
                found.append(job)
        return [self.get(job.id) for job in found]

    # -- reads --------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord:
        row = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE id=?",
                                (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _record(row)

    def jobs(self, *, states: Sequence[JobState] = (), limit: int = 200) -> list[JobRecord]:
        """Newest first."""
        sql = f"SELECT {','.join(_COLUMNS)} FROM jobs"
        args: list[object] = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args += [str(s) for s in states]
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_record(r) for r in self.conn.execute(sql, args)]

    def jobs_on_volume(self, host: str, pool: str, volume: str) -> list[JobRecord]:
        rows = self.conn.execute(
            f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE host=? AND pool=? AND volume=? "
            "ORDER BY id DESC", (host, pool, volume))
        return [_record(r) for r in rows]
