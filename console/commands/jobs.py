"""``jobs`` and ``job cancel|resume|rollback ID``: the journal the console shares."""

from __future__ import annotations

import argparse
import json
import sys
import time

from backends.contract import StorageError
from console.commands import PROG, UsageError
from console.commands.engine import Engine, follow_to_end, open_engine
from console.commands.places import with_job_pools
from console.commands.progress import job_record, job_title, percent_text, speed_text
from console.commands.text import printable, table
from console.config import Config, journal_path
from console.jobs.journal import ACTIVE, JobState


def cmd_jobs(args: argparse.Namespace) -> int:
    with open_engine(args, Config.load(args.config)) as engine:
        journal = engine.journal
        if args.all:
            jobs = journal.jobs(limit=-1)
        else:
            seen = {j.id: j for j in journal.jobs(limit=20)}
            for j in journal.jobs(states=(*ACTIVE, JobState.INTERRUPTED)):
                seen.setdefault(j.id, j)
            jobs = sorted(seen.values(), key=lambda j: j.id, reverse=True)
    if args.json:
        print(json.dumps([job_record(j) for j in jobs], indent=None))
        return 0
    if jobs:
        rows = [("ID", "STATE", "KIND", "VOLUME", "STAGE", "PCT", "SPEED", "WHO", "ERROR")]
        rows += [(str(j.id), str(j.state), j.kind, job_title(j).partition(" ")[2],
                  f"{j.stage}/{j.stages} {j.stage_label}".strip(), percent_text(j),
                  speed_text(j), j.who, printable(j.error or "")) for j in jobs]
        print(table(rows, {0, 5, 6}))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    from console.jobs.journal import Journal

    try:
        job = Journal(journal_path()).get(args.job_id)
    except KeyError:
        raise UsageError(f"no job {args.job_id} in the journal") from None
    if args.read_only:
        raise StorageError(f"refused to {args.action} job {job.id}: read-only mode")
    if args.action != "cancel":
        config = with_job_pools(config, job)
    with open_engine(args, config) as engine:
        if args.action == "resume":
            job = engine.runner.resume(job.id)
            return follow_to_end(args, engine, job)
        if args.action == "rollback":
            final = engine.runner.rollback(job.id)
            if args.json:
                print(json.dumps(job_record(final)))
            else:
                print(f"job {final.id}: rolled back ({job_title(final)})")
            return 0
        return _cancel(args, engine, job.id)


def _cancel(args: argparse.Namespace, engine: Engine, job_id: int) -> int:
    job = engine.journal.get(job_id)
    if job.state not in ACTIVE:
        raise UsageError(f"job {job_id} is {job.state}: only pending or running jobs can be "
                         "cancelled")
    engine.runner.cancel(job_id)
    deadline = time.monotonic() + 10  # the process running it stops it within a second
    while time.monotonic() < deadline:
        job = engine.journal.get(job_id)
        if job.state.finished or job.state == JobState.INTERRUPTED:
            break
        time.sleep(0.1)
    if args.json:
        print(json.dumps(job_record(job)))
    if job.state == JobState.ABORTED:
        if not args.json:
            print(f"job {job_id}: cancelled ({job_title(job)})")
        return 0
    print(f"{PROG}: job {job_id} is {job.state} (asked to stop; its process "
          f"{job.owner or '(none)'} has not stopped it)", file=sys.stderr)
    return 1
