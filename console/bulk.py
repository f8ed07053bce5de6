"""Bulk actions on marked volumes: one plan first, then its jobs through the runner.

``plan_bulk`` re-reads the marked volumes from disk (each host's pools scanned once, so
dependants are found in any pool of the host) and says, before anything is queued: each
job, what is refused and why (read-only, in use, a snapshot already, others based on
it, no space, a name taken, a shrink), the order, and the space each pool (or archive
directory) gains or loses. ``carry_out`` submits the jobs wave by wave: a delete's
dependants go in an earlier wave than what they are based on, and a volume whose
dependants were not all deleted is not tried. The runner bounds how many run at once
(per host and per pool). A check is no job: ``check_marked`` runs it once confirmed.

Plain Python, no Textual: the UI calls these in thread workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from backends.contract import StorageError, Transport, VolumeNotFound
from backends.model import Pool, Volume
from console.chains import based_on
from console.checks import CheckReport, check_pools
from console.fixes import Fix, Risk
from console.inventory import Inventory
from console.jobs.fixing import STEPS, RunFix, job_params
from console.jobs.journal import ACTIVE, JobRecord, JobState, Journal
from console.jobs.locks import host_transport
from console.jobs.operations import (
    ArchiveVolume,
    CopyVolume,
    DeleteVolume,
    GrowFilesystem,
    Operation,
    ResizeVolume,
    SnapshotVolume,
)
from console.jobs.reservations import PoolSpace, refusal
from console.jobs.runner import Runner
from console.jobs.transfer import TransferVolume
from console.marks import Mark
from console.units import format_size, parse_size

ACTIONS: dict[str, str] = {
    "delete": "Delete", "snapshot": "Snapshot", "copy": "Copy", "archive": "Archive",
    "resize": "Resize", "growfs": "Grow the file system of", "check": "Check",
    "fix": "Fix"}
READ_ONLY_ACTIONS = frozenset({"check"})  # nothing written: allowed in read-only mode
READ_ONLY = "the console is read-only: nothing can change storage"
LISTED = 5  # names given in a refusal; the rest are counted
ARCHIVE_SUFFIX = ".zst"
BULK_FIX_RISKS = frozenset({Risk.NONE, Risk.LOW})  # queued in bulk; others one by one
WIPES = ("none", "zero", "random")


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
    # Its space effect, (host, pool or archive directory, bytes): + takes, - frees.
    space: tuple[tuple[str, str, int], ...] = ()
    committed: int = 0  # bytes of virtual size it adds (a resize), in its own pool
    # Space it holds only while it runs (a copy between hosts flattening a chain into a
    # staging file of its source pool), (host, pool, bytes): reserved, then freed.
    staging: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class PoolEffect:
    host: str
    pool: str  # or an archive directory that is no pool
    change: int  # bytes: positive takes, negative frees
    available: int | None  # free now (None: could not be read)
    reserved: int  # by jobs already running there
    committed: int = 0  # virtual size added (a resize: allocated as the guest writes)
    staging: int = 0  # held while jobs run (staging files), freed when they end


@dataclass(frozen=True)
class BulkPlan:
    action: str
    jobs: tuple[PlannedJob, ...]
    refused: tuple[Refusal, ...]
    effects: tuple[PoolEffect, ...]
    dest: tuple[str, str] | None = None  # a copy's destination pool
    # A check: the volumes it reads. A fix: what the check found that is not queued
    # here (medium or high risk, a second fix of a volume, nothing to fix).
    checks: tuple[tuple[str, str, str], ...] = ()
    held: tuple[Refusal, ...] = ()

    @property
    def change(self) -> int:
        return sum(e.change for e in self.effects)

    @property
    def waves(self) -> int:
        return 1 + max((j.wave for j in self.jobs), default=-1)


@dataclass
class _Space:
    """A pool's (or a directory's) free space as the plan uses it up."""

    capacity: int
    allocation: int
    available: int | None
    reserved: int
    critical: float
    planned: int = 0

    def refusal(self, need: int) -> str | None:
        """Why ``need`` more bytes do not fit: the runner's rule (``reservations.
        refusal``), counting this plan's earlier jobs as reserved too."""
        if self.available is None:
            return None
        return refusal(need, PoolSpace(self.capacity, self.allocation, self.available),
                       self.reserved + self.planned, self.critical,
                       by="other jobs and this plan")


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

    def pool_of(self, volume: Volume) -> Pool:
        return self.inventory.pool(volume.host, volume.pool)

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

    def directory_space(self, pool: Pool, directory: str) -> _Space:
        """A directory that is no pool (an archive's): its file system's free space, no
        reservations and no threshold (the driver checks the free space alone)."""
        key = (pool.host, directory)
        if key not in self.spaces:
            transport = host_transport(self.inventory.driver(pool), pool.host)
            try:
                vfs = transport.statvfs(directory)
            except (OSError, StorageError):
                self.spaces[key] = _Space(0, 0, None, 0, 1.0)
            else:
                size = vfs.f_frsize
                self.spaces[key] = _Space(vfs.f_blocks * size,
                                          (vfs.f_blocks - vfs.f_bfree) * size,
                                          vfs.f_bavail * size, 0, 1.0)
        return self.spaces[key]

    def can(self, volume: Volume, capability: str, what: str) -> bool:
        """Whether the volume's pool offers ``capability``; if not, it is refused."""
        pool = self.pool_of(volume)
        if getattr(self.inventory.capabilities(pool), capability):
            return True
        self.refuse(volume, f"a {pool.kind} pool cannot {what} its volumes")
        return False

    def refuse(self, mark: Mark | Volume, reason: str) -> None:
        if isinstance(mark, Mark):
            self.refused.append(Refusal(mark.host, mark.pool, mark.volume, reason))
        else:
            self.refused.append(Refusal(mark.host, mark.pool, mark.name, reason))

    def take(self, op: Operation, volume: Volume, need: Sequence[tuple[str, str, int]],
             *, effect: Sequence[tuple[str, str, int]] | None = None, wave: int = 0,
             after: tuple[tuple[str, str], ...] = (), committed: int = 0,
             directory: Pool | None = None,
             staging: tuple[str, str, int] | None = None) -> bool:
        """Queue ``op`` unless the bytes it reserves (``need``: host, pool, bytes) do not
        fit (then it is refused, and False); ``effect`` is its lasting change where that
        differs (a fix's estimate).
        With ``directory`` the place of ``need`` is a directory of that pool's host.
        ``staging`` (host, pool, bytes) is reserved too, but freed when the job ends."""
        spaces = [(self.directory_space(directory, place) if directory is not None
                   else self.space(host, place), host, place, bytes_)
                  for host, place, bytes_ in need]
        if staging is not None and staging[2] > 0:
            spaces.append((self.space(staging[0], staging[1]), *staging))
        for index, (space, host, place, bytes_) in enumerate(spaces):
            why = space.refusal(bytes_)
            if why is None:
                continue
            if index == len(need):  # the staging file, in the volume's own pool
                why = (f"no space for its staging copy (flattened in its own pool before "
                       f"it travels, removed after): {why}")
            elif (host, place) != (volume.host, volume.pool):
                why = f"no space in {place!r} of {host!r}: {why}"
            else:
                why = f"no space: {why}"
            self.refuse(volume, why)
            return False
        for space, _, _, bytes_ in spaces:
            space.planned += max(bytes_, 0)
        held = (staging,) if staging is not None and staging[2] > 0 else ()
        self.jobs.append(PlannedJob(op, wave, after, tuple(need if effect is None
                                                           else effect), committed, held))
        return True

    def plan(self) -> tuple[tuple[PlannedJob, ...], tuple[PoolEffect, ...]]:
        jobs = tuple(sorted(self.jobs, key=lambda j: j.wave))
        change: dict[tuple[str, str], int] = {}
        committed: dict[tuple[str, str], int] = {}
        staging: dict[tuple[str, str], int] = {}
        for job in jobs:  # the combined effect is the sum of each job's own
            for host, place, bytes_ in job.space:
                change[(host, place)] = change.get((host, place), 0) + bytes_
            if job.committed:
                key = (job.op.host, job.op.pool)
                committed[key] = committed.get(key, 0) + job.committed
                change.setdefault(key, 0)
            for host, place, bytes_ in job.staging:
                staging[(host, place)] = staging.get((host, place), 0) + bytes_
                change.setdefault((host, place), 0)
        effects = []
        for key, bytes_ in change.items():
            space = self.space(*key)  # a directory's is in ``spaces`` already
            effects.append(PoolEffect(key[0], key[1], bytes_, space.available,
                                      space.reserved, committed.get(key, 0),
                                      staging.get(key, 0)))
        return jobs, tuple(effects)


