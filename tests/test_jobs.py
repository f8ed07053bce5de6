"""The job engine: journal, runner, locks, reservations, on real files."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import pytest

from backends.contract import Cancelled, ReadOnlyViolation, VolumeBusy
from backends.model import Progress
from backends.transport.local import LocalTransport
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState, Journal, this_process
from console.jobs.locks import volume_lock
from console.jobs.operations import (
    OPERATIONS,
    Context,
    CreateVolume,
    DeleteVolume,
    Operation,
    temp_name,
)
from console.jobs.reservations import NoSpace, PoolSpace, Reservations, refusal
from console.jobs.runner import Runner
from tests.conftest import PATIENCE, MakeImage


@dataclasses.dataclass(frozen=True)
class SlowWrite(Operation):
    """Writes a temporary file in steps until released or cancelled (tests only)."""

    kind: ClassVar[str] = "slow-write"
    steps: int = 50
    step_seconds: float = 0.02
    need: int = 0
    gate: str = ""  # a path: wait until it exists before finishing

    @property
    def stages(self) -> tuple[str, ...]:
        return ("write",)

    def space(self, inventory: Inventory) -> tuple[str, int]:
        return (self.pool, self.need)

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "write")
        pool = ctx.inventory.pool(self.host, self.pool)
        temp = temp_name(ctx.job_id, self.volume)
        ctx.remember(temp=temp)
        with open(os.path.join(pool.path, temp), "wb") as f:
            for i in range(self.steps):
                if ctx.should_cancel():
                    raise Cancelled("cancelled")
                f.write(b"x" * 1024)
                ctx.progress(Progress(1, 1, i + 1, self.steps))
                time.sleep(self.step_seconds)
            while self.gate and not os.path.exists(self.gate):
                if ctx.should_cancel():
                    raise Cancelled("cancelled")
                time.sleep(0.01)
        os.rename(os.path.join(pool.path, temp), os.path.join(pool.path, self.volume))


OPERATIONS[SlowWrite.kind] = SlowWrite


@pytest.fixture
def engine(tmp_path: Path, pool_dir: Path) -> tuple[Runner, str]:
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None))
    runner = Runner(Journal(tmp_path / "journal.db"), inv)
    yield runner, str(pool_dir.resolve())  # type: ignore[misc]
    runner.close()


def test_submit_is_durable_before_it_returns(engine: tuple[Runner, str],
                                             tmp_path: Path) -> None:
    runner, pool = engine
    job = runner.submit(SlowWrite("local", pool, "v", steps=1))
    # Another connection (another process would be the same) sees the committed row.
    row = sqlite3.connect(tmp_path / "journal.db").execute(
        "SELECT kind, volume FROM jobs WHERE id=?", (job.id,)).fetchone()
    assert row == ("slow-write", "v")
    assert runner.wait(job.id, 10).state == JobState.DONE


def test_create_and_delete_as_jobs(engine: tuple[Runner, str], pool_dir: Path) -> None:
    runner, pool = engine
    job = runner.wait(runner.submit(
        CreateVolume("local", pool, "new.qcow2", format="qcow2", capacity=8 << 20)).id, 30)
    assert (job.state, job.error, job.percent) == (JobState.DONE, None, 100)
    assert (pool_dir / "new.qcow2").exists()
    assert job.who and "@" in job.who and job.started and job.finished
    job = runner.wait(runner.submit(DeleteVolume("local", pool, "new.qcow2")).id, 30)
    assert job.state == JobState.DONE and not (pool_dir / "new.qcow2").exists()


def test_failed_job_says_why(engine: tuple[Runner, str], pool_dir: Path,
                             make_image: MakeImage) -> None:
    runner, pool = engine
    make_image(pool_dir / "taken", "raw")
    job = runner.wait(runner.submit(
        CreateVolume("local", pool, "taken", format="raw", capacity=1 << 20)).id, 30)
    assert job.state == JobState.FAILED
    assert job.error and "volume 'taken'" in job.error and "already exists" in job.error


def test_read_only_refused_at_the_job_layer(tmp_path: Path, pool_dir: Path,
                                            make_image: MakeImage) -> None:
    make_image(pool_dir / "keep", "raw")
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None), read_only=True)
    runner = Runner(Journal(tmp_path / "j.db"), inv)
    pool = str(pool_dir.resolve())
    for op in (CreateVolume("local", pool, "n", capacity=1 << 20),
               DeleteVolume("local", pool, "keep", typed_name="keep"),
               SlowWrite("local", pool, "w")):
        with pytest.raises(ReadOnlyViolation, match="read-only"):
            runner.submit(op)
    assert runner.journal.jobs() == []
    assert sorted(p.name for p in pool_dir.iterdir()) == ["keep"]
    runner.close()


def wait_for(runner: Runner, job_id: int, ready: Callable[[JobRecord], bool]) -> None:
    """Until the journal's record of ``job_id`` is ``ready`` (``PATIENCE`` at most: a
    guard against a hang, not a measure)."""
    deadline = time.monotonic() + PATIENCE
    while not ready(job := runner.journal.get(job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_conflicting_jobs_never_both_run(engine: tuple[Runner, str], pool_dir: Path,
                                         tmp_path: Path) -> None:
    runner, pool = engine
    gate = tmp_path / "gate"
    first = runner.submit(SlowWrite("local", pool, "v", steps=1, gate=str(gate)))
    # Running means holding its lock: however late its thread, no later job gets it.
    wait_for(runner, first.id, lambda j: j.state == JobState.RUNNING)
    second = runner.wait(runner.submit(SlowWrite("local", pool, "v", steps=1)).id, PATIENCE)
    assert (second.state, second.started) == (JobState.FAILED, None)  # it never ran
    assert second.error and f"locked by job {first.id}" in second.error
    gate.touch()
    assert runner.wait(first.id, PATIENCE).state == JobState.DONE
    assert (pool_dir / "v").read_bytes() == b"x" * 1024


def test_a_job_is_running_only_once_it_holds_its_locks(
        engine: tuple[Runner, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal said running before the lock was taken: a job submitted after it
    could take the lock first and fail it. Seen from inside the lock call, the job is
    still pending."""
    runner, pool = engine
    seen: list[JobState] = []

    @contextlib.contextmanager
    def watched_lock(*args: Any, **kwargs: Any) -> Iterator[None]:
        (job,) = runner.journal.jobs()  # the only one (submit may not have returned yet)
        seen.append(job.state)
        with volume_lock(*args, **kwargs):
            yield

    monkeypatch.setattr("console.jobs.runner.volume_lock", watched_lock)
    done = runner.wait(runner.submit(SlowWrite("local", pool, "v", steps=1)).id, PATIENCE)
    assert seen == [JobState.PENDING] and done.state == JobState.DONE


