"""How a job is shown: its title and record, and its progress while a command follows it
(a rich progress bar on a terminal, plain lines otherwise; Ctrl-C cancels it)."""

from __future__ import annotations

import dataclasses
import queue
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from backends.contract import StorageError
from console.commands import PROG
from console.commands.text import printable
from console.jobs.journal import JobRecord, JobState
from console.jobs.operations import describe_job
from console.units import format_duration, format_rate

if TYPE_CHECKING:
    from console.commands.engine import Engine

FOLLOW_POLL = 0.2  # seconds between looks at the job while following it


def job_record(job: JobRecord) -> dict[str, Any]:
    record = dataclasses.asdict(job)
    record["state"] = str(job.state)
    record["eta"] = job.eta
    return record


def job_title(job: JobRecord) -> str:
    """What a job does, as its operation says, made safe to print on a terminal."""
    return printable(describe_job(job))


def speed_text(job: JobRecord) -> str:
    return format_rate(job.throughput) or "-"


def percent_text(job: JobRecord) -> str:
    return f"{job.percent:.0f}%" if job.percent >= 0 else "-"


class PlainProgress:
    """Progress as plain lines (not a terminal): stage changes and every 10%."""

    def __init__(self, job: JobRecord, *, quiet: bool) -> None:
        self.quiet = quiet
        self.last: tuple[int, str, int] = (0, "", -1)
        self.say(f"job {job.id}: {job_title(job)}")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def update(self, job: JobRecord) -> None:
        if job.state != JobState.RUNNING or not job.stage_label:
            return
        step = int(job.percent // 10) if job.percent >= 0 else -1
        stage = f"job {job.id}: stage {job.stage}/{job.stages} {job.stage_label}"
        if (job.stage, job.stage_label) != self.last[:2]:
            self.last = (job.stage, job.stage_label, step)
            self.say(stage)
        elif step > self.last[2]:
            self.last = (job.stage, job.stage_label, step)
            self.say(f"{stage} {10 * step}% {speed_text(job)}".rstrip())

    def note(self, text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    def close(self, job: JobRecord) -> None:
        if job.state == JobState.DONE:
            self.say(f"job {job.id}: done")


class TerminalProgress(PlainProgress):
    """A rich progress bar: stage X/Y, percent, throughput, ETA."""

    def __init__(self, job: JobRecord) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("job {task.fields[id]}"),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[stage]}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[percent]:>4}"),
            TextColumn("{task.fields[speed]:>8}"),
            TextColumn("ETA {task.fields[eta]}"),
            transient=False,
        )
        self.task = self.progress.add_task(job_title(job), total=None, id=job.id,
                                           stage="waiting", percent="", speed="", eta="-")
        self.progress.start()

    def update(self, job: JobRecord) -> None:
        stage = f"{job.stage}/{job.stages} {job.stage_label}".strip() \
            if job.state == JobState.RUNNING else str(job.state)
        percent = job.percent if job.percent >= 0 else None
        self.progress.update(self.task, total=100 if percent is not None else None,
                             completed=percent or 0, stage=stage,
                             percent=percent_text(job), speed=speed_text(job),
                             eta=format_duration(job.eta))

    def note(self, text: str) -> None:
        self.progress.console.print(f"{PROG}: {text}", style="yellow", highlight=False)

    def close(self, job: JobRecord) -> None:
        self.update(job)
        self.progress.update(self.task, stage=str(job.state))
        self.progress.stop()


def follow(engine: Engine, job: JobRecord, *, json_out: bool) -> JobRecord:
    """Show the job's progress until it ends; Ctrl-C cancels it (and waits for it to
    stop: it removes its partial output)."""
    if sys.stdout.isatty() and not json_out:
        display: PlainProgress = TerminalProgress(job)
    else:
        display = PlainProgress(job, quiet=json_out)
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        engine.updates.put(None)  # wakes the loop at once

    previous = signal.signal(signal.SIGINT, on_sigint)
    cancelled = False
    next_look = 0.0
    try:
        while True:
            try:
                update = engine.updates.get(timeout=FOLLOW_POLL)
            except queue.Empty:
                update = None
            if update is not None and update.id == job.id:
                display.update(update)
                if update.state.finished:
                    break
            if interrupted.is_set() and not cancelled:
                interrupted.clear()
                try:
                    engine.runner.cancel(job.id)
                except StorageError as err:  # a libvirt wipe cannot be stopped
                    display.note(f"{err}; it goes on")
                else:
                    cancelled = True
                    display.note(f"cancelling job {job.id}; it removes what it wrote…")
            if time.monotonic() >= next_look:  # what other processes did to the job
                next_look = time.monotonic() + 0.5
                current = engine.journal.get(job.id)
                if current.state.finished:
                    break
                # A cancel from another process reaches the runner through the journal.
    finally:
        signal.signal(signal.SIGINT, previous)
    final = engine.runner.wait(job.id)
    display.close(final)
    return final