def _names(volumes: Sequence[Volume]) -> str:
    names = ", ".join(v.name for v in volumes[:LISTED])
    more = f" and {len(volumes) - LISTED} more" if len(volumes) > LISTED else ""
    return names + more


def resize_target(text: str) -> tuple[bool, int]:
    """``+10G`` (grow each by 10 GiB) or ``30G`` (each to 30 GiB): (relative, bytes).
    Raises ``ValueError`` with a message fit to show."""
    text = text.strip()
    relative = text.startswith("+")
    size = parse_size(text[1:] if relative else text)
    if size <= 0:
        raise ValueError("the size must be larger than 0")
    return relative, size


def plan_bulk(inventory: Inventory, runner: Runner | None, action: str,
              marks: Iterable[Mark], *, dest: tuple[str, str] | None = None,
              directory: str | None = None, size: str | None = None,
              wipe: str = "none") -> BulkPlan:
    """The plan for ``action`` on ``marks``: "delete" (``wipe`` none, zero or random),
    "snapshot", "copy" to ``dest`` (host, pool), "archive" into ``directory`` (one
    ``<volume>.zst`` each, on each volume's host), "resize" to or by ``size`` (see
    ``resize_target``), "growfs", "check" or "fix" (the low-risk fixes a check of the
    marked volumes proposes).

    Blocking: scans each marked host's pools once and probes sizes (thread workers only).
    Raises ``ValueError`` for a missing or malformed parameter.
    """
    if action not in ACTIONS:
        raise ValueError(f"no bulk {action!r}: choose one of {', '.join(ACTIONS)}")
    if action == "copy" and dest is None:
        raise ValueError("a bulk copy needs a destination pool")
    if action == "archive" and not (directory and os.path.isabs(directory)):
        raise ValueError("the archives' directory: an absolute path on the volumes' hosts")
    if action == "resize":
        resize_target(size or "")  # a bad size is said before anything is read
    if wipe not in WIPES:
        raise ValueError(f"wipe: one of {', '.join(WIPES)}")
    marks = list(marks)
    planner = _Planner(inventory, runner)
    if inventory.read_only and action not in READ_ONLY_ACTIONS:
        refused = tuple(Refusal(m.host, m.pool, m.volume, READ_ONLY) for m in marks)
        return BulkPlan(action, (), refused, (), dest)
    found = [(m, v) for m in marks if (v := planner.volume(m)) is not None]
    checks: tuple[tuple[str, str, str], ...] = ()
    held: list[Refusal] = []
    if action == "delete":
        _plan_delete(planner, found, wipe)
    elif action == "snapshot":
        _plan_snapshot(planner, found)
    elif action == "copy":
        assert dest is not None
        _plan_copy(planner, found, dest)
    elif action == "archive":
        assert directory is not None
        _plan_archive(planner, found, directory)
    elif action == "resize":
        _plan_resize(planner, found, *resize_target(size or ""))
    elif action == "growfs":
        _plan_growfs(planner, found)
    elif action == "check":
        checks = tuple((v.host, v.pool, v.name) for _, v in found)
    else:
        held = _plan_fix(planner, found)
    jobs, effects = planner.plan()
    return BulkPlan(action, jobs, tuple(planner.refused), effects, dest, checks,
                    tuple(held))