def test_cancel_within_a_second_removes_partial_output(engine: tuple[Runner, str],
                                                       pool_dir: Path,
                                                       tmp_path: Path) -> None:
    runner, pool = engine
    # Never ends on its own (its gate never opens): only the cancel can stop it. How
    # fast is not for a test on a busy machine.
    job = runner.submit(SlowWrite("local", pool, "big", steps=10_000, step_seconds=0.01,
                                  gate=str(tmp_path / "never")))
    wait_for(runner, job.id, lambda j: j.done_bytes >= 5)
    runner.cancel(job.id)
    done = runner.wait(job.id, PATIENCE)
    assert (done.state, done.error) == (JobState.ABORTED, "cancelled")
    assert sorted(os.listdir(pool_dir)) == [".storage-console"]


def test_progress_is_throttled(tmp_path: Path, pool_dir: Path) -> None:
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None))
    updates: list[JobRecord] = []
    runner = Runner(Journal(tmp_path / "j.db"), inv, on_update=updates.append)
    job = runner.submit(SlowWrite("local", str(pool_dir.resolve()), "v", steps=400,
                                  step_seconds=0.001))
    start = time.monotonic()
    final = runner.wait(job.id, 20)
    elapsed = time.monotonic() - start
    running = [u for u in updates if u.id == job.id and u.state == JobState.RUNNING]
    assert final.state == JobState.DONE
    assert 1 <= len(running) <= 10 * elapsed + 4  # ~10/s, plus the forced stage updates
    assert updates[-1].state == JobState.DONE
    runner.close()


