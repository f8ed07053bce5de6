"""Read-only monitoring: capacity alerts, the events log and the "full in N days" estimate.

Plain Python over the cache and the shared journal (no Textual): a ``Monitor`` is polled
from a thread worker after each refresh and every few seconds; it returns what changed
since the last poll, and the monitoring widgets only draw that.

An alert is raised once when a pool crosses a threshold (warning, critical), changes when
it crosses the other one, and is cleared when the pool is back below warning: polls that
change nothing report nothing. Events come from diffing what the cache and the journal
say now against the previous poll: hosts going offline or coming back, jobs of any
console starting and ending, volumes changing health.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from console.cache import Cache, HostRow, PoolRow, UsageSample
from console.config import Thresholds
from console.hosts import HostState
from console.jobs.journal import ACTIVE, JobRecord, JobState, Journal
from console.jobs.operations import describe_job
from console.units import format_age, format_size

EVENTS_KEPT = 200  # the events log is bounded: the newest are kept
JOBS_WATCHED = 50  # newest jobs of the journal compared per poll
DAY = 86400.0
# A fit over minutes projects noise (a copy, another tenant of the file system) into
# "full in less than a day": no trend until the history spans this long.
TREND_SPAN = 3600.0


class Level(IntEnum):
    """How full a pool is against its thresholds; ordered, so a rise compares greater."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name.lower()


def level_of(capacity: int, allocation: int, limits: Thresholds) -> Level:
    """Where ``allocation`` of ``capacity`` stands (the reservations' measure of use)."""
    if capacity <= 0:
        return Level.OK
    used = allocation / capacity
    if used >= limits.critical:
        return Level.CRITICAL
    if used >= limits.warning:
        return Level.WARNING
    return Level.OK


@dataclass(frozen=True)
class Alert:
    """A pool above a threshold, since ``since``."""

    host: str
    pool: str
    level: Level
    used: float  # fraction of capacity
    since: float

    @property
    def text(self) -> str:
        return f"{self.host}:{self.pool} {100 * self.used:.0f}% used ({self.level})"


@dataclass(frozen=True)
class AlertChange:
    """A pool crossed a threshold: up (``raised``) or back down."""

    host: str
    pool: str
    before: Level
    after: Level
    used: float
    limits: Thresholds

    @property
    def raised(self) -> bool:
        return self.after > self.before

    @property
    def severity(self) -> Literal["information", "warning", "error"]:
        """As Textual's notify: the level reached (back to OK is news, not trouble)."""
        return ("information" if self.after == Level.OK else
                "error" if self.after == Level.CRITICAL else "warning")

    @property
    def summary(self) -> str:
        """A line of the events log (narrow: the notification says more)."""
        if self.after == Level.OK:
            return f"{self.host}:{self.pool} back below warning ({100 * self.used:.0f}% used)"
        return (f"{self.host}:{self.pool} {self.after}: {100 * self.used:.0f}% used "
                f"(threshold {100 * self._limit:.0f}%)")

    @property
    def _limit(self) -> float:
        """The threshold crossed upwards (critical or warning)."""
        return self.limits.critical if self.after == Level.CRITICAL else self.limits.warning

    @property
    def text(self) -> str:
        where = f"host {self.host!r}, pool {self.pool!r}"
        if self.after == Level.OK:
            return (f"{where}: back below the warning threshold "
                    f"({100 * self.used:.0f}% used, warning at "
                    f"{100 * self.limits.warning:.0f}%)")
        hint = ("no new job may take space in it: free space or grow the pool"
                if self.after == Level.CRITICAL else "free space or grow the pool soon")
        return (f"{where}: {100 * self.used:.0f}% used, at or above the {self.after} "
                f"threshold of {100 * self._limit:.0f}%: {hint}")


