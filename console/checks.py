"""Checks: what is wrong with the storage, and the fixes that would make it better.

``check_pools`` re-reads the given pools from disk and looks at every volume through
each source of the health-and-fixes issue: the header probe (corrupt and dirty bits,
damaged headers), ``qemu-img check`` (deep only; images in use are read with
force-share and their findings labelled possibly inconsistent), the backing chain
(too deep, missing, looping, escaping), leftover temporary files of jobs that no longer
run, snapshots nothing is based on, volumes no libvirt domain uses, qcow2 compat 0.10,
raw images whose allocated space is mostly zeroes, pools committed past their
capacity, volumes that could be committed into their base (the one volume based on it),
and, under the ``performance`` strategy, volumes not laid out for it (format,
preallocation). Each finding comes with the ``Fix`` that would mend it, when there is one.
A libvirt dir/fs pool of this machine is checked through its directory
(``console.pool_files``).

Read-only: nothing here writes to a pool. The fixes are proposals; a fix job runs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from backends import qemuimg
from backends.contract import Driver, NotSupported, StorageError
from backends.drivers.dir.names import backing_reference
from backends.model import (
    Health,
    HealthState,
    ImageFormat,
    LinkProblem,
    Pool,
    PoolScan,
    TemporaryFile,
    Volume,
)
from backends.transport.scanner import TEMP_PREFIX, job_of_temporary
from console.fixes import Finding, Fix, FixType, Risk, Severity
from console.health import assess
from console.pool_files import pool_files

if TYPE_CHECKING:
    from console.config import Strategy
    from console.inventory import Inventory
    from console.jobs.journal import JobRecord, Journal

ZERO_BUDGET = 64 << 20  # bytes read per raw volume to count zeroes; a sample past it
MOSTLY_ZERO = 0.5  # a raw volume whose allocated space is more than this much zeroes
MIN_ZERO_BYTES = 1 << 20  # ... and at least this many zero bytes: worth a fix
ORPHAN_AGE = 24 * 3600  # a temporary file no journal row claims: a leftover past this
FIX_KIND = "fix"  # the journal's kind of a fix job
PREALLOCATED = 0.99  # allocated past this fraction of its size: a volume is preallocated
COMMIT_FORMATS = ("raw", "qcow2")  # bases a commit writes into
JOB_PLACEHOLDER = "{job}"  # in a fix's commands: the id of the job that runs it

_SEVERITY_RANK = {Severity.BROKEN: 0, Severity.DEGRADED: 1, Severity.INFO: 2}
_TYPE_RANK = {FixType.MEND: 0, FixType.CLEAN: 1, FixType.MERGE: 2, FixType.OPTIMIZE: 3}

_CHAIN_CODES = {
    LinkProblem.MISSING: ("backing-missing", "backing file {path} is missing"),
    LinkProblem.LOOP: ("backing-loop", "backing chain loops back to {path}"),
    LinkProblem.ESCAPE: ("backing-escape",
                         "backing file {path} lies outside the allowed roots: not followed"),
    LinkProblem.NOT_REGULAR: ("backing-not-regular",
                              "backing {path} is not a regular file: not opened"),
    LinkProblem.UNREADABLE: ("backing-unreadable", "backing file {path} cannot be read"),
    LinkProblem.TOO_DEEP: ("backing-too-deep",
                           "backing chain is longer than the hard limit ({detail})"),
}


@dataclass(frozen=True)
class VolumeCheck:
    """One volume as the check saw it: its health with reasons, what ``qemu-img check``
    said (None when not run), and the last fix job attempted on it."""

    volume: Volume
    health: Health
    checked: qemuimg.CheckResult | None = None
    possibly_inconsistent: bool = False
    last_fix: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        v = self.volume
        return {
            "host": v.host, "pool": v.pool, "name": v.name, "path": v.path,
            "format": str(v.format), "capacity": v.capacity, "allocation": v.allocation,
            "chain_depth": v.chain_depth, "snapshot": v.readonly, "in_use": v.in_use,
            "health": str(self.health.state), "reasons": list(self.health.reasons),
            "check": self.checked.status if self.checked else None,
            "possibly_inconsistent": self.possibly_inconsistent,
            "last_fix": self.last_fix,
        }


@dataclass
class CheckReport:
    """Findings and fixes ranked (broken first, then degraded, then information; by
    type within), each volume's health, and what could not be checked."""

    volumes: list[VolumeCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return (any(f.severity == Severity.BROKEN for f in self.findings)
                or any(v.health.state == HealthState.BROKEN for v in self.volumes))

    def record(self) -> dict[str, Any]:
        return {"volumes": [v.record() for v in self.volumes],
                "findings": [finding_record(f) for f in self.findings],
                "fixes": [f.record() for f in self.fixes],
                "errors": list(self.errors)}


def finding_record(f: Finding) -> dict[str, Any]:
    return {"host": f.host, "pool": f.pool, "volume": f.volume,
            "severity": str(f.severity), "code": f.code, "reason": f.reason,
            "possibly_inconsistent": f.possibly_inconsistent}


def check_pools(
    inventory: Inventory,
    pools: Sequence[Pool],
    *,
    deep: bool = True,
    journal: Journal | None = None,
    only: Callable[[Volume], bool] | None = None,
    zero_budget: int = ZERO_BUDGET,
) -> CheckReport:
    """Check ``pools`` (re-read from disk). ``deep`` runs ``qemu-img check`` on each
    image that has one and counts the zeroes of raw images (at most ``zero_budget``
    bytes read per volume); without it only what the scan found is looked at.
    ``journal`` tells which job a temporary file belongs to and the last fix of each
    volume (without it, temporary files are leftovers only once ``ORPHAN_AGE`` old).
    ``only`` limits the volumes looked at (the pool-wide findings still come)."""
    return _Checker(inventory, deep, journal, only, zero_budget).run(pools)


class _Checker:
    def __init__(self, inventory: Inventory, deep: bool, journal: Journal | None,
                 only: Callable[[Volume], bool] | None, zero_budget: int) -> None:
        self.inventory = inventory
        self.deep = deep
        self.journal = journal
        self.only = only
        self.zero_budget = zero_budget
        self.report = CheckReport()
        self._severity: dict[int, Severity] = {}  # id(fix) -> its finding's severity
        self._host_volumes: dict[str, list[Volume]] = {}
        self._host_chains: dict[str, _Chains] = {}
        self._scanned: dict[tuple[str, str], PoolScan] = {}  # the pools checked
        self._others: dict[tuple[str, str], PoolScan] = {}  # the host's other pools
        self._libvirt: set[tuple[str, str]] = set()  # checked through their directory

    def run(self, pools: Sequence[Pool]) -> CheckReport:
        for pool in pools:
            try:
                scan, _ = self.inventory.scan_pool(pool)
            except StorageError as err:
                self.report.errors.append(str(err))
                continue
            self._scanned[(pool.host, pool.name)] = scan
        for scan in list(self._scanned.values()):
            scan, driver = self._files(scan)
            self._check_pool(scan, driver)
        self._rank()
        return self.report

    # -- sources ------------------------------------------------------------------

    def _check_pool(self, scan: PoolScan, driver: Driver) -> None:
        pool = scan.pool
        cap = pool.capacity
        if cap is not None and cap.capacity and cap.committed > cap.capacity:
            self._find(pool, None, Severity.DEGRADED, "pool-overcommitted",
                       f"volumes may grow to {cap.committed} bytes, more than the pool's "
                       f"{cap.capacity}: writes fail once it fills")
        self._temporaries(scan, driver)
        for volume in scan.volumes:
            if self.only is None or self.only(volume):
                self._check_volume(pool, volume, driver)

    def _check_volume(self, pool: Pool, v: Volume, driver: Driver) -> None:
        before = len(self.report.findings)
        self._header(pool, v)
        self._chain(pool, v, driver)
        checked, shared = None, False
        if self.deep:
            checked, shared = self._qemu_check(pool, v, driver)
            self._zeroes(pool, v, driver)
        self._snapshot(pool, v)
        self._commit(pool, v)
        self._layout(pool, v, driver)
        if (pool.kind == "libvirt" or (pool.host, pool.name) in self._libvirt) \
                and not v.used_by and not v.readonly:
            self._find(pool, v.name, Severity.INFO, "unused-volume",
                       "no libvirt domain uses it")
        mine = self.report.findings[before:]
        health = _merge(assess(v, self.inventory.max_chain_depth), mine, shared)
        self.report.volumes.append(VolumeCheck(v, health, checked, shared,
                                               self._last_fix(v)))

    def _header(self, pool: Pool, v: Volume) -> None:
        info = v.info
        if v.error:
            self._find(pool, v.name, Severity.BROKEN, "unreadable", v.error)
            return
        if info.truncated or info.invalid:
            self._find(pool, v.name, Severity.BROKEN, "header-invalid",
                       "; ".join(info.problems) or "the image header is unreadable")
            return
        if info.corrupt:
            finding = self._find(pool, v.name, Severity.BROKEN, "corrupt-bit",
                                 "qcow2 corrupt bit is set: QEMU refuses to write to it")
            self._mend_corruption(finding, pool, v)
        if info.unknown_incompatible:
            self._find(pool, v.name, Severity.BROKEN, "unknown-features",
                       f"unknown qcow2 incompatible feature bits "
                       f"{info.unknown_incompatible:#x}: QEMU cannot open it")
        if info.data_file:
            self._find(pool, v.name, Severity.BROKEN, "external-data-file",
                       f"external data file {info.data_file!r}: referenced, never opened")
        if info.dirty and not info.corrupt:
            finding = self._find(pool, v.name, Severity.DEGRADED, "dirty-bit",
                                 "qcow2 dirty bit is set: refcounts need a check")
            self._fix(finding, FixType.MEND, "clear the dirty bit: a check rebuilds the "
                      "refcounts", 0, Risk.LOW,
                      (qemuimg.check(v.path, v.format, repair="leaks"),),
                      {"volume": v.name, "format": str(v.format), "repair": "leaks"})
        if v.format == ImageFormat.QCOW2 and info.version == 2:
            finding = self._find(pool, v.name, Severity.DEGRADED, "compat-0.10",
                                 "qcow2 compat 0.10 (v2): no zero clusters or lazy "
                                 "refcounts")
            self._fix(finding, FixType.OPTIMIZE, "amend the image to compat 1.1", 0,
                      Risk.LOW, (qemuimg.amend(v.path, v.format, {"compat": "1.1"}),),
                      {"volume": v.name, "format": str(v.format),
                       "options": {"compat": "1.1"}})

    def _chain(self, pool: Pool, v: Volume, driver: Driver) -> None:
        chain, limit = v.chain, self.inventory.max_chain_depth
        if chain.problem == LinkProblem.UNDECLARED_FORMAT:
            self._find(pool, v.name, Severity.DEGRADED, "backing-format-undeclared",
                       f"backing file {chain.problem_path} has no declared format: not "
                       "followed")
        elif chain.problem is not None:
            code, text = _CHAIN_CODES[chain.problem]
            finding = self._find(pool, v.name, Severity.BROKEN, code, text.format(
                path=chain.problem_path or "?", detail=chain.problem_detail))
            if chain.problem == LinkProblem.MISSING:
                self._relink(finding, pool, v)
        if chain.depth > limit:
            finding = self._find(pool, v.name, Severity.DEGRADED, "chain-too-deep",
                                 f"chain of {chain.depth} images is deeper than {limit}")
            if chain.problem is None and not v.in_use:
                self._flatten(finding, pool, v, driver)

    def _qemu_check(self, pool: Pool, v: Volume,
                    driver: Driver) -> tuple[qemuimg.CheckResult | None, bool]:
        if qemuimg.qemu_format(v.format) == "raw" or v.error or v.info.invalid \
                or v.info.truncated:
            return None, False
        shared = v.in_use
        try:
            result = driver.check_volume(pool, v.name, force_share=shared)
        except NotSupported:
            return None, False
        except StorageError as err:  # refused to open (encrypted, data file...)
            self.report.errors.append(str(err))
            return None, False
        if result.status == "corrupt":
            finding = self._find(
                pool, v.name, Severity.BROKEN, "corruptions",
                f"qemu-img check found {result.corruptions} corruption(s)"
                + (f" and {result.leaks} leaked cluster(s)" if result.leaks else ""),
                shared)
            if not v.info.corrupt:  # the corrupt bit's finding proposed it already
                self._mend_corruption(finding, pool, v)
        elif result.status == "leaks":
            cluster = v.info.cluster_size or 65536
            finding = self._find(pool, v.name, Severity.DEGRADED, "leaked-clusters",
                                 f"{result.leaks} leaked cluster(s): "
                                 f"{result.leaks * cluster} bytes wasted", shared)
            if not v.info.dirty:  # the dirty bit's repair is the same command
                self._fix(finding, FixType.CLEAN, "repair leaked clusters",
                          -result.leaks * cluster, Risk.LOW,
                          (qemuimg.check(v.path, v.format, repair="leaks"),),
                          {"volume": v.name, "format": str(v.format), "repair": "leaks"})
        elif result.status in ("error", "unknown"):
            self._find(pool, v.name, Severity.DEGRADED, "check-failed",
                       f"qemu-img check could not finish (exit {result.returncode}): "
                       f"{result.message or 'no message'}", shared)
        elif result.check_errors:
            self._find(pool, v.name, Severity.DEGRADED, "check-failed",
                       f"qemu-img check met {result.check_errors} error(s)", shared)
        return result, shared

    def _zeroes(self, pool: Pool, v: Volume, driver: Driver) -> None:
        if v.format != ImageFormat.RAW or v.error or v.allocation < MIN_ZERO_BYTES:
            return
        if self._strategy(pool).performance:
            return  # allocated zeroes are what the performance strategy asks for
        try:
            count = driver.count_zeroes(v, self.zero_budget)
        except NotSupported:
            return
        except StorageError as err:
            self.report.errors.append(str(err))
            return
        zero = count.estimated_zero
        if count.fraction <= MOSTLY_ZERO or zero < MIN_ZERO_BYTES:
            return
        sampled = "" if count.read >= count.allocated else (
            f", estimated from {count.read} bytes read")
        finding = self._find(pool, v.name, Severity.DEGRADED, "mostly-zero",
                             f"{count.fraction:.0%} of its {count.allocated} allocated "
                             f"bytes hold only zeroes ({zero} bytes{sampled})",
                             v.in_use)
        if not v.in_use:
            self._fix(finding, FixType.CLEAN, "punch holes where it holds only zeroes",
                      -zero, Risk.LOW, (("fallocate", "--dig-holes", "--", v.path),),
                      {"volume": v.name, "format": str(v.format)})

    def _snapshot(self, pool: Pool, v: Volume) -> None:
        if not v.readonly or v.error:
            return
        if v.path in self._chains_of(v.host).named:
            return
        finding = self._find(pool, v.name, Severity.INFO, "unreferenced-snapshot",
                             "snapshot nothing is based on any more")
        self._fix(finding, FixType.CLEAN, "drop the snapshot (once marked for removal)",
                  -v.allocation, Risk.MEDIUM, (("rm", "--", v.path),),
                  {"volume": v.name, "drop": True, "requires_mark": True})

    def _temporaries(self, scan: PoolScan, driver: Driver) -> None:
        pool = scan.pool
        if not scan.temporaries:
            return
        try:
            files = driver.temporary_files(pool, scan.temporaries)
        except NotSupported:
            return
        except StorageError as err:
            self.report.errors.append(str(err))
            return
        for temp in files:
            job = self._job_of(pool, temp.name)
            if job is not None and _running(job):
                self._find(pool, temp.name, Severity.INFO, "temporary-in-progress",
                           f"output of {job.kind} job {job.id}, {job.state}: left alone")
                continue
            if job is None and time.time() - temp.mtime < ORPHAN_AGE:
                self._find(pool, temp.name, Severity.INFO, "temporary-unclaimed",
                           "a job's temporary file no journal here claims, changed "
                           "recently: left alone")
                continue
            self._leftover(pool, temp, job)

    def _leftover(self, pool: Pool, temp: TemporaryFile, job: JobRecord | None) -> None:
        whose = (f"{job.kind} job {job.id} ({job.state})" if job is not None
                 else "a job no journal here knows")
        finding = self._find(pool, temp.name, Severity.DEGRADED, "leftover-temporary",
                             f"leftover of {whose}: {temp.allocation} bytes")
        self._fix(finding, FixType.CLEAN, "remove the leftover temporary file",
                  -temp.allocation, Risk.NONE,
                  (("rm", "-f", "--", os.path.join(pool.path, temp.name)),),
                  {"path": temp.name, "job": job.id if job is not None else None})

    def _commit(self, pool: Pool, v: Volume) -> None:
        """The one volume based on a writable base, with nothing based on it and no
        domain using either: it can be committed into the base, leaving one image."""
        if v.error or v.format != ImageFormat.QCOW2 or v.chain.problem is not None \
                or v.chain.depth < 2 or v.in_use or v.used_by:
            return
        base_path = os.path.realpath(v.chain.links[1].path)
        chains = self._chains_of(v.host)
        bases = chains.at.get(base_path, [])
        if len(bases) != 1 or bases[0].pool != v.pool:
            return  # not a volume of this pool: the fix works in one pool
        base = bases[0]
        if base.readonly or base.in_use or base.used_by or base.error \
                or qemuimg.qemu_format(base.format) not in COMMIT_FORMATS \
                or base.capacity > v.capacity:
            return
        mine = os.path.realpath(v.path)
        if mine in chains.below:
            return  # something is based on it: the top must go or stay empty
        if chains.on.get(base_path, set()) - {mine}:
            return  # another volume is based on the base: a commit changes it
        finding = self._find(pool, v.name, Severity.INFO, "commit-into-base",
                             f"the only volume based on {base.name} (writable, used by "
                             "nothing else): the two can be one image")
        drop = v.readonly  # a snapshot's data goes into the base; a disk stays, emptied
        temp = os.path.join(pool.path, _job_temp(v.name))
        last = (("rm", "--", v.path),) if drop else (
            tuple(qemuimg.overlay(temp, v.capacity, backing_reference(base, pool.path),
                                  base.format)), ("mv", "-T", "--", temp, v.path))
        # The base grows by at most what the top holds, which the top then gives back.
        self._fix(finding, FixType.MERGE, f"commit it into {base.name}"
                  + (" and drop it" if drop else ", then empty it"), 0, Risk.MEDIUM,
                  (qemuimg.commit(v.path, v.format, keep=True),
                   qemuimg.compare(v.path, v.format, base.path, base.format), *last),
                  {"volume": v.name, "format": str(v.format), "base": base.name,
                   "base_format": qemuimg.qemu_format(base.format), "drop": drop})

    def _layout(self, pool: Pool, v: Volume, driver: Driver) -> None:
        """Under the performance strategy: a standalone volume not in the preferred
        format, or not preallocated, is proposed a verified preallocated convert."""
        strategy = self._strategy(pool)
        if not strategy.performance or v.error or v.readonly or v.chain.depth > 1 \
                or v.info.invalid or v.info.truncated or v.info.encrypted or v.info.data_file \
                or v.info.corrupt or v.info.dirty \
                or qemuimg.qemu_format(v.format) not in COMMIT_FORMATS:
            return  # a damaged image is mended first, never copied as it is
        fmt = qemuimg.qemu_format(v.format)
        wanted = strategy.preferred_format or fmt
        preallocated = v.allocation >= v.capacity * PREALLOCATED
        if wanted == fmt and preallocated:
            return
        if os.path.realpath(v.path) in self._chains_of(v.host).below:
            return  # what is based on it names its format: not rewritten under them
        why = [f"{fmt}, {wanted} preferred"] if wanted != fmt else []
        if not preallocated:
            why.append(f"not preallocated ({v.allocation} of {v.capacity} bytes allocated)")
        finding = self._find(pool, v.name, Severity.DEGRADED, "performance-layout",
                             "; ".join(why) + " under the performance strategy",
                             v.in_use)
        if v.in_use or (wanted != fmt and v.used_by):
            return  # the fix refuses: a running QEMU, or domains that read it as fmt
        try:
            need = driver.measure_copy(pool, v.name, ImageFormat(wanted), full=True)
        except StorageError:
            need = v.capacity + (v.capacity >> 7)  # cannot measure: the data, with tables
        temp = os.path.join(pool.path, _job_temp(v.name))
        self._fix(finding, FixType.OPTIMIZE, f"convert it to a preallocated {wanted} image",
                  need - v.allocation, Risk.MEDIUM,
                  (qemuimg.convert(v.path, v.format, temp, wanted, preallocation="falloc",
                                   out_of_order=True),
                   qemuimg.compare(v.path, v.format, temp, wanted),
                   ("mv", "-T", "--", temp, v.path)),
                  {"volume": v.name, "format": fmt, "output_format": wanted,
                   "preallocation": "falloc"})

    # -- fixes that need more than one fact -----------------------------------------

    def _mend_corruption(self, finding: Finding, pool: Pool, v: Volume) -> None:
        backup = f"{v.name}.before-repair"
        backup_path = os.path.join(pool.path, backup)
        self._fix(finding, FixType.MEND, "repair the corruption after a backup copy",
                  v.allocation, Risk.HIGH,
                  (("cp", "--sparse=always", "--reflink=auto", "--", v.path, backup_path),
                   qemuimg.check(v.path, v.format, repair="all")),
                  {"volume": v.name, "format": str(v.format), "repair": "all",
                   "backup": backup}, needs_confirmation=True)

    def _flatten(self, finding: Finding, pool: Pool, v: Volume, driver: Driver) -> None:
        try:
            need = driver.measure_copy(pool, v.name, ImageFormat.QCOW2)
        except StorageError:
            need = v.capacity  # cannot measure: at most the whole disk
        temp = _job_temp(v.name)
        temp_path = os.path.join(pool.path, temp)
        self._fix(finding, FixType.OPTIMIZE,
                  f"flatten the chain of {v.chain_depth} into one image",
                  need - v.allocation, Risk.MEDIUM,
                  (qemuimg.convert(v.path, v.format, temp_path, ImageFormat.QCOW2,
                                   out_of_order=True),
                   ("mv", "-T", "--", temp_path, v.path)),
                  {"volume": v.name, "format": str(v.format), "output_format": "qcow2",
                   "temp": temp})

    def _relink(self, finding: Finding, pool: Pool, v: Volume) -> None:
        """The missing backing found elsewhere on the host: a volume of the same name,
        declared format and size (the overlay's); several must be identical
        (``qemu-img compare``) or none is proposed."""
        gone = v.chain.problem_path or v.backing or ""
        fmt = v.backing_format or v.info.backing_format
        found = [c for c in self._volumes_of(v.host)
                 if c.name == os.path.basename(gone) and c.path != gone
                 and c.path != v.path and not c.error and c.chain.problem is None
                 and (not fmt or qemuimg.qemu_format(c.format) == qemuimg.qemu_format(fmt))
                 and c.capacity == v.capacity]
        if not found or not fmt:
            return
        first = found[0]
        for other in found[1:]:
            try:
                same = self.inventory.driver(self._pool_of(other)).same_content(
                    first, other.path, other.format)
            except StorageError:
                same = False
            if not same:
                self.report.errors.append(
                    f"{v.host}:{v.pool}/{v.name}: several different candidates for its "
                    f"backing {os.path.basename(gone)}: not relinked")
                return
        ref = backing_reference(first, os.path.dirname(v.path))
        self._fix(finding, FixType.MEND, f"relink to {first.path} (same name, format and "
                  "size" + (", identical copies" if len(found) > 1 else "") + ")", 0,
                  Risk.LOW,
                  (qemuimg.rebase(v.path, v.format, ref, first.format, unsafe=True),),
                  {"volume": v.name, "format": str(v.format), "backing": ref,
                   "backing_format": qemuimg.qemu_format(first.format),
                   "backing_pool": first.pool})

    # -- helpers ------------------------------------------------------------------

    def _files(self, scan: PoolScan) -> tuple[PoolScan, Driver]:
        """A libvirt dir/fs pool of this machine is read through its directory (the
        header, ``qemu-img check``, zeroes, temporaries), with libvirt's word on which
        domains use each volume; any other pool, through its own driver."""
        pool = scan.pool
        if pool.kind != "libvirt":
            return scan, self.inventory.driver(pool)
        try:
            files = pool_files(self.inventory, pool)
            found = files.driver.scan_pool(files.pool)
        except StorageError:  # block devices, another machine: libvirt's listing only
            return scan, self.inventory.driver(pool)
        listed = {os.path.realpath(v.path): v for v in scan.volumes}
        volumes = []
        for v in found.volumes:
            known = listed.get(os.path.realpath(v.path))
            if known is not None:
                v = replace(v, used_by=known.used_by, used_by_running=known.used_by_running,
                            in_use=v.in_use or known.in_use)
            volumes.append(v)
        self._libvirt.add((pool.host, pool.name))
        return replace(found, pool=replace(files.pool, capacity=pool.capacity),
                       volumes=tuple(volumes)), files.driver

    def _strategy(self, pool: Pool) -> Strategy:
        return self.inventory.config.pool_strategy(pool.host, pool.name)

    def _volumes_of(self, host: str) -> list[Volume]:
        """Every volume of the host's pools: the ones checked, and the others scanned
        once (what is based on a snapshot may live in another pool)."""
        if host not in self._host_volumes:
            volumes: list[Volume] = []
            for pool in self.inventory.host_pools(host):
                key = (host, pool.name)
                scan = self._scanned.get(key) or self._others.get(key)
                if scan is None:
                    try:
                        scan, _ = self.inventory.scan_pool(pool)
                    except StorageError:
                        continue
                    self._others[key] = scan
                volumes.extend(scan.volumes)
            self._host_volumes[host] = volumes
        return self._host_volumes[host]

    def _chains_of(self, host: str) -> _Chains:
        if host not in self._host_chains:
            self._host_chains[host] = _Chains.of(self._volumes_of(host))
        return self._host_chains[host]

    def _pool_of(self, v: Volume) -> Pool:
        scan = self._scanned.get((v.host, v.pool)) or self._others.get((v.host, v.pool))
        if scan is not None:
            return scan.pool
        return self.inventory.pool(v.host, v.pool)

    def _job_of(self, pool: Pool, name: str) -> JobRecord | None:
        job_id = job_of_temporary(name)
        if self.journal is None or job_id is None:
            return None
        try:
            job = self.journal.get(job_id)
        except KeyError:
            return None
        temps = {job.resume.get("temp"), *(job.resume.get("temp_paths") or ())}
        mine = job.host == pool.host or job.params.get("dest_host") == pool.host
        return job if mine or name in temps else None

    def _last_fix(self, v: Volume) -> dict[str, Any] | None:
        if self.journal is None:
            return None
        for job in self.journal.jobs_on_volume(v.host, v.pool, v.name):
            if job.kind == FIX_KIND:
                return {"job": job.id, "state": str(job.state), "host": job.host,
                        "stage": job.stage, "stages": job.stages,
                        "stage_label": job.stage_label, "percent": job.percent,
                        "error": job.error, "code": job.params.get("code")}
        return None

    def _find(self, pool: Pool, volume: str | None, severity: Severity, code: str,
              reason: str, possibly_inconsistent: bool = False) -> Finding:
        if possibly_inconsistent:
            reason += " (checked while in use: possibly inconsistent)"
        finding = Finding(pool.host, pool.name, volume, severity, code, reason,
                          possibly_inconsistent)
        self.report.findings.append(finding)
        return finding

    def _fix(self, finding: Finding, kind: FixType, reason: str, space: int, risk: Risk,
             commands: Sequence[Sequence[str]], params: dict[str, Any], *,
             needs_confirmation: bool = False) -> None:
        fix = Fix(kind, finding.host, finding.pool, finding.volume, finding.code,
                  f"{reason}: {finding.reason}", space, risk,
                  tuple(tuple(c) for c in commands), params,
                  needs_confirmation=needs_confirmation or risk == Risk.HIGH)
        self._severity[id(fix)] = finding.severity
        self.report.fixes.append(fix)

    def _rank(self) -> None:
        def finding_key(f: Finding) -> tuple[int, str, str, str, str]:
            return (_SEVERITY_RANK[f.severity], f.code, f.host, f.pool, f.volume or "")

        def fix_key(f: Fix) -> tuple[int, int, str, str, str, str]:
            return (_SEVERITY_RANK[self._severity[id(f)]], _TYPE_RANK[f.type], f.code,
                    f.host, f.pool, f.volume or "")

        self.report.findings.sort(key=finding_key)
        self.report.fixes.sort(key=fix_key)


@dataclass(frozen=True)
class _Chains:
    """Who is based on what among a host's volumes, read in one pass: the checks ask it
    of every volume, and a pass per volume is quadratic (and a ``realpath`` per link)."""

    named: frozenset[str]  # every link below a volume, as named, and every ``backing``
    below: frozenset[str]  # every link below a volume, resolved
    on: dict[str, set[str]]  # a resolved first backing -> the resolved volumes on it
    at: dict[str, list[Volume]]  # a resolved path -> the volumes there

    @classmethod
    def of(cls, volumes: Sequence[Volume]) -> _Chains:
        named: set[str] = set()
        below: set[str] = set()
        on: dict[str, set[str]] = {}
        at: dict[str, list[Volume]] = {}
        for v in volumes:
            here = os.path.realpath(v.path)
            at.setdefault(here, []).append(v)
            links = [link.path for link in v.chain.links[1:]]
            named.update(links)
            if v.backing is not None:
                named.add(v.backing)
            resolved = [os.path.realpath(path) for path in links]
            below.update(resolved)
            if resolved:
                on.setdefault(resolved[0], set()).add(here)
        return cls(frozenset(named), frozenset(below), on, at)


def _job_temp(name: str) -> str:
    """The temporary name a fix's commands write ``name``'s new image under."""
    return f"{TEMP_PREFIX}{JOB_PLACEHOLDER}-{name}"


def _running(job: JobRecord) -> bool:
    """A job still at work: queued or running in a process still alive (a pending job
    with no owner is from an older journal and is taken as waiting)."""
    from console.jobs.journal import ACTIVE, JobState, owner_alive

    if job.state not in ACTIVE:
        return False
    return (job.state == JobState.PENDING and job.owner is None) or owner_alive(job.owner)


def _merge(health: Health, findings: Sequence[Finding], shared: bool) -> Health:
    """The probe's assessment, made worse by what the deeper sources found."""
    extra = [f.reason for f in findings if f.severity != Severity.INFO
             and f.code in _DEEP_CODES]
    worst = health.state
    if any(f.severity == Severity.BROKEN for f in findings):
        worst = HealthState.BROKEN
    elif worst == HealthState.OPTIMIZED and any(f.severity == Severity.DEGRADED
                                                for f in findings):
        worst = HealthState.DEGRADED
    reasons = [] if health.state == HealthState.OPTIMIZED and worst != health.state \
        else list(health.reasons)
    reasons += [r for r in extra if r not in reasons]
    if worst != health.state and not extra:
        reasons += [f.reason for f in findings if f.severity != Severity.INFO]
    if shared and not any("possibly inconsistent" in r for r in reasons):
        reasons.append("checked while in use: possibly inconsistent")
    return Health(worst, tuple(reasons))


_DEEP_CODES = frozenset({"corruptions", "leaked-clusters", "check-failed", "mostly-zero"})