def test_reservation_refuses_what_does_not_fit(engine: tuple[Runner, str],
                                               tmp_path: Path) -> None:
    runner, pool = engine
    space = PoolSpace(capacity=1000, allocation=100, available=900)
    res = Reservations(runner.journal)
    res.reserve(101, "local", pool, 600, space)
    res.reserve(102, "local", pool, 200, space)
    with pytest.raises(NoSpace) as err:
        res.reserve(103, "local", pool, 200, space)
    message = str(err.value)
    assert "needs 200B, pool has 900B free, 800B reserved by jobs 101, 102" in message
    assert f"pool {pool!r}" in message
    res.release(101)
    res.reserve(103, "local", pool, 200, space)
    assert res.reserved("local", pool) == 400


def test_reservations_expire_and_critical_refuses(engine: tuple[Runner, str]) -> None:
    runner, pool = engine
    space = PoolSpace(capacity=1000, allocation=100, available=900)
    Reservations(runner.journal, ttl=-1).reserve(1, "local", pool, 800, space)
    Reservations(runner.journal).reserve(2, "local", pool, 800, space)  # 1 expired
    Reservations(runner.journal).release(2)
    full = PoolSpace(capacity=1000, allocation=960, available=40)
    with pytest.raises(NoSpace, match="above the critical threshold"):
        Reservations(runner.journal).reserve(3, "local", pool, 10, full)
    Reservations(runner.journal).reserve(4, "local", pool, 0, full)  # takes no space


def test_the_space_rule_at_its_edges() -> None:
    """``refusal``, the one rule of the runner and the bulk plan: never a promise of
    bytes that are not there, never a refusal of a job that takes none."""
    roomy = PoolSpace(capacity=1000, allocation=100, available=900)
    assert refusal(800, roomy, 0, 0.95, by="none") is None
    assert refusal(801, roomy, 100, 1.0, by="jobs 1") is not None  # 900 free less 100
    assert refusal(800, roomy, 100, 1.0, by="jobs 1") is None
    # At the critical threshold is allowed, a byte above is not.
    assert refusal(850, roomy, 0, 0.95, by="none") is None
    why = refusal(851, roomy, 0, 0.95, by="none")
    assert why is not None and "above the critical threshold of 95%" in why
    # A job that needs nothing, or frees space, is never refused, even in a full pool,
    # a pool with less than nothing free, or one that reports no size.
    for space in (PoolSpace(1000, 1000, 0), PoolSpace(1000, 1010, -10), PoolSpace(0, 0, 0)):
        assert refusal(0, space, 500, 0.95, by="jobs 1") is None
        assert refusal(-300, space, 500, 0.95, by="jobs 1") is None
    # Less than nothing free: any need is refused, in the space words.
    why = refusal(1, PoolSpace(1000, 1010, -10), 0, 1.0, by="none")
    assert why is not None and "needs 1B" in why
    # A pool that reports no size: refused, saying so (not "0B free").
    why = refusal(1, PoolSpace(0, 0, 0), 0, 0.95, by="none")
    assert why is not None and "reports no size" in why
    # Capacity unknown but room reported: the free space alone decides.
    assert refusal(10, PoolSpace(0, 0, 100), 0, 0.95, by="none") is None
    assert refusal(101, PoolSpace(0, 0, 100), 0, 0.95, by="none") is not None
    # Reservations that would add up to less than nothing free nothing.
    assert refusal(901, roomy, -500, 1.0, by="jobs 1") is not None


