"""Space promised to running jobs, so two jobs never count the same free bytes.

Reservations live in the journal's database (shared by every console and command line
on the machine). Taking one is atomic with the check that it fits; it is released when
the job ends and expires after a TTL if the process holding it died without a word.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from backends.contract import StorageError
from console.jobs.journal import Journal
from console.units import format_size

DEFAULT_TTL = 6 * 3600.0  # renewed while the job runs; only a dead job's lapses
CRITICAL = 0.95  # the default; pools set their own in the config


class NoSpace(StorageError):
    """The job would not fit, counting what other jobs have reserved."""


def staging_key(job_id: int) -> int:
    """The key of a job's second reservation, for a staging file in a pool other than
    its output's (a copy between hosts converting on the source host): the table keeps
    one row per key, and job ids are positive. The journal drops both when the job
    ends."""
    return -job_id


@dataclass(frozen=True)
class PoolSpace:
    capacity: int
    allocation: int
    available: int


def refusal(need: int, space: PoolSpace, reserved: int, critical: float, *,
            by: str) -> str | None:
    """Why ``need`` more bytes may not be promised in a pool (None: they may): one rule
    for the runner's reservation and the bulk plan, which counts its own earlier jobs
    in ``reserved`` (``by`` says whose reservations those are).

    Refused when ``need`` exceeds the free space less ``reserved``, or when the pool,
    counting ``reserved`` and ``need``, would be above ``critical`` of its capacity: a
    job must not be what fills a pool others' guests write to. A job that needs no
    space is never refused. A pool that reports no size (capacity 0, nothing free: a
    libvirt pool that is stopped or keeps no count) is refused: its room is not known.
    """
    if need <= 0:
        return None
    reserved = max(reserved, 0)  # a promise never frees bytes that are not free yet
    free = space.available - reserved
    if space.capacity <= 0 and space.available <= 0:
        return (f"needs {format_size(need)}, and the pool reports no size (capacity 0): "
                "refresh it, or check it is started and its driver counts its space")
    held = f"{format_size(reserved)} reserved by {by}" if reserved else "none reserved"
    if need > free:
        return (f"needs {format_size(need)}, pool has {format_size(space.available)} "
                f"free, {held}")
    used = space.allocation + reserved + need
    if space.capacity and used > critical * space.capacity:
        return (f"pool would be {100 * used / space.capacity:.0f}% used ({held}), "
                f"above the critical threshold of {100 * critical:.0f}%: no new job may "
                "take it there")
    return None


class Reservations:
    def __init__(self, journal: Journal, *, ttl: float = DEFAULT_TTL,
                 critical: float = CRITICAL) -> None:
        self.journal = journal
        self.ttl = ttl
        self.critical = critical

    def reserve(self, job_id: int, host: str, pool: str, need: int,
                space: PoolSpace, *, critical: float | None = None) -> None:
        """Reserve ``need`` bytes in ``pool`` for ``job_id`` or raise ``NoSpace`` (the
        rule of ``refusal``, counting other jobs' reservations)."""
        now = time.time()
        critical = self.critical if critical is None else critical
        with self.journal.transaction() as conn:
            conn.execute("DELETE FROM reservations WHERE expires < ?", (now,))
            # A job that frees space (a negative need) promises none to others before
            # it has freed it: it reserves nothing.
            need = max(need, 0)
            others = conn.execute(
                "SELECT job_id, max(bytes, 0) FROM reservations WHERE host=? AND pool=? "
                "AND job_id<>?", (host, pool, job_id)).fetchall()
            jobs = ", ".join(str(j) for j, _ in others) or "none"
            why = refusal(need, space, sum(b for _, b in others), critical,
                          by=f"jobs {jobs}")
            if why is not None:
                raise NoSpace(why, host=host, pool=pool,
                              hint="free space, wait for those jobs, choose another pool, or "
                              "raise the pool's critical threshold in config.toml")
            conn.execute("INSERT OR REPLACE INTO reservations (job_id, host, pool, bytes, "
                         "expires) VALUES (?,?,?,?,?)", (job_id, host, pool, need,
                                                        now + self.ttl))

    def renew(self, job_id: int) -> None:
        with self.journal.transaction() as conn:
            conn.execute("UPDATE reservations SET expires=? WHERE job_id=?",
                         (time.time() + self.ttl, job_id))

    def release(self, job_id: int) -> None:
        with self.journal.transaction() as conn:
            conn.execute("DELETE FROM reservations WHERE job_id=?", (job_id,))

    def reserved(self, host: str, pool: str) -> int:
        row = self.journal.conn.execute(
            "SELECT coalesce(sum(max(bytes, 0)), 0) FROM reservations WHERE host=? AND "
            "pool=? AND expires >= ?", (host, pool, time.time())).fetchone()
        return int(row[0])
