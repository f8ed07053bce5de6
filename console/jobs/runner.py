"""The runner: executes journaled jobs in worker threads.

``submit`` journals the job (durable) and schedules it; a worker waits for a slot
(bounded per host and per pool), takes the volume locks (the job is pending until it
holds them, and only then running; a volume another job holds fails it at once, naming
that job), takes the space reservation, runs the operation, and finishes the job in the
journal whatever happens. Progress goes to the journal at a throttled rate and to
``on_update`` at most ``update_hz`` times a second per job. Cancel stops a running job
within a second (the driver kills its qemu-img), removes its partial output and marks
it aborted.

Read-only mode is enforced here, below every UI: mutating operations are refused.

Once a job is done, what it wrote is checked and an automatic fix queued as a job of its
own (``auto_fix``, from the config unless given; see ``console.jobs.autofix``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from typing import Any

from backends.contract import Cancelled, ReadOnlyViolation, StorageError
from backends.model import Progress
from backends.transport import lifeline
from console.audit import acting_as
from console.inventory import Inventory
from console.jobs.autofix import follow_up, started_by_note
from console.jobs.journal import JobRecord, JobState, Journal, who_am_i
from console.jobs.locks import host_transport, volume_lock
from console.jobs.operations import Operation, operation_from
from console.jobs.reservations import PoolSpace, Reservations, staging_key

UpdateCallback = Callable[[JobRecord], None]
CANCEL_LOOK = 0.3  # seconds between looks at the journal for a cancel from elsewhere
NOT_STARTED = "cancelled before it started"


class _NotStarted(Exception):
    """The job was cancelled while it took its locks: it never ran."""


class JobContext:
    """What a running operation sees: progress, cancel, and the journal's memory."""

    def __init__(self, runner: Runner, job: JobRecord, stages: int) -> None:
        self.runner = runner
        self.journal = runner.journal  # a fix asks whether a leftover's job still runs
        self.job_id = job.id
        self.inventory = runner.inventory
        self._record = job
        self._stages = stages
        self._stage = 1
        self._label = ""
        self._stage_started = time.monotonic()
        self._last_journal = 0.0
        self._last_update = 0.0
        self._resume: dict[str, Any] = dict(job.resume)
        self._cancellable = True

    @property
    def resume(self) -> dict[str, Any]:
        return self._resume

    def should_cancel(self) -> bool:
        return self.runner.cancel_requested(self.job_id)

    def reserve_staging(self, host: str, pool: str, need: int) -> None:
        """Reserve ``need`` bytes in ``pool`` of ``host`` for a staging file, beside the
        job's own reservation (``NoSpace`` when it does not fit); ``release_staging``
        or the job's end gives them back."""
        self.runner._reserve_space(staging_key(self.job_id), host, pool, need)

    def release_staging(self) -> None:
        self.runner.reservations.release(staging_key(self.job_id))

    def remember(self, **resume: Any) -> None:
        self._resume.update(resume)
        self.runner.journal.remember(self.job_id, **resume)

    def stage(self, index: int, label: str) -> None:
        self._stage, self._label = index, label
        self._stage_started = time.monotonic()
        self._publish(Progress(index, self._stages, 0, 0, label), force=True)

    def progress(self, progress: Progress) -> None:
        changed = progress.cancellable != self._cancellable
        if changed:  # published at once below: the reason shows before a cancel is tried
            self._cancellable = progress.cancellable
            if progress.cancellable:
                self.runner.journal.allow_cancel(self.job_id)
            elif not self.runner.journal.refuse_cancel(self.job_id, progress.label):
                # A cancel came first: the driver's next look stops before the call.
                self.runner._cancel_event(self.job_id).set()
        # Drivers report their own stages as 1/1: the job's stage numbering wins.
        self._publish(dataclasses.replace(progress, stage=self._stage, stages=self._stages,
                                          label=progress.label or self._label),
                      force=changed)

    def _publish(self, p: Progress, *, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self._stage_started, 1e-6)
        throughput = p.done / elapsed if p.done else 0.0
        state = JobState.ABORTING if self.should_cancel() else JobState.RUNNING
        record = dataclasses.replace(
            self._record, state=state, stage=p.stage, stages=p.stages,
            stage_label=p.label, percent=p.percent, done_bytes=p.done, total_bytes=p.total,
            throughput=throughput)
        self._record = record
        if force or now - self._last_journal >= self.runner.journal_interval:
            self._last_journal = now
            self.runner.journal.progress(
                self.job_id, stage=p.stage, stages=p.stages, label=p.label,
                percent=p.percent, done=p.done, total=p.total, throughput=throughput)
        if force or now - self._last_update >= 1.0 / self.runner.update_hz:
            self._last_update = now
            self.runner._notify(record)