def test_a_job_that_frees_space_promises_none_to_others(engine: tuple[Runner, str]) -> None:
    runner, pool = engine
    space = PoolSpace(capacity=1000, allocation=100, available=900)
    res = Reservations(runner.journal)
    res.reserve(1, "local", pool, -600, space)  # a job that will free 600 bytes
    assert res.reserved("local", pool) == 0
    with pytest.raises(NoSpace):
        res.reserve(2, "local", pool, 901, space)  # the 600 are not free yet
    res.reserve(3, "local", pool, 700, space)
    assert res.reserved("local", pool) == 700


def test_job_that_does_not_fit_fails_at_once(engine: tuple[Runner, str],
                                             pool_dir: Path) -> None:
    runner, pool = engine
    vfs = os.statvfs(pool_dir)
    job = runner.wait(runner.submit(SlowWrite("local", pool, "v", steps=1,
                                              need=vfs.f_bavail * vfs.f_frsize * 2)).id, 10)
    assert job.state == JobState.FAILED and job.error and "needs" in job.error
    assert not (pool_dir / "v").exists()


def test_a_corrupt_journal_row_is_a_clear_error(tmp_path: Path) -> None:
    from backends.contract import InvalidRequest
    from console.jobs.operations import operation_from

    with pytest.raises(InvalidRequest, match="job parameters"):
        operation_from("create", {"host": "h", "nonsense": 1})


def test_recover_marks_dead_owners_interrupted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    dead = journal.submit("slow-write", {}, "local", "p", "a")
    alive = journal.submit("slow-write", {}, "local", "p", "b")
    with journal.transaction() as conn:
        conn.execute("UPDATE jobs SET state='running', owner=? WHERE id=?",
                     (f"{os.uname().nodename}:999999999:1", dead.id))
        conn.execute("UPDATE jobs SET state='running', owner=? WHERE id=?",
                     (this_process(), alive.id))
    (found,) = journal.recover()
    assert found.id == dead.id and found.state == JobState.INTERRUPTED
    assert journal.get(alive.id).state == JobState.RUNNING


def test_recover_leaves_a_long_queued_job_of_a_live_process_alone(tmp_path: Path) -> None:
    """A job waiting for a slot behind others (a bulk plan of many) may wait for minutes:
    it belongs to the process that queued it, and only that process's death orphans it."""
    journal = Journal(tmp_path / "j.db")
    waiting = journal.submit("slow-write", {}, "local", "p", "a")
    orphan = journal.submit("slow-write", {}, "local", "p", "b")
    with journal.transaction() as conn:
        conn.execute("UPDATE jobs SET created=created-3600")
        conn.execute("UPDATE jobs SET owner=? WHERE id=?",
                     (f"{os.uname().nodename}:999999999:1", orphan.id))
    assert waiting.owner == this_process()
    (found,) = Journal(tmp_path / "j.db").recover()
    assert found.id == orphan.id and found.state == JobState.INTERRUPTED
    assert journal.get(waiting.id).state == JobState.PENDING


def test_resume_and_rollback_of_an_interrupted_job(engine: tuple[Runner, str],
                                                   pool_dir: Path) -> None:
    runner, pool = engine
    journal = runner.journal
    job = journal.submit("slow-write", SlowWrite("local", pool, "v", steps=3).params(),
                         "local", pool, "v")
    leftover = pool_dir / temp_name(job.id, "v")
    leftover.write_bytes(b"half")
    journal.remember(job.id, temp=leftover.name)
    with journal.transaction() as conn:
        conn.execute("UPDATE jobs SET state='interrupted' WHERE id=?", (job.id,))
    resumed = runner.wait(runner.resume(job.id).id, 10)
    assert resumed.state == JobState.DONE and (pool_dir / "v").read_bytes() == b"x" * 3072
    assert not leftover.exists()
    other = journal.submit("slow-write", SlowWrite("local", pool, "w").params(), "local",
                           pool, "w")
    second_leftover = pool_dir / temp_name(other.id, "w")
    second_leftover.write_bytes(b"half")
    journal.remember(other.id, temp=second_leftover.name)
    journal.set_state(other.id, JobState.INTERRUPTED)
    assert runner.rollback(other.id).state == JobState.ABORTED
    assert not second_leftover.exists()