def _plan_delete(planner: _Planner, found: list[tuple[Mark, Volume]], wipe: str) -> None:
    marked = {(v.host, v.pool, v.name) for _, v in found}
    accepted: dict[tuple[str, str, str], tuple[Volume, list[tuple[int, Volume]]]] = {}
    for _, volume in found:
        based = planner.host(volume.host).dependants(volume)
        loose = [v for _, v in based if (v.host, v.pool, v.name) not in marked]
        if loose:
            planner.refuse(volume, f"{len(loose)} volume(s) are based on it and not marked "
                           f"({_names(loose)}): mark them too, or flatten them first")
            continue
        if planner.inventory.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU (its file lock): stop the VM "
                           "(or qemu-nbd) first")
            continue
        if wipe != "none" and not planner.can(volume, "wipe", "wipe"):
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
        pool = planner.pool_of(volume)
        holds = planner.inventory.driver(pool).holds_data(volume)
        op = DeleteVolume(volume.host, volume.pool, volume.name,
                          typed_name=volume.name if holds else None,
                          wipe=None if wipe == "none" else wipe)
        # Its wave: after the farthest leaf based on it is gone (leaves are wave 0).
        wave = max((distance for distance, _ in based), default=0)
        after = tuple((v.pool, v.name) for _, v in based)
        planner.take(op, volume, [(volume.host, volume.pool, -volume.allocation)],
                     wave=wave, after=after)


