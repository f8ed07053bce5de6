"""Bulk actions on marked volumes: one plan first, then its jobs through the runner.

``plan_bulk`` re-reads the marked volumes from disk (each host's pools scanned once, so
dependants are found in any pool of the host) and says, before anything is queued: each
job, what is refused and why (read-only, in use, a snapshot already, others based on
it, no space), the order, and the space each pool gains or loses. ``carry_out`` submits
the jobs wave by wave: a delete's dependants go in an earlier wave than what they are
based on, and a volume whose dependants were not all deleted is not tried. The runner
bounds how many run at once (per host and per pool).

Plain Python, no Textual: the UI calls both in thread workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from backends.contract import StorageError, VolumeNotFound
from backends.model import Pool, Volume
from console.chains import based_on
from console.inventory import Inventory
from console.jobs.journal import ACTIVE, JobRecord, JobState
from console.jobs.operations import CopyVolume, DeleteVolume, Operation, SnapshotVolume
from console.jobs.runner import Runner
from console.marks import Mark
from console.units import format_size

ACTIONS: dict[str, str] = {"delete": "Delete", "snapshot": "Snapshot", "copy": "Copy"}
READ_ONLY = "the console is read-only: nothing can change storage"
LISTED = 5  # names given in a refusal; the rest are counted


@dataclass(frozen=True)
class Refusal:
    host: str
    pool: str
    volume: str
    reason: str


@dataclass(frozen=True)
class PlannedJob:
    op: Operation
    wave: int  # jobs of a wave are queued once every job of the waves before is done
    # What a delete waits for: (pool, volume) of the marked volumes based on this one.
    after: tuple[tuple[str, str], ...] = ()
    space: tuple[tuple[str, str, int], ...] = ()  # (host, pool, bytes): + takes, - frees


@dataclass(frozen=True)
class PoolEffect:
    host: str
    pool: str
    change: int  # bytes: positive takes, negative frees
    available: int | None  # free now (None: could not be read)
    reserved: int  # by jobs already running there


@dataclass(frozen=True)
class BulkPlan:
    action: str
    jobs: tuple[PlannedJob, ...]
    refused: tuple[Refusal, ...]
    effects: tuple[PoolEffect, ...]
    dest: tuple[str, str] | None = None  # a copy's destination pool

    @property
    def change(self) -> int:
        return sum(e.change for e in self.effects)

    @property
    def waves(self) -> int:
        return 1 + max((j.wave for j in self.jobs), default=-1)


@dataclass
class _Space:
    """A pool's free space as the plan uses it up."""

    capacity: int
    allocation: int
    available: int | None
    reserved: int
    critical: float
    planned: int = 0

    def refusal(self, need: int) -> str | None:
        """Why ``need`` more bytes do not fit, as the runner's reservation would say."""
        if need <= 0 or self.available is None:
            return None
        free = self.available - self.reserved - self.planned
        if need > free:
            return (f"no space: needs {format_size(need)}, the pool has "
                    f"{format_size(max(free, 0))} free after other jobs and this plan")
        used = self.allocation + self.reserved + self.planned + need
        if self.capacity and used > self.critical * self.capacity:
            return (f"no space: the pool would be {100 * used / self.capacity:.0f}% used, "
                    f"above its critical threshold of {100 * self.critical:.0f}%")
        return None


@dataclass
class _Host:
    """Every volume of one host, scanned once: dependants are found in any pool."""

    volumes: dict[tuple[str, str], Volume] = field(default_factory=dict)  # (pool, name)
    errors: dict[str, str] = field(default_factory=dict)  # pool -> why it was not scanned

    def dependants(self, volume: Volume) -> list[tuple[int, Volume]]:
        """What is based on ``volume`` (distance 1 directly, 2 through one, ...), leaves
        first, as ``Inventory.plan_delete`` orders them."""
        return sorted(based_on(volume.path, self.volumes.values()),
                      key=lambda item: (-item[0], item[1].path))