class Runner:
    def __init__(
        self,
        journal: Journal,
        inventory: Inventory,
        *,
        per_host: int | None = None,
        per_pool: int | None = None,
        on_update: UpdateCallback | None = None,
        update_hz: float = 10.0,
        journal_interval: float = 0.5,
        reservations: Reservations | None = None,
        auto_fix: bool | None = None,
    ) -> None:
        self.journal = journal
        self.inventory = inventory
        # After a job is done, queue the fix its result needs (never in read-only mode).
        self.auto_fix = inventory.config.auto_fix if auto_fix is None else auto_fix
        # Bounds from the config's [jobs] table unless given.
        self.per_host = per_host or inventory.config.jobs_per_host
        self.per_pool = per_pool or inventory.config.jobs_per_pool
        self.on_update = on_update
        self.update_hz = update_hz
        self.journal_interval = journal_interval
        self.reservations = reservations or Reservations(journal)
        self._lock = threading.Lock()
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._pool_slots: dict[tuple[str, str], threading.BoundedSemaphore] = {}
        self._cancels: dict[int, threading.Event] = {}
        self._next_look: dict[int, float] = {}
        self._futures: dict[int, Future[None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="job")
        # A job's commands die with this process: a kill -9 leaves no qemu-img writing
        # on. Its workers wait for their commands, as PR_SET_PDEATHSIG needs.
        lifeline.enable()

    # -- the public face ----------------------------------------------------------

    def submit(self, op: Operation, *, started_by: int | None = None) -> JobRecord:
        """Journal ``op`` and schedule it; returns once the job is on disk.
        ``started_by``: the job that queued it (an auto-fix), said in its ``who``."""
        if op.mutating and self.inventory.read_only:
            raise ReadOnlyViolation(f"refused to {op.describe()}: read-only mode",
                                    host=op.host, pool=op.pool, volume=op.volume)
        self.inventory.pool(op.host, op.pool)  # an unknown pool fails before journaling
        who = None if started_by is None else f"{who_am_i()}, {started_by_note(started_by)}"
        job = self.journal.submit(op.kind, op.params(), op.host, op.pool, op.volume, who=who)
        if started_by is not None:
            self.journal.remember(job.id, started_by=started_by)
            job = self.journal.get(job.id)
        self._schedule(job, op)
        return job

    def cancel(self, job_id: int) -> JobRecord:
        """Ask a job to stop: a waiting one never starts, a running one stops within a
        second and removes its partial output. ``StorageError`` (nothing changed) while
        the job runs a call that cannot be interrupted, saying which."""
        job = self.journal.get(job_id)
        if job.state in (JobState.PENDING, JobState.RUNNING, JobState.ABORTING):
            refused = self.journal.request_cancel(job_id)
            if refused is not None:
                raise StorageError(f"job {job_id} cannot be cancelled now: {refused}",
                                   host=job.host, pool=job.pool, volume=job.volume,
                                   hint="it goes on to its end; wait for it")
            self._cancel_event(job_id).set()
        return self.journal.get(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        """Whether ``job_id`` was cancelled here or, through the shared journal, by any
        other process (``storage-console job cancel``, another console). The journal
        is looked at no more than every ``CANCEL_LOOK`` seconds per job."""
        event = self._cancel_event(job_id)
        if event.is_set():
            return True
        now = time.monotonic()
        with self._lock:
            due = now >= self._next_look.get(job_id, 0.0)
            if due:
                self._next_look[job_id] = now + CANCEL_LOOK
        if due and self.journal.get(job_id).state == JobState.ABORTING:
            event.set()
        return event.is_set()

    def resume(self, job_id: int) -> JobRecord:
        """Run an interrupted or failed job again from the start, after removing what
        its previous run left (the result is the same as a run that never stopped)."""
        job = self.journal.get(job_id)
        if job.state not in (JobState.INTERRUPTED, JobState.FAILED, JobState.ABORTED):
            raise StorageError(f"job {job_id} is {job.state}: only interrupted, failed or "
                               "aborted jobs can be resumed")
        if self.inventory.read_only:
            raise ReadOnlyViolation(f"refused to resume job {job_id}: read-only mode")
        op = operation_from(job.kind, job.params)
        self._rollback(job, op)
        self.journal.requeue(job_id)
        self._schedule(self.journal.get(job_id), op)
        return self.journal.get(job_id)

    def rollback(self, job_id: int) -> JobRecord:
        """Remove an interrupted job's partial output and mark it aborted."""
        job = self.journal.get(job_id)
        if job.state not in (JobState.INTERRUPTED, JobState.FAILED):
            raise StorageError(f"job {job_id} is {job.state}: only interrupted or failed "
                               "jobs can be rolled back")
        if self.inventory.read_only:
            raise ReadOnlyViolation(f"refused to roll back job {job_id}: read-only mode")
        self._rollback(job, operation_from(job.kind, job.params))
        self.journal.finish(job_id, JobState.ABORTED, "rolled back")
        return self.journal.get(job_id)

    def recover(self) -> list[JobRecord]:
        """On start: jobs whose process died are marked interrupted; returns them."""
        return self.journal.recover()

    def wait(self, job_id: int, timeout: float | None = None) -> JobRecord:
        future = self._futures.get(job_id)
        if future is not None:
            future.result(timeout)
        return self.journal.get(job_id)

    def close(self, *, cancel: bool = True) -> None:
        if cancel:
            for event in list(self._cancels.values()):
                event.set()
        self._executor.shutdown(wait=True)

    # -- the work -----------------------------------------------------------------

    def _cancel_event(self, job_id: int) -> threading.Event:
        with self._lock:
            return self._cancels.setdefault(job_id, threading.Event())

    def _slots(self, host: str, pool: str) -> tuple[threading.BoundedSemaphore, ...]:
        with self._lock:
            h = self._host_slots.setdefault(host, threading.BoundedSemaphore(self.per_host))
            p = self._pool_slots.setdefault((host, pool),
                                            threading.BoundedSemaphore(self.per_pool))
        return (h, p)

    def _schedule(self, job: JobRecord, op: Operation) -> None:
        self._cancel_event(job.id).clear()
        self._futures[job.id] = self._executor.submit(self._run, job, op)

    def _notify(self, job: JobRecord) -> None:
        if self.on_update is not None:
            self.on_update(job)

    def _run(self, job: JobRecord, op: Operation) -> None:
        slots = self._slots(op.host, op.pool)
        acquired: list[threading.BoundedSemaphore] = []
        try:
            for slot in slots:  # host first, then pool: one order, no deadlock
                if not self._acquire(slot, job.id):
                    break
                acquired.append(slot)
            if len(acquired) < len(slots) or self.cancel_requested(job.id):
                self.journal.finish(job.id, JobState.ABORTED, NOT_STARTED)
                return
            self._execute(job, op)
        finally:
            for slot in reversed(acquired):
                slot.release()
            self._notify(self.journal.get(job.id))
        self._follow_up(job.id, op)

    def _follow_up(self, job_id: int, op: Operation) -> None:
        """A done job's result checked and its automatic fix queued; what happened goes
        to the job's ``resume["auto_fix"]``. Never fails the job: it is done already."""
        if not self.auto_fix or self.inventory.read_only or not op.results():
            return
        job = self.journal.get(job_id)
        if job.state != JobState.DONE:
            return
        try:
            record = follow_up(self, job, op).record()
        except Exception as err:  # a bug in a check must not hide that the job is done
            record = {"checked": [], "queued": [], "left": [],
                      "errors": [f"auto-fix failed: {type(err).__name__}: {err}"]}
        self.journal.remember(job_id, auto_fix=record)

    def _acquire(self, slot: threading.BoundedSemaphore, job_id: int) -> bool:
        """Wait for a slot, giving up when the job is cancelled meanwhile."""
        while not slot.acquire(timeout=0.2):
            if self.cancel_requested(job_id):
                return False
        return True

    def _execute(self, job: JobRecord, op: Operation) -> None:
        """Take the job's locks, then mark it running and run it; the job is finished in
        the journal whatever happens."""
        ctx = JobContext(self, self.journal.get(job.id), len(op.stages))  # until it runs
        state, error = JobState.DONE, None
        # The audit names the job that started this one in each command it runs.
        started_by = job.resume.get("started_by")
        acting = acting_as(job.who) if started_by is not None else nullcontext()
        try:
            with ExitStack() as stack:
                stack.enter_context(acting)
                places = []
                for host, pool_name, volume in op.host_locks():
                    pool = self.inventory.pool(host, pool_name)
                    places.append((self.inventory.driver(pool), pool, volume))
                # One agent per host for the whole job, holding its locks: a request is
                # then a round trip, not an agent start. They start at once, in the
                # background; the locks wait for them.
                for driver, pool, _ in places:
                    stack.enter_context(host_transport(driver, pool.host).session())
                for driver, pool, volume in places:
                    stack.enter_context(volume_lock(driver, pool, volume,
                                                    f"job {job.id} ({job.who})"))
                # Running only once it holds its locks: a job the journal shows running
                # is never beaten to its volume by one submitted after it.
                # start() refuses a job cancelled meanwhile (here or by another process).
                if not self.journal.start(job.id, len(op.stages)):
                    raise _NotStarted
                running = self.journal.get(job.id)
                ctx = JobContext(self, running, len(op.stages))
                self._notify(running)
                self._reserve(job, op)
                op.run(ctx)
                if self.cancel_requested(job.id):
                    raise Cancelled("cancelled", host=op.host, pool=op.pool,
                                    volume=op.volume)
        except _NotStarted:  # nothing written, nothing to roll back
            self.journal.finish(job.id, JobState.ABORTED, NOT_STARTED)
            return
        except Cancelled:
            state, error = JobState.ABORTED, "cancelled"
        except StorageError as err:
            state, error = JobState.FAILED, str(err)
        except Exception as err:  # a bug: the job fails with the reason, nothing hangs
            state, error = JobState.FAILED, f"internal error: {type(err).__name__}: {err}"
        if state != JobState.DONE:
            try:
                op.rollback(ctx)
            except OSError as err:
                error = f"{error}; and its partial output could not be removed: {err}"
        self.journal.finish(job.id, state, error)

    def _reserve(self, job: JobRecord, op: Operation) -> None:
        self._reserve_space(job.id, *op.reservation(self.inventory))

    def _reserve_space(self, key: int, host: str, pool_name: str, need: int) -> None:
        pool = self.inventory.pool(host, pool_name)
        cap = self.inventory.driver(pool).pool_capacity(pool)
        limits = self.inventory.config.pool_thresholds(host, pool_name)
        self.reservations.reserve(key, host, pool_name, need,
                                  PoolSpace(cap.capacity, cap.allocation, cap.available),
                                  critical=limits.critical)

    def _rollback(self, job: JobRecord, op: Operation) -> None:
        ctx = JobContext(self, job, len(op.stages))
        op.rollback(ctx)