def _plan_snapshot(planner: _Planner, found: list[tuple[Mark, Volume]]) -> None:
    for _, volume in found:
        if volume.readonly:
            planner.refuse(volume, "read-only: a snapshot already (clone it instead)")
            continue
        if planner.inventory.in_use(volume):
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
        planner.take(op, volume, [(volume.host, volume.pool, need)])


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
        if (volume.host, volume.pool) == dest:
            planner.refuse(volume, "already in the destination pool")
            continue
        source = planner.pool_of(volume)
        elsewhere = volume.host != host
        if elsewhere and source.kind != "dir":
            planner.refuse(volume, f"a copy to another host works between directory "
                           f"pools: its pool is a {source.kind} pool")
            continue
        if elsewhere and target.kind != "dir":
            planner.refuse(volume, f"a copy to another host works between directory "
                           f"pools: {pool!r} of {host!r} is a {target.kind} pool")
            continue
        if volume.name in names or _exists(planner.inventory, target, volume.name):
            planner.refuse(volume, f"a volume named {volume.name!r} is already in {pool!r} "
                           "(or another marked volume is copied there under that name)")
            continue
        if planner.inventory.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: a copy would not be "
                           "consistent (stop the VM first)")
            continue
        op: Operation
        staging = 0  # a chain is flattened into its source pool first (the runner's rule)
        try:
            if elsewhere:
                op = TransferVolume(volume.host, volume.pool, volume.name, dest_host=host,
                                    dest_pool=pool, dest_name=volume.name)
                (_, _, need), staging = op.reservations(planner.inventory)
            else:
                op = CopyVolume(volume.host, volume.pool, volume.name, dest_pool=pool,
                                dest_name=volume.name)
                _, need = op.space(planner.inventory)
        except StorageError as err:
            planner.refuse(volume, str(err))
            continue
        if planner.take(op, volume, [(host, pool, need)],
                        staging=(volume.host, volume.pool, staging)):
            names.add(volume.name)  # a refused one leaves its name free


def _plan_archive(planner: _Planner, found: list[tuple[Mark, Volume]],
                  directory: str) -> None:
    taken: set[tuple[str, str]] = set()  # (host, archive path)
    for _, volume in found:
        if not planner.can(volume, "archive", "archive"):
            continue
        dest = os.path.join(directory, volume.name + ARCHIVE_SUFFIX)
        if (volume.host, dest) in taken:
            planner.refuse(volume, f"another marked volume of {volume.host!r} is archived "
                           f"to {dest} already: archive this one alone (a)")
            continue
        pool = planner.pool_of(volume)
        transport = host_transport(planner.inventory.driver(pool), volume.host)
        if _present(transport, dest) or _present(transport, dest + ".json"):
            planner.refuse(volume, f"{dest} (or its sidecar) is there already: archive it "
                           "alone (a) to replace it, or choose another directory")
            continue
        if planner.inventory.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: the archive would be torn "
                           "(stop the VM first)")
            continue
        op = ArchiveVolume(volume.host, volume.pool, volume.name, dest=dest)
        in_directory: Pool | None = None
        try:
            place, need = op.space(planner.inventory)
            if need == 0:  # no pool of the host is that directory: its file system then
                place, in_directory = directory, pool
                need = planner.inventory.driver(pool).measure_archive(pool, volume.name)
        except StorageError as err:
            planner.refuse(volume, str(err))
            continue
        taken.add((volume.host, dest))
        planner.take(op, volume, [(volume.host, place, need)], directory=in_directory)


def _present(transport: Transport, path: str) -> bool:
    try:
        transport.lstat(path)
    except FileNotFoundError:
        return False
    except (OSError, StorageError):
        return True  # cannot tell: refused rather than overwritten
    return True


def _plan_resize(planner: _Planner, found: list[tuple[Mark, Volume]], relative: bool,
                 size: int) -> None:
    for _, volume in found:
        if not planner.can(volume, "resize", "resize"):
            continue
        if volume.readonly:
            planner.refuse(volume, "read-only: a snapshot keeps its size")
            continue
        new = volume.capacity + size if relative else size
        if new < volume.capacity:
            planner.refuse(volume, f"{format_size(volume.capacity)} now: shrinking to "
                           f"{format_size(new)} is never done in bulk (resize it alone with "
                           "e, ticking shrink)")
            continue
        if new == volume.capacity:
            planner.refuse(volume, f"it is {format_size(new)} already")
            continue
        if planner.inventory.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: it is resized with the VM "
                           "stopped")
            continue
        op = ResizeVolume(volume.host, volume.pool, volume.name, capacity=new)
        try:
            _, need = op.space(planner.inventory)
        except StorageError as err:
            planner.refuse(volume, str(err))
            continue
        # A thick LV's growth is taken now (``need``, reserved as the runner does); a
        # sparse file's is virtual, allocated as the guest writes.
        growth = new - volume.capacity
        planner.take(op, volume, [(volume.host, volume.pool, need)],
                     committed=growth if need < growth else 0)