class _Planner:
    def __init__(self, inventory: Inventory, runner: Runner | None) -> None:
        self.inventory = inventory
        self.runner = runner
        self.hosts: dict[str, _Host] = {}
        self.spaces: dict[tuple[str, str], _Space] = {}
        self.effects: dict[tuple[str, str], int] = {}
        self.refused: list[Refusal] = []
        self.jobs: list[PlannedJob] = []

    def host(self, name: str) -> _Host:
        if name not in self.hosts:
            scanned = _Host()
            for pool in self.inventory.host_pools(name):
                try:
                    scan = self.inventory.driver(pool).scan_pool(pool)
                except StorageError as err:
                    scanned.errors[pool.name] = str(err)
                    continue
                for volume in scan.volumes:
                    scanned.volumes[(pool.name, volume.name)] = volume
            self.hosts[name] = scanned
        return self.hosts[name]

    def volume(self, mark: Mark) -> Volume | None:
        """The marked volume as the disk has it now, or None (refused, with why)."""
        try:
            self.inventory.pool(mark.host, mark.pool)
        except KeyError:
            self.refuse(mark, "its pool is no longer in the config")
            return None
        scanned = self.host(mark.host)
        volume = scanned.volumes.get((mark.pool, mark.volume))
        if volume is None:
            self.refuse(mark, scanned.errors.get(mark.pool)
                        or "no longer on disk (refresh with r)")
        return volume

    def space(self, host: str, pool: str) -> _Space:
        key = (host, pool)
        if key not in self.spaces:
            p = self.inventory.pool(host, pool)
            try:
                cap = self.inventory.driver(p).pool_capacity(p)
                capacity, allocation, available = cap.capacity, cap.allocation, cap.available
            except StorageError:
                capacity, allocation, available = 0, 0, None
            reserved = self.runner.reservations.reserved(host, pool) if self.runner else 0
            critical = self.inventory.config.pool_thresholds(host, pool).critical
            self.spaces[key] = _Space(capacity, allocation, available, reserved, critical)
        return self.spaces[key]

    def in_use(self, volume: Volume) -> bool:
        # The inventory's own check (as its delete plan makes): unknown counts as free,
        # the job asks again before it acts.
        return self.inventory.in_use(volume)

    def refuse(self, mark: Mark | Volume, reason: str) -> None:
        if isinstance(mark, Mark):
            self.refused.append(Refusal(mark.host, mark.pool, mark.volume, reason))
        else:
            self.refused.append(Refusal(mark.host, mark.pool, mark.name, reason))

    def take(self, op: Operation, host: str, pool: str, need: int, volume: Volume,
             wave: int = 0, after: tuple[tuple[str, str], ...] = ()) -> None:
        """Queue ``op`` unless ``need`` bytes do not fit in ``pool``."""
        space = self.space(host, pool)
        why = space.refusal(need)
        if why is not None:
            self.refuse(volume, why)
            return
        space.planned += max(need, 0)
        self.effects[(host, pool)] = self.effects.get((host, pool), 0) + need
        self.jobs.append(PlannedJob(op, wave, after, ((host, pool, need),)))

    def plan(self) -> tuple[tuple[PlannedJob, ...], tuple[PoolEffect, ...]]:
        jobs = tuple(sorted(self.jobs, key=lambda j: j.wave))
        effects = []
        for (host, pool), change in self.effects.items():
            space = self.space(host, pool)
            effects.append(PoolEffect(host, pool, change, space.available, space.reserved))
        return jobs, tuple(effects)


def _names(volumes: Sequence[Volume]) -> str:
    names = ", ".join(v.name for v in volumes[:LISTED])
    more = f" and {len(volumes) - LISTED} more" if len(volumes) > LISTED else ""
    return names + more


def plan_bulk(inventory: Inventory, runner: Runner | None, action: str,
              marks: Iterable[Mark], *, dest: tuple[str, str] | None = None) -> BulkPlan:
    """The plan for ``action`` ("delete", "snapshot" or "copy" to ``dest``) on ``marks``.

    Blocking: scans each marked host's pools once and probes sizes (thread workers only).
    """
    if action not in ACTIONS:
        raise ValueError(f"no bulk {action!r}: choose one of {', '.join(ACTIONS)}")
    marks = list(marks)
    planner = _Planner(inventory, runner)
    if inventory.read_only:
        refused = tuple(Refusal(m.host, m.pool, m.volume, READ_ONLY) for m in marks)
        return BulkPlan(action, (), refused, (), dest)
    if action == "copy" and dest is None:
        raise ValueError("a bulk copy needs a destination pool")
    found = [(m, v) for m in marks if (v := planner.volume(m)) is not None]
    if action == "delete":
        _plan_delete(planner, found)
    elif action == "snapshot":
        _plan_snapshot(planner, found)
    else:
        assert dest is not None
        _plan_copy(planner, found, dest)
    jobs, effects = planner.plan()
    return BulkPlan(action, jobs, tuple(planner.refused), effects, dest)


def _plan_delete(planner: _Planner, found: list[tuple[Mark, Volume]]) -> None:
    marked = {(v.host, v.pool, v.name) for _, v in found}
    accepted: dict[tuple[str, str, str], tuple[Volume, list[tuple[int, Volume]]]] = {}
    for _, volume in found:
        based = planner.host(volume.host).dependants(volume)
        loose = [v for _, v in based if (v.host, v.pool, v.name) not in marked]
        if loose:
            planner.refuse(volume, f"{len(loose)} volume(s) are based on it and not marked "
                           f"({_names(loose)}): mark them too, or flatten them first")
            continue
        if planner.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU (its file lock): stop the VM "
                           "(or qemu-nbd) first")
            continue
        accepted[(volume.host, volume.pool, volume.name)] = (volume, based)
    # A volume whose (marked) dependants were refused stays: deleting it would cut them.
    changed = True
    while changed:
        changed = False
        for key, (volume, based) in list(accepted.items()):
            cut = [v for _, v in based if (v.host, v.pool, v.name) not in accepted]
            if cut:
                del accepted[key]
                planner.refuse(volume, f"{len(cut)} volume(s) based on it are refused "
                               f"here ({_names(cut)}): it would lose them")
                changed = True
    for volume, based in accepted.values():
        pool = planner.inventory.pool(volume.host, volume.pool)
        holds = planner.inventory.driver(pool).holds_data(volume)
        op = DeleteVolume(volume.host, volume.pool, volume.name,
                          typed_name=volume.name if holds else None)
        # Its wave: after the farthest leaf based on it is gone (leaves are wave 0).
        wave = max((distance for distance, _ in based), default=0)
        after = tuple((v.pool, v.name) for _, v in based)
        planner.take(op, volume.host, volume.pool, -volume.allocation, volume, wave, after)


