"""What the jobs panel knows: the recent jobs, merged from two sources.

Jobs this console runs report through the runner's ``on_update`` about ten times a
second; every job (also those of other consoles and of the command line) is read from
the journal about once a second. For a job this console runs, its own updates are newer
than the journal's (which is written at a throttled rate), so the journal's rows are
ignored for it until the job ends. Plain Python: the panel draws it, the screen feeds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from console.jobs.journal import ACTIVE, JobRecord, JobState

PANEL_LIMIT = 50  # jobs read from the journal and shown, newest first
FIX_KIND = "fix"  # the journal's kind of a fix job (console.jobs.fixing.RunFix)
# Jobs whose output is a new volume, written under a temporary name until it is whole.
OUTPUT_VERBS = {"create": "creating", "copy": "copying", "clone": "cloning",
                "restore": "restoring"}


@dataclass(frozen=True)
class JobOutput:
    """The volume an active job is making, as the volume table shows it until it exists:
    its final name, and how far the job is."""

    job_id: int
    name: str
    verb: str  # "copying"
    state: JobState
    percent: float  # -1: not known yet


def job_output(job: JobRecord) -> tuple[str, str, JobOutput] | None:
    """(host, pool, output) of an active job that makes a new volume; None otherwise."""
    verb = OUTPUT_VERBS.get(job.kind)
    if verb is None or job.state not in ACTIVE or job.params.get("into_existing"):
        return None
    pool = job.params.get("dest_pool") or job.pool
    name = job.params.get("dest_name") or job.volume
    return (job.host, str(pool),
            JobOutput(job.id, str(name), verb, job.state, job.percent))


@dataclass(frozen=True)
class Change:
    """A job that is new to the board, or whose record changed."""

    before: JobRecord | None
    after: JobRecord

    @property
    def ended(self) -> bool:
        """The job reached done, failed or aborted just now."""
        return self.after.state.finished and (self.before is None
                                              or not self.before.state.finished)


class JobBoard:
    """Recent jobs by id, and which of them this console runs, cancels or hides.

    Args:
        started: When the console started (``time.time()``): a job that ended before it
            is history, not news.
    """

    def __init__(self, *, started: float, limit: int = PANEL_LIMIT) -> None:
        self.started = started
        self.limit = limit
        self.records: dict[int, JobRecord] = {}
        self.local: set[int] = set()  # run by this console's runner, not ended yet
        self.cancelling: set[int] = set()
        self.dismissed: set[int] = set()

    def expect(self, job_id: int) -> None:
        """This console runs ``job_id`` now (it resumes it)."""
        self.local.add(job_id)
        self.dismissed.discard(job_id)

    def forget(self, job_id: int) -> None:
        """Resuming ``job_id`` was refused: it is not this console's after all."""
        self.local.discard(job_id)

    def submitted(self, job: JobRecord) -> Change | None:
        """This console submitted ``job`` (pending); its runner may have reported on it
        already, and that report is newer."""
        if job.id in self.records:
            return None
        self.local.add(job.id)
        return self._put(job)

    def observe(self, job: JobRecord) -> Change | None:
        """One job as read from the journal after acting on it."""
        if job.id in self.local:
            return None
        return self._put(job)

    def cancel_requested(self, job_id: int) -> None:
        self.cancelling.add(job_id)

    def local_update(self, job: JobRecord) -> Change | None:
        """An update from this console's runner."""
        if job.state.finished or job.state == JobState.INTERRUPTED:
            self.local.discard(job.id)
            self.cancelling.discard(job.id)
        else:
            self.local.add(job.id)
        return self._put(job)

    def polled(self, jobs: Iterable[JobRecord]) -> list[Change]:
        """The newest jobs as the journal has them."""
        changes: list[Change] = []
        seen: set[int] = set()
        for job in jobs:
            seen.add(job.id)
            if job.id in self.local:
                continue
            if job.state not in ACTIVE:
                self.cancelling.discard(job.id)
            change = self._put(job)
            if change is not None:
                changes.append(change)
        if seen:
            oldest = min(seen)  # older ones fell out of the journal's window
            for job_id in [i for i in self.records if i < oldest and i not in self.local]:
                del self.records[job_id]
        return changes

    def _put(self, job: JobRecord) -> Change | None:
        before = self.records.get(job.id)
        if before == job:
            return None
        self.records[job.id] = job
        if not job.state.finished:
            self.dismissed.discard(job.id)  # resumed: shown again
        return Change(before, job)

    def state(self, job: JobRecord) -> JobState:
        """The state to show: a job asked to stop shows ``aborting`` until it ends."""
        if job.id in self.cancelling and job.state in (JobState.PENDING, JobState.RUNNING):
            return JobState.ABORTING
        return job.state

    def rows(self) -> list[JobRecord]:
        """The jobs to show, newest first."""
        shown = [j for i, j in self.records.items() if i not in self.dismissed]
        shown.sort(key=lambda j: j.id, reverse=True)
        return shown[:self.limit]

    def active(self) -> list[JobRecord]:
        return [j for j in self.records.values() if j.state in ACTIVE]

    def outputs(self, host: str | None, pool: str | None) -> list[JobOutput]:
        """What the active jobs are writing into ``pool``, oldest job first: a few rows
        at most, so the table merges them without a lookup per volume."""
        found = []
        for job in self.records.values():
            output = job_output(job)
            if output is not None and output[:2] == (host, pool):
                found.append(output[2])
        return sorted(found, key=lambda o: o.job_id)

    def running_here(self) -> list[int]:
        return sorted(self.local)

    def last_fix(self, host: str, pool: str, volume: str) -> JobRecord | None:
        """The newest fix job on the volume among the recent jobs (the journal's newest
        ``limit``, live while it runs): what the volume's details show."""
        fixes = [j for j in self.records.values() if j.kind == FIX_KIND
                 and (j.host, j.pool, j.volume) == (host, pool, volume)]
        return max(fixes, key=lambda j: j.id, default=None)

    def dismiss_finished(self) -> int:
        """Hide ended jobs from the panel (the journal keeps them); returns how many."""
        ended = {i for i, j in self.records.items()
                 if (j.state.finished or j.state == JobState.INTERRUPTED)
                 and i not in self.dismissed and i not in self.local}
        self.dismissed |= ended
        return len(ended)


def job_pools(job: JobRecord) -> list[tuple[str, str]]:
    """(host, pool) pairs a job changes: refreshed from disk when it ends."""
    pools = [(job.host, job.pool)]
    dest = job.params.get("dest_pool")
    if isinstance(dest, str) and dest and dest != job.pool:
        pools.append((job.host, dest))
    return pools


_WHERE = re.compile(r"^host '[^']*'(, pool '[^']*')?(, volume '[^']*')?: ")


def short_error(error: str) -> str:
    """The error without its ``host ..., pool ..., volume ...:`` prefix: the job's line
    names those already."""
    return _WHERE.sub("", error, count=1)