class Alerts:
    """The alert state machine: one level per pool, a change reported once per crossing.

    Args:
        thresholds: A pool's limits by (host, pool), as ``Config.pool_thresholds``.
    """

    def __init__(self, thresholds: Callable[[str, str], Thresholds]) -> None:
        self.thresholds = thresholds
        self._active: dict[tuple[str, str], Alert] = {}

    def update(self, pools: Iterable[PoolRow], now: float) -> list[AlertChange]:
        """The crossings since the last update. A pool never scanned, or whose last
        refresh failed, keeps its level: its numbers are not news."""
        changes = []
        for row in pools:
            if row.capacity <= 0 or row.error is not None:
                continue
            key = (row.host, row.name)
            try:
                limits = self.thresholds(*key)
            except KeyError:  # a pool of a host no longer in the config
                continue
            level = level_of(row.capacity, row.allocation, limits)
            used = row.allocation / row.capacity
            before = self._active.get(key)
            old = before.level if before is not None else Level.OK
            if level == Level.OK:
                self._active.pop(key, None)
            else:
                since = before.since if before is not None and old == level else now
                self._active[key] = Alert(row.host, row.name, level, used, since)
            if level != old:
                changes.append(AlertChange(row.host, row.name, old, level, used, limits))
        return changes

    def active(self) -> list[Alert]:
        """Critical first, then the fullest."""
        return sorted(self._active.values(), key=lambda a: (-a.level, -a.used, a.host,
                                                            a.pool))


@dataclass(frozen=True)
class Event:
    """One line of the events log."""

    at: float
    kind: str  # "host", "job", "health", "alert"
    text: str
    severity: str = "information"  # as Textual's notify: information, warning, error


class EventLog:
    """The newest ``limit`` events, newest first."""

    def __init__(self, limit: int = EVENTS_KEPT) -> None:
        self._events: deque[Event] = deque(maxlen=limit)

    def add(self, events: Iterable[Event]) -> None:
        self._events.extendleft(events)

    def events(self) -> list[Event]:
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)


# Host states that mean "not reachable"; "connecting" is a passing state and says nothing.
DOWN = frozenset({HostState.OFFLINE.value, HostState.ERROR.value, HostState.UNTRUSTED.value})


def host_events(before: dict[str, str], hosts: Sequence[HostRow], now: float) -> list[Event]:
    """Hosts that went down or came back since ``before`` (updated in place: the last
    settled state of each host)."""
    events = []
    for row in hosts:
        if row.state == HostState.CONNECTING.value:
            continue
        old = before.get(row.name)
        before[row.name] = row.state
        if old is None or old == row.state:
            continue
        if row.state in DOWN and old not in DOWN:
            events.append(Event(now, "host", f"host {row.name!r} went {row.state}: "
                                f"{row.error or 'no reason given'}", "error"))
        elif row.state == HostState.ONLINE.value and old in DOWN:
            events.append(Event(now, "host", f"host {row.name!r} is back online"))
    return events


def job_events(before: dict[int, JobState] | None, jobs: Sequence[JobRecord],
               now: float) -> list[Event]:
    """Jobs of any console that started or ended since ``before`` (id -> state); None:
    the first look, which only learns the states."""
    if before is None:
        return []
    events = []
    for job in sorted(jobs, key=lambda j: j.id):
        old = before.get(job.id)
        if old == job.state:
            continue
        what = f"job {job.id} ({describe_job(job)}) by {job.who or 'someone'}"
        if job.state in ACTIVE and (old is None or old not in ACTIVE):
            if job.state != JobState.ABORTING:
                events.append(Event(now, "job", f"{what} started"))
        elif job.state.finished or job.state == JobState.INTERRUPTED:
            severity = {JobState.DONE: "information",
                        JobState.ABORTED: "warning"}.get(job.state, "error")
            why = f": {job.error}" if job.error and job.state != JobState.DONE else ""
            events.append(Event(now, "job", f"{what} {job.state}{why}", severity))
    return events


def health_events(before: dict[tuple[str, str, str], str],
                  after: dict[tuple[str, str, str], str], now: float) -> list[Event]:
    """Volumes seen in both looks whose health changed (new and gone ones are not)."""
    events = []
    for key in sorted(before.keys() & after.keys()):
        if before[key] != after[key]:
            host, pool, name = key
            severity = {"broken": "error", "degraded": "warning"}.get(after[key],
                                                                       "information")
            events.append(Event(now, "health", f"host {host!r}, pool {pool!r}, volume "
                                f"{name!r}: {before[key]} -> {after[key]}", severity))
    return events


