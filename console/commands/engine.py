"""The job engine of a command: the runner over the journal the console shares, and how
a command submits a job, follows it and turns its end into an exit status."""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from console.commands import PROG
from console.commands.progress import follow, job_record, job_title
from console.commands.text import printable
from console.config import Config, journal_path
from console.jobs.journal import JobRecord, JobState

if TYPE_CHECKING:
    from console.jobs.journal import Journal
    from console.jobs.operations import Operation


class Engine:
    """The runner over the shared journal, and the updates its jobs post. Every command
    its jobs run goes to the audit log beside the journal."""

    def __init__(self, config: Config, *, read_only: bool,
                 auto_fix: bool | None = None) -> None:
        from console.audit import AuditLog
        from console.cache import Cache
        from console.inventory import Inventory
        from console.jobs.journal import Journal
        from console.jobs.runner import Runner

        # SimpleQueue: its put may be called from the SIGINT handler (reentrant).
        self.updates: queue.SimpleQueue[JobRecord | None] = queue.SimpleQueue()
        # A cache of its own in memory: the console's is the console's to write.
        self.inventory = Inventory(config, Cache(None), read_only=read_only,
                                   audit=AuditLog(journal_path()))
        self.runner = Runner(Journal(journal_path()), self.inventory,
                             on_update=self.updates.put, auto_fix=auto_fix)
        for job in self.runner.recover():
            print(f"{PROG}: job {job.id} ({job_title(job)}) was interrupted: "
                  f"`{PROG} job resume {job.id}` or `{PROG} job rollback {job.id}`",
                  file=sys.stderr)

    @property
    def journal(self) -> Journal:
        return self.runner.journal

    def close(self) -> None:
        self.runner.close(cancel=True)


@contextlib.contextmanager
def open_engine(args: argparse.Namespace, config: Config) -> Iterator[Engine]:
    """An engine for the command's ``config`` (``--read-only``: the job layer refuses
    what mutates; ``--no-auto-fix``: no fix after a job); closed at the end, cancelling
    jobs still running."""
    no_auto_fix = getattr(args, "no_auto_fix", False)
    e = Engine(config, read_only=args.read_only, auto_fix=False if no_auto_fix else None)
    try:
        yield e
    finally:
        e.close()


def finish(final: JobRecord, args: argparse.Namespace) -> int:
    """The exit status for a job that ended: 0 done, 1 failed or cancelled (why, on
    stderr); with ``--json``, the final record on stdout."""
    if args.json:
        print(json.dumps(job_record(final)))
    if final.state == JobState.DONE:
        return 0
    if final.state == JobState.ABORTED:
        why = "" if final.error in (None, "cancelled") else f": {final.error}"
        print(f"{PROG}: job {final.id} ({job_title(final)}) was cancelled{why}; what it "
              "wrote was removed", file=sys.stderr)
    else:
        print(f"{PROG}: job {final.id} ({job_title(final)}) {final.state}: {final.error}",
              file=sys.stderr)
    return 1


def run_op(args: argparse.Namespace, engine: Engine, op: Operation) -> int:
    """Submit ``op`` to the journal, follow it to its end, return the exit status."""
    job = engine.runner.submit(op)
    return follow_to_end(args, engine, job)


def follow_to_end(args: argparse.Namespace, engine: Engine, job: JobRecord) -> int:
    """Follow ``job``, then the fixes it queued once done (auto-fix): this process
    runs them, so it waits for them. The exit status is the job's: a fix that fails
    leaves the volume as the job left it, and says so."""
    status = finish(follow(engine, job, json_out=args.json), args)
    record = engine.journal.get(job.id).resume.get("auto_fix") or {}
    for left in record.get("left", []):
        if not args.json:
            print(f"{PROG}: {printable(left['volume'])}: the {left['code']} fix was not run "
                  f"({left['why']})", file=sys.stderr)
    for queued in record.get("queued", []):
        fix = engine.journal.get(queued["job"])
        print(f"{PROG}: auto-fix: {queued['code']} of {printable(queued['volume'])} as job "
              f"{fix.id}, started by job {job.id} (--no-auto-fix: not run)", file=sys.stderr)
        final = follow(engine, fix, json_out=args.json)
        if final.state != JobState.DONE:
            print(f"{PROG}: auto-fix job {final.id} {final.state}: {final.error}; "
                  f"{printable(queued['volume'])} is as job {job.id} left it",
                  file=sys.stderr)
    for error in record.get("errors", []):
        print(f"{PROG}: auto-fix: {printable(error)}", file=sys.stderr)
    return status
