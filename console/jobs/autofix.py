"""Auto-fix: after a job is done, the fix that makes what it wrote better, queued as a
job of its own (the health issue's ``auto_fix``, on by default).

The runner calls ``follow_up`` once a job is done. Each volume the job left written
(``Operation.results``) is checked alone (``check_pools`` with ``only``: ``qemu-img
check`` and the zero count included, the rest of the pool not), and for each volume the
first fix of the check's ranked list that is *automatic* is queued:

- it answers a broken or degraded finding (never an information);
- its risk is none or low, and it needs neither a confirmation nor a mark (a HIGH-risk
  repair, a flatten or a snapshot drop is a person's decision);
- the fix job knows its code;
- the job did not ask for what was found (a preallocated volume is zeroes on purpose).

Nothing is queued for a volume with a broken finding no automatic fix answers (a person
looks first), nor while another job is at work on it (its own follow-up checks it). The
fix job says who started it: its journal row's ``who`` ends with ``started by job N``, as
the audit's entries of its commands do, and its ``resume["started_by"]`` is N. The job's
``resume["auto_fix"]`` says what was checked, queued and left, and why. A fix job has no
results, so it never starts another: once, no loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.contract import StorageError
from backends.model import Volume
from console.audit import acting_as
from console.checks import FIX_KIND, check_pools
from console.fixes import Finding, Fix, Risk, Severity
from console.jobs.fixing import STEPS, RunFix, job_params
from console.jobs.journal import ACTIVE, JobRecord
from console.jobs.operations import Operation

if TYPE_CHECKING:
    from console.jobs.runner import Runner

AUTOMATIC_RISKS = frozenset({Risk.NONE, Risk.LOW})
# What a job that preallocates makes on purpose: not a fault to undo behind its back.
PREALLOCATED = frozenset({"mostly-zero"})


@dataclass
class FollowUp:
    """What ``follow_up`` did after one job: the volumes checked, the fix jobs queued,
    the fixes left to a person (and why), and what could not be checked."""

    checked: list[str] = field(default_factory=list)
    queued: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"checked": list(self.checked), "queued": list(self.queued),
                "left": list(self.left), "errors": list(self.errors)}


def started_by_note(job_id: int) -> str:
    """What a job queued by job ``job_id`` adds to its ``who``."""
    return f"started by job {job_id}"


def not_automatic(fix: Fix, severity: Severity | None) -> str | None:
    """Why ``fix`` is not run without asking (None: it is)."""
    if severity not in (Severity.BROKEN, Severity.DEGRADED):
        return "information only"
    if fix.risk not in AUTOMATIC_RISKS:
        return f"{fix.risk} risk: run it from the fixes screen (F) or 'fix'"
    if fix.needs_confirmation:
        return "needs a confirmation"
    if fix.params.get("requires_mark"):
        return "needs a mark"
    if job_params(fix)[0] not in STEPS:
        return "no fix job runs it yet"
    return None


def intended(op: Operation) -> frozenset[str]:
    """Finding codes ``op`` made on purpose: a preallocated create or copy."""
    if getattr(op, "preallocation", None) or getattr(op, "strategy", None) == "performance":
        return PREALLOCATED
    return frozenset()


def follow_up(runner: Runner, job: JobRecord, op: Operation) -> FollowUp:
    """Check what the done ``job`` (running ``op``) wrote; queue the automatic fixes."""
    done = FollowUp()
    if op.kind == FIX_KIND or runner.inventory.read_only:
        return done
    pools: dict[tuple[str, str], list[str]] = {}
    for host, pool_name, name in op.results():
        pools.setdefault((host, pool_name), []).append(name)
    for (host, pool_name), names in pools.items():
        try:
            pool = runner.inventory.pool(host, pool_name)
            # The check's commands (qemu-img check) are the follow-up's, in the audit.
            with acting_as(f"{job.who}, checking after job {job.id}"):
                report = check_pools(runner.inventory, [pool], journal=runner.journal,
                                     only=_named(names))
        except (StorageError, KeyError) as err:
            done.errors.append(f"{host}:{pool_name}: not checked after job {job.id}: {err}")
            continue
        done.errors += report.errors
        seen = {v.volume.name for v in report.volumes}
        for name in names:
            if name not in seen:
                done.errors.append(f"{host}:{pool_name}/{name}: not found after job {job.id}")
                continue
            done.checked.append(name)
            findings = [f for f in report.findings if f.volume == name]
            fixes = [f for f in report.fixes if f.volume == name]
            _queue_one(runner, job, op, host, pool_name, name, findings, fixes, done)
    return done


def _named(names: Sequence[str]) -> Callable[[Volume], bool]:
    wanted = set(names)
    return lambda v: v.name in wanted


def _queue_one(runner: Runner, job: JobRecord, op: Operation, host: str, pool: str,
               name: str, findings: Sequence[Finding], fixes: Sequence[Fix],
               done: FollowUp) -> None:
    """Queue the first automatic fix of ``name`` (``fixes`` are ranked), or say why not."""
    severity = {f.code: f.severity for f in findings}
    kept = intended(op)
    why: dict[int, str] = {}
    for i, fix in enumerate(fixes):
        reason = "the job asked for it" if fix.code in kept else not_automatic(
            fix, severity.get(fix.code))
        if reason is not None:
            why[i] = reason
    answered = {fixes[i].code for i in range(len(fixes)) if i not in why}
    unanswered = [f for f in findings if f.severity == Severity.BROKEN
                  and f.code not in answered]
    busy = [j for j in runner.journal.jobs_on_volume(host, pool, name)
            if j.state in ACTIVE]
    chosen: int | None = None
    if unanswered:
        blocked = f"broken ({unanswered[0].reason}): a person looks first"
    elif busy:
        blocked = f"job {busy[0].id} ({busy[0].kind}) is at work on it"
    else:
        blocked = ""
        chosen = next((i for i in range(len(fixes)) if i not in why), None)
    for i, fix in enumerate(fixes):
        if i == chosen:
            try:
                queued = runner.submit(RunFix.from_fix(fix), started_by=job.id)
            except StorageError as err:
                done.errors.append(f"{host}:{pool}/{name}: {fix.code} not queued: {err}")
                continue
            done.queued.append({"job": queued.id, "volume": name, "code": fix.code,
                                "type": str(fix.type), "risk": str(fix.risk)})
            continue
        reason = why.get(i) or blocked or "one fix at a time: check it again after"
        done.left.append({"volume": name, "code": fix.code, "type": str(fix.type),
                          "risk": str(fix.risk), "why": reason})