def growth_per_day(samples: Sequence[UsageSample]) -> float | None:
    """Bytes per day by a least-squares line through the samples; None with fewer than
    two samples or no time between them."""
    if len(samples) < 2:
        return None
    n = len(samples)
    t0 = samples[0].at
    xs = [(s.at - t0) / DAY for s in samples]
    ys = [float(s.allocation) for s in samples]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def full_in_days(samples: Sequence[UsageSample]) -> float | None:
    """Days until the pool is full at the fitted rate, from the last sample; None when
    the trend is not growing."""
    return _days_left(samples, growth_per_day(samples))


def _days_left(samples: Sequence[UsageSample], rate: float | None) -> float | None:
    if rate is None or rate <= 0:
        return None
    last = samples[-1]
    return max(0.0, (last.capacity - last.allocation) / rate)


def trend_words(samples: Sequence[UsageSample]) -> str:
    """One line for the pool's detail: the growth per day, and when it will be full."""
    rate = growth_per_day(samples)
    if rate is None:
        return "history: one sample so far"
    span = samples[-1].at - samples[0].at
    if span < TREND_SPAN:
        return f"{len(samples)} samples over {format_age(span)}: " \
            f"a trend after {format_age(TREND_SPAN)}"
    days = _days_left(samples, rate)  # the same fit, not made again
    sign = "+" if rate >= 0 else "-"
    words = f"{sign}{format_size(int(abs(rate)))}/day over {len(samples)} samples"
    if days is None:
        return f"{words}: not growing"
    when = "less than a day" if days < 1 else "1 day" if round(days) == 1 \
        else f"{days:.0f} days" if days < 10_000 else "more than 10,000 days"
    return f"{words}: full in {when}"


@dataclass(frozen=True)
class MonitorUpdate:
    """What one poll found: the alerts now, the crossings and the new events."""

    alerts: list[Alert]
    changes: list[AlertChange]
    events: list[Event]
    error: str | None = None


class Monitor:
    """Polls the cache (pools, hosts, health) and the journal (jobs of every console).

    Call ``poll`` from one thread at a time: it keeps the previous look to diff against.

    Args:
        cache: The console's cache: what the last refresh found.
        thresholds: A pool's limits by (host, pool).
        journal: The shared journal; None: no job events.
    """

    def __init__(self, cache: Cache, thresholds: Callable[[str, str], Thresholds], *,
                 journal: Journal | None = None) -> None:
        self.cache = cache
        self.journal = journal
        self.alerts = Alerts(thresholds)
        self.log = EventLog()
        self._hosts: dict[str, str] = {}
        self._jobs: dict[int, JobState] | None = None
        self._healths: dict[tuple[str, str, str], str] | None = None
        self._pools_seen: tuple[tuple[str, str, float | None], ...] = ()

    def poll(self, now: float) -> MonitorUpdate:
        events: list[Event] = []
        error = None
        pools = self.cache.pools()
        changes = self.alerts.update(pools, now)
        events += [Event(now, "alert", c.summary, c.severity) for c in changes]
        events += host_events(self._hosts, self.cache.hosts(), now)
        # The health of every volume is read again only when a pool was refreshed.
        seen = tuple((p.host, p.name, p.last_seen) for p in pools)
        if seen != self._pools_seen:
            self._pools_seen = seen
            healths = self.cache.healths()
            if self._healths is not None:
                events += health_events(self._healths, healths, now)
            self._healths = healths
        if self.journal is not None:
            try:
                jobs = self.journal.jobs(limit=JOBS_WATCHED)
            except sqlite3.Error as err:
                error = f"cannot read the journal {self.journal.path}: {err}"
            else:
                events += job_events(self._jobs, jobs, now)
                self._jobs = {j.id: j.state for j in jobs}  # the window moves on
        self.log.add(events)
        return MonitorUpdate(self.alerts.active(), changes, events, error)