def _plan_snapshot(planner: _Planner, found: list[tuple[Mark, Volume]]) -> None:
    for _, volume in found:
        if volume.readonly:
            planner.refuse(volume, "read-only: a snapshot already (clone it instead)")
            continue
        if planner.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: a disk is not switched to a "
                           "new overlay under it (stop the VM first)")
            continue
        based = planner.host(volume.host).dependants(volume)
        if based:
            planner.refuse(volume, f"{len(based)} volume(s) are based on it "
                           f"({_names([v for _, v in based])}): their data would change")
            continue
        op = SnapshotVolume(volume.host, volume.pool, volume.name)
        try:
            _, need = op.space(planner.inventory)
        except StorageError as err:
            planner.refuse(volume, str(err))
            continue
        planner.take(op, volume.host, volume.pool, need, volume)


def _plan_copy(planner: _Planner, found: list[tuple[Mark, Volume]],
               dest: tuple[str, str]) -> None:
    host, pool = dest
    try:
        target: Pool | None = planner.inventory.pool(host, pool)
    except KeyError:
        target = None
    names: set[str] = set()
    for _, volume in found:
        if target is None:
            planner.refuse(volume, f"pool {pool!r} of host {host!r} is not in the config")
            continue
        if volume.host != host:
            planner.refuse(volume, f"on host {volume.host!r}: a copy stays on its host "
                           f"(the destination is on {host!r})")
            continue
        if volume.pool == pool:
            planner.refuse(volume, "already in the destination pool")
            continue
        if volume.name in names or _exists(planner.inventory, target, volume.name):
            planner.refuse(volume, f"a volume named {volume.name!r} is already in {pool!r} "
                           "(or another marked volume is copied there under that name)")
            continue
        if planner.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: a copy would not be "
                           "consistent (stop the VM first)")
            continue
        op = CopyVolume(volume.host, volume.pool, volume.name, dest_pool=pool,
                        dest_name=volume.name)
        try:
            _, need = op.space(planner.inventory)
        except StorageError as err:
            planner.refuse(volume, str(err))
            continue
        names.add(volume.name)
        planner.take(op, host, pool, need, volume)


def _exists(inventory: Inventory, pool: Pool, name: str) -> bool:
    try:
        inventory.driver(pool).probe_volume(pool, name)
    except VolumeNotFound:
        return False
    except StorageError:
        return True  # something is there that is not a volume: refused too
    return True


# -- carrying it out -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one planned job: submitted (``job``), then ended (``job.state``),
    or never run (``job`` None, ``reason`` says why)."""

    index: int  # in ``plan.jobs``
    job: JobRecord | None
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.job is None or self.job.state not in ACTIVE

    @property
    def succeeded(self) -> bool:
        return self.job is not None and self.job.state == JobState.DONE


def carry_out(runner: Runner, plan: BulkPlan, report: Callable[[Outcome], object], *,
              timeout: float | None = None) -> list[Outcome]:
    """Submit ``plan``'s jobs wave by wave and ``report`` each as it is queued and as it
    ends. Blocking: waits for the jobs (thread workers only)."""
    outcomes: dict[int, Outcome] = {}
    failed: set[tuple[str, str, str]] = set()  # (host, pool, volume) not done
    for wave in range(plan.waves):
        queued: list[Outcome] = []
        for index, planned in enumerate(plan.jobs):
            if planned.wave != wave:
                continue
            op = planned.op
            kept = [name for pool, name in planned.after if (op.host, pool, name) in failed]
            if kept:
                outcome = Outcome(index, None, f"not run: {', '.join(kept[:LISTED])} (based "
                                  "on it) was not deleted")
            else:
                try:
                    outcome = Outcome(index, runner.submit(op))
                except StorageError as err:
                    outcome = Outcome(index, None, str(err))
            if outcome.job is None:
                failed.add((op.host, op.pool, op.volume))
            else:
                queued.append(outcome)
            outcomes[index] = outcome
            report(outcome)
        for outcome in queued:
            assert outcome.job is not None
            job = runner.wait(outcome.job.id, timeout)
            done = Outcome(outcome.index, job, job.error or "")
            if not done.succeeded:
                op = plan.jobs[outcome.index].op
                failed.add((op.host, op.pool, op.volume))
            outcomes[outcome.index] = done
            report(done)
    return [outcomes[i] for i in sorted(outcomes)]
