"""A job inside a call that cannot be interrupted (a libvirt wipe) refuses a cancel with
the reason, from this process and from another one; before and after that call a cancel
works as ever."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from backends.contract import Cancelled, StorageError
from backends.model import Progress
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.operations import OPERATIONS, Context, Operation
from console.jobs.runner import Runner
from tests.conftest import PATIENCE

REASON = "wipe (zero): libvirt reports no progress and cannot stop it once started"


@dataclasses.dataclass(frozen=True)
class GatedCall(Operation):
    """Stands for a driver's blocking call: reports it cannot be stopped, waits for the
    ``gate`` file (the call running), then is cancellable again (tests only)."""

    kind: ClassVar[str] = "gated-call"
    gate: str = ""
    before: str = ""  # a path: wait for it before the call, cancel allowed
    after: str = ""  # a path: wait for it after the call, cancel allowed

    @property
    def stages(self) -> tuple[str, ...]:
        return ("call",)

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "call")
        while self.before and not os.path.exists(self.before):
            if ctx.should_cancel():
                raise Cancelled("cancelled before the call")
            time.sleep(0.01)
        ctx.progress(Progress(1, 1, 0, 0, REASON, cancellable=False))
        if ctx.should_cancel():
            raise Cancelled("cancelled before the call")
        deadline = time.monotonic() + 20  # a failed test must not hang the run
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.progress(Progress(1, 1, 1, 1, "call"))
        while self.after and not os.path.exists(self.after):
            if ctx.should_cancel():
                raise Cancelled("cancelled after the call")
            time.sleep(0.01)


OPERATIONS[GatedCall.kind] = GatedCall


@pytest.fixture
def runner(tmp_path: Path, pool_dir: Path) -> Iterator[Runner]:
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None))
    r = Runner(Journal(tmp_path / "journal.db"), inv)
    yield r
    r.close()


def wait_for(runner: Runner, job_id: int, label: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while runner.journal.get(job_id).stage_label != label:
        assert time.monotonic() < deadline, runner.journal.get(job_id)
        time.sleep(0.01)


def test_a_cancel_during_the_call_is_refused_with_the_reason(
        runner: Runner, tmp_path: Path, pool_dir: Path) -> None:
    gate, after = tmp_path / "gate", tmp_path / "after"
    job = runner.submit(GatedCall("local", str(pool_dir.resolve()), "v", gate=str(gate),
                                  after=str(after)))
    wait_for(runner, job.id, REASON)
    with pytest.raises(StorageError, match="cannot be cancelled now: wipe") as err:
        runner.cancel(job.id)
    assert err.value.volume == "v" and err.value.pool == str(pool_dir.resolve())
    # Another process (the command line's ``job cancel``) reads the same journal.
    other = Runner(Journal(tmp_path / "journal.db"), runner.inventory)
    try:
        with pytest.raises(StorageError, match="cannot be cancelled now"):
            other.cancel(job.id)
    finally:
        other.close()
    assert runner.journal.get(job.id).state == JobState.RUNNING
    gate.touch()
    wait_for(runner, job.id, "call")
    runner.cancel(job.id)  # once the call is over, a cancel is taken again
    done = runner.wait(job.id, PATIENCE)
    assert (done.state, done.error) == (JobState.ABORTED, "cancelled")


def test_a_cancel_asked_before_the_call_stops_it_before_it_starts(
        runner: Runner, tmp_path: Path, pool_dir: Path) -> None:
    gate, before = tmp_path / "gate", tmp_path / "before"
    # The call waits for ``before``, which never comes: the cancel lands before the mark
    # whether the job is still pending or already running (no race with the mark).
    job = runner.submit(GatedCall("local", str(pool_dir.resolve()), "v", gate=str(gate),
                                  before=str(before)))
    runner.cancel(job.id)  # pending, or running before the mark: taken either way
    done = runner.wait(job.id, PATIENCE)
    assert done.state == JobState.ABORTED
    assert not gate.exists()