def test_volume_lock_names_its_holder(pool_dir: Path) -> None:
    from backends.drivers.dir.driver import DirDriver
    from backends.model import Pool

    driver = DirDriver(LocalTransport("local"), (str(pool_dir),))
    pool = Pool("local", "p", "dir", str(pool_dir))
    with volume_lock(driver, pool, "v", "job 7 (me@here)"), \
            pytest.raises(VolumeBusy, match=r"locked by job 7 \(me@here\)"), \
            volume_lock(driver, pool, "v", "job 8"):
        pass
    with volume_lock(driver, pool, "v", "job 8"):
        pass  # released when the first holder left
    assert (pool_dir / ".storage-console" / "locks").is_dir()


def test_locks_of_pools_without_a_directory(tmp_path: Path) -> None:
    from backends.model import Pool
    from console.jobs.locks import lock_root

    assert lock_root(Pool("h", "vg0", "lvm", "/dev/vg0")) == \
        "/run/storage-console/locks/lvm/vg0"
    libvirt = lock_root(Pool("h", "default", "libvirt", "/var/lib/libvirt/images"))
    assert libvirt.startswith(os.environ["XDG_STATE_HOME"])  # this machine's state dir


def test_concurrency_is_bounded_per_pool(tmp_path: Path, pool_dir: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[jobs]\nper_host = 4\nper_pool = 1\n[[host]]\nname = 'local'\n"
                    f"[[host.pool]]\nname = 'p'\npath = '{pool_dir}'\n")
    inv = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(tmp_path / "j.db"), inv)
    assert (runner.per_host, runner.per_pool) == (4, 1)
    jobs = [runner.submit(SlowWrite("local", "p", f"v{i}", steps=5)) for i in range(3)]
    done = [runner.wait(j.id, 20) for j in jobs]
    runner.close()
    assert [d.state for d in done] == [JobState.DONE] * 3
    spans = sorted((d.started or 0, d.finished or 0) for d in done)
    # One at a time in the pool: each started after the previous one finished.
    assert all(later[0] >= earlier[1] - 0.01 for earlier, later in pairwise(spans))


def test_cancel_from_another_process_through_the_journal(tmp_path: Path,
                                                        pool_dir: Path) -> None:
    """Two runners on one journal file stand for two processes: the console and a
    `storage-console job cancel`."""
    pool = str(pool_dir.resolve())
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None))
    owner = Runner(Journal(tmp_path / "j.db"), inv, per_pool=1)
    other = Runner(Journal(tmp_path / "j.db"), inv)
    # Never ends on its own: only the cancel through the journal can stop it.
    running = owner.submit(SlowWrite("local", pool, "a", steps=10_000, step_seconds=0.01,
                                     gate=str(tmp_path / "never")))
    waiting = owner.submit(SlowWrite("local", pool, "b", steps=1))  # no slot yet
    wait_for(owner, running.id, lambda j: j.done_bytes >= 3)
    other.cancel(waiting.id)
    other.cancel(running.id)
    first = owner.wait(running.id, PATIENCE)
    second = owner.wait(waiting.id, PATIENCE)
    owner.close()
    other.close()
    assert (first.state, first.error) == (JobState.ABORTED, "cancelled")
    assert (second.state, second.error) == (JobState.ABORTED, "cancelled before it started")
    assert sorted(os.listdir(pool_dir)) == [".storage-console"]


def test_rollback_refused_in_read_only(tmp_path: Path, pool_dir: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    job = journal.submit("slow-write", SlowWrite("local", "p", "v").params(), "local", "p",
                         "v")
    journal.set_state(job.id, JobState.INTERRUPTED)
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None), read_only=True)
    with pytest.raises(ReadOnlyViolation):
        Runner(journal, inv).rollback(job.id)
    assert journal.get(job.id).state == JobState.INTERRUPTED