def _plan_growfs(planner: _Planner, found: list[tuple[Mark, Volume]]) -> None:
    for _, volume in found:
        if not planner.can(volume, "growfs", "grow file systems in"):
            continue
        if str(volume.format) != "raw":
            planner.refuse(volume, f"a {volume.format} image: the file system is grown "
                           "inside raw images only")
            continue
        if planner.inventory.in_use(volume):
            planner.refuse(volume, "in use by a running QEMU: its file system is grown "
                           "with the VM stopped")
            continue
        planner.take(GrowFilesystem(volume.host, volume.pool, volume.name), volume,
                     [(volume.host, volume.pool, 0)])


def _review(fix: Fix) -> str | None:
    """Why ``fix`` is left to the fixes screen, one by one (None: queued in bulk)."""
    if fix.risk not in BULK_FIX_RISKS:
        return f"{fix.risk} risk ({fix.type}): review it on its own in the fixes screen (F)"
    if fix.needs_confirmation:
        return "needs a confirmation: review it on its own in the fixes screen (F)"
    if fix.params.get("requires_mark"):
        return "needs its own mark in the fixes screen (F)"
    if job_params(fix)[0] not in STEPS:  # a check's code names its fix job's own way
        return "no fix job runs it yet"
    return None


def check_marked(inventory: Inventory, journal: Journal | None,
                 volumes: Sequence[tuple[str, str, str]]) -> CheckReport:
    """A deep check of ``volumes`` (host, pool, name) alone, their pools read once.
    Read-only. Blocking (thread workers only)."""
    wanted = set(volumes)
    pools: list[Pool] = []
    for host, name in dict.fromkeys((h, p) for h, p, _ in volumes):
        try:
            pools.append(inventory.pool(host, name))
        except KeyError:
            continue  # the plan refused its volumes already
    report = check_pools(inventory, pools, journal=journal,
                         only=lambda v: (v.host, v.pool, v.name) in wanted)
    # The pool-wide findings (leftovers, overcommit) are the fixes screen's: here only
    # what was marked.
    report.findings = [f for f in report.findings if (f.host, f.pool, f.volume) in wanted]
    report.fixes = [f for f in report.fixes if (f.host, f.pool, f.volume) in wanted]
    return report


def _plan_fix(planner: _Planner, found: list[tuple[Mark, Volume]]) -> list[Refusal]:
    """Check the marked volumes; queue the first low- or no-risk fix of each. Returns
    what is left to a person (medium and high risk, a second fix, nothing to fix)."""
    keys = [(v.host, v.pool, v.name) for _, v in found]
    journal = planner.runner.journal if planner.runner else None
    report = check_marked(planner.inventory, journal, keys)
    for error in report.errors:
        planner.refused.append(Refusal("", "", "", error))
    held: list[Refusal] = []
    for _, volume in found:
        key = (volume.host, volume.pool, volume.name)
        fixes = [f for f in report.fixes if (f.host, f.pool, f.volume) == key]
        queued = False
        for fix in fixes:
            why = _review(fix)
            if why is None and queued:
                why = "one fix of a volume at a time: check it again once the first is done"
            if why is not None:
                held.append(Refusal(*key, f"{fix.code}: {fix.reason} — {why}"))
                continue
            op = RunFix.from_fix(fix)
            try:
                _, need = op.space(planner.inventory)
            except StorageError as err:
                planner.refuse(volume, f"{fix.code}: {err}")
                continue
            queued = planner.take(op, volume, [(volume.host, volume.pool, need)],
                                  effect=[(volume.host, volume.pool, fix.space_change)])
        if not fixes:
            broken = [f for f in report.findings if (f.host, f.pool, f.volume) == key]
            held.append(Refusal(*key, f"{broken[0].reason}: no fix is proposed, a person "
                                "looks first" if broken else "nothing to fix"))
    return held


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
