"""Running a fix: the job that carries out a ``console.fixes.Fix`` a check proposed.

``RunFix`` holds what the journal needs to run it again (the fix's type, code and
params) and dispatches by code to a step of its own. Every fix, whatever its code:
- is refused on a volume a running QEMU holds (its file lock), and in read-only mode;
- holds the lock of the volumes it touches and reserves what it may write;
- journals its temporary files before it creates them (a resume rolls back, then runs
  again from the start) and removes them when cancelled (the runner kills qemu-img);
- re-checks the volume afterwards (``qemu-img check`` exit 0; raw images have no check)
  and records the result in the journal (``resume["after"]``).

Everything runs through the files of the pool (``console.pool_files``) and the host's
transport, so a fix on an SSH host runs there, and one on a libvirt dir/fs pool of this
machine works on its directory (libvirt refreshes after). Volume groups, block-device
pools and remote libvirt pools are refused, saying why.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat
from collections.abc import Callable
from typing import Any, ClassVar

from backends import qemuimg
from backends.contract import (
    Cancelled,
    CommandFailed,
    CommandResult,
    InvalidRequest,
    NotSupported,
    StorageError,
    Transport,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.dir.commands import last_line
from backends.drivers.dir.names import MAX_NAME_BYTES, backing_reference
from backends.drivers.dir.progress import CopyProgress
from backends.model import ImageFormat, LinkProblem, Pool, Progress, Volume
from backends.transport.scanner import TEMP_PREFIX, job_of_temporary
from console.fixes import Fix
from console.inventory import Inventory
from console.jobs.journal import ACTIVE
from console.jobs.locks import host_transport
from console.jobs.operations import OPERATIONS, Context, Operation, temp_name
from console.pool_files import PoolFiles, pool_files, refresh_libvirt

# The codes a check proposes and this job runs, with the stages of each (between the
# first, "check", and the last, "re-check").
STEPS: dict[str, tuple[str, ...]] = {
    "leftover-temporary": ("remove",),
    "leaked-clusters": ("repair",),
    "dirty-bit": ("repair",),
    "zeroed-ranges": ("punch holes", "verify"),
    "chain-too-deep": ("flatten", "verify", "publish"),
    "compat-0.10": ("amend",),
    "snapshot-unreferenced": ("delete",),
    "merge-snapshot": ("rebase",),
    "commit-into-base": ("commit", "verify", "drop"),  # "drop": "empty" when kept
    "performance-layout": ("convert", "verify", "publish"),
    "corruption": ("backup", "repair"),
    "backing-moved": ("verify", "relink"),
}
# Codes after which the volume is gone: the re-check looks that it is.
REMOVING = ("leftover-temporary", "snapshot-unreferenced")

# A check's finding codes whose fix step has another name here.
CHECK_CODES = {"corruptions": "corruption", "corrupt-bit": "corruption",
               "backing-missing": "backing-moved", "mostly-zero": "zeroed-ranges",
               "unreferenced-snapshot": "snapshot-unreferenced"}


def job_params(fix: Fix) -> tuple[str, dict[str, Any]]:
    """The fix job's code and params for a check's ``fix``: the volume's name as
    ``name``, and each code's own fields (see the table in docs/decisions.md)."""
    code = CHECK_CODES.get(fix.code, fix.code)
    given = dict(fix.params)
    name = str(given.get("name") or given.get("volume") or fix.volume or "")
    if code == "leftover-temporary":
        name = os.path.basename(str(given.get("path") or name))
    params: dict[str, Any] = {"name": name}
    if "format" in given:
        params["format"] = given["format"]
    if code == "corruption":
        params["backup"] = True
    elif code == "backing-moved":
        params["new_backing"] = given.get("new_backing") or given.get("backing")
        params["backing_format"] = given.get("backing_format")
    elif code == "merge-snapshot":
        params["base"] = given.get("base")
    elif code == "commit-into-base":
        params["base"] = given.get("base")
        params["drop"] = bool(given.get("drop", False))
    elif code == "performance-layout":
        params["output_format"] = given.get("output_format")
        params["preallocation"] = given.get("preallocation") or PREALLOCATION
    return code, params
BACKUP_MARK = ".before-repair-"
PREALLOCATION = "falloc"  # as a performance copy: space reserved, zeroes not written
CHECKED = ("clean", "unsupported")  # a raw image has no check: nothing more to ask


def backup_name(volume: str, when: datetime.datetime | None = None) -> str:
    """``disk.qcow2.before-repair-20240131-235959`` (UTC): the copy taken before a repair."""
    stamp = (when or datetime.datetime.now(datetime.UTC)).strftime(
        BACKUP_MARK + "%Y%m%d-%H%M%S")
    return os.fsdecode(os.fsencode(volume)[:MAX_NAME_BYTES - len(stamp)]) + stamp


@dataclasses.dataclass(frozen=True)
class RunFix(Operation):
    """Carry out one fix on ``volume`` (the fix's ``params["name"]``).

    ``fix_params`` is the ``Fix.params`` of the check, plus what the user added:
    ``confirmed`` (a HIGH-risk repair) and ``marked`` (a snapshot to drop).
    """

    kind: ClassVar[str] = "fix"

    fix_type: str = ""
    code: str = ""
    fix_params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in STEPS:
            raise InvalidRequest(f"no fix is known for {self.code!r}", host=self.host,
                                 pool=self.pool, volume=self.volume,
                                 hint="check again: the fix may be for a newer console")
        if self.fix_params.get("name") != self.volume:
            raise InvalidRequest(f"the fix names {self.fix_params.get('name')!r}, the job "
                                 f"{self.volume!r}", host=self.host, pool=self.pool,
                                 volume=self.volume)

    @classmethod
    def from_fix(cls, fix: Fix, *, confirmed: bool = False, marked: bool = False) -> RunFix:
        """The job for ``fix`` (a check's proposal, ``console.checks``); ``confirmed``
        and ``marked`` are the user's say."""
        code, params = job_params(fix)
        if confirmed:
            params["confirmed"] = True
        if marked:
            params["marked"] = True
        return cls(fix.host, fix.pool, str(params.get("name") or fix.volume or ""),
                   fix_type=str(fix.type), code=code, fix_params=params)

    @property
    def stages(self) -> tuple[str, ...]:
        steps = STEPS.get(self.code, ())
        if self.code == "commit-into-base" and not self.fix_params.get("drop"):
            steps = (*steps[:-1], "empty")
        return ("check", *steps, "re-check")

    def describe(self) -> str:
        return f"fix {self.volume}: {self.code} ({self.fix_type})"

    def locked_volumes(self) -> list[tuple[str, str]]:
        extra = [self.fix_params["base"]] if self.code in ("merge-snapshot",
                                                           "commit-into-base") else []
        return [(self.pool, name) for name in (self.volume, *extra)
                if isinstance(name, str)]

    def space(self, inventory: Inventory) -> tuple[str, int]:
        """What the fix may write: a flattened copy (``qemu-img measure``), a backup
        (the file's allocation), the data a rebase copies up (the intermediate's
        allocation), room for a repair's refcount blocks; nothing for removals. A commit
        writes at most what the top holds into its base; a performance layout, the
        preallocated copy (``qemu-img measure``)."""
        files = self._files(inventory)
        pool, driver = files.pool, files.driver
        transport = host_transport(driver, self.host)
        if self.code == "chain-too-deep":
            return (self.pool, driver.measure_copy(pool, self.volume,
                                                   ImageFormat(self._format())))
        if self.code == "performance-layout":
            return (self.pool, driver.measure_copy(
                pool, self.volume, ImageFormat(self._output_format()), full=True))
        if self.code in ("commit-into-base", "corruption"):
            return (self.pool, _allocated(transport, _path(pool, self.volume)) + (1 << 20))
        if self.code == "merge-snapshot":
            base = _path(pool, str(self.fix_params.get("base", "")))
            return (self.pool, _allocated(transport, base) + (1 << 20))
        if self.code in ("leaked-clusters", "dirty-bit", "compat-0.10"):
            return (self.pool, 1 << 20)
        return (self.pool, 0)

    def commands(self, inventory: Inventory) -> list[list[str]]:
        files = self._files(inventory)
        pool = files.pool
        path = _path(pool, self.volume)
        p = self.fix_params
        fmt = str(p.get("format") or "qcow2")
        code = self.code
        if code == "leftover-temporary":
            return [["unlink", "--", path]]
        if code in ("leaked-clusters", "dirty-bit"):
            return [qemuimg.check(path, "qcow2", repair="leaks"), qemuimg.check(path, "qcow2")]
        if code == "zeroed-ranges":
            return [dig_holes(path), qemuimg.check(path, "raw")]
        if code == "chain-too-deep":
            temp = _path(pool, temp_name(0, self.volume))
            return [qemuimg.convert(path, fmt, temp, fmt),
                    qemuimg.compare(path, fmt, temp, fmt), ["mv", "-T", "--", temp, path],
                    qemuimg.check(path, fmt)]
        if code == "compat-0.10":
            return [qemuimg.amend(path, "qcow2", {"compat": "1.1"}), qemuimg.check(path, "qcow2")]
        if code == "snapshot-unreferenced":
            return [["unlink", "--", path]]
        if code == "merge-snapshot":
            top = inventory.probe_volume(self.host, self.pool, self.volume)
            below = _below_base(top, str(p.get("base", "")))
            return [qemuimg.rebase(path, "qcow2", below[0] if below else None,
                                   below[1] if below else None, unsafe=False, progress=True),
                    qemuimg.check(path, "qcow2")]
        if code == "commit-into-base":
            top = files.driver.probe_volume(pool, self.volume)
            base = files.driver.probe_volume(pool, str(p.get("base", "")))
            temp = _path(pool, temp_name(0, self.volume))
            last = [["unlink", "--", path]] if p.get("drop") else [
                qemuimg.overlay(temp, top.capacity, backing_reference(base, pool.path),
                                base.format), ["mv", "-T", "--", temp, path]]
            return [qemuimg.commit(path, "qcow2", keep=True),
                    qemuimg.compare(path, "qcow2", base.path, base.format), *last,
                    qemuimg.check(base.path, base.format)]
        if code == "performance-layout":
            temp = _path(pool, temp_name(0, self.volume))
            out = self._output_format()
            return [qemuimg.convert(path, fmt, temp, out, preallocation=self._preallocation(),
                                    out_of_order=True),
                    qemuimg.compare(path, fmt, temp, out), ["mv", "-T", "--", temp, path],
                    qemuimg.check(path, out)]
        if code == "corruption":
            temp = _path(pool, temp_name(0, backup_name(self.volume)))
            return [sparse_copy(path, temp), ["ln", "--", temp, _path(pool, backup_name(
                self.volume))], qemuimg.check(path, "qcow2", repair="all"),
                qemuimg.check(path, "qcow2")]
        # backing-moved
        return [qemuimg.rebase(path, "qcow2", str(p.get("new_backing", "")),
                               str(p.get("backing_format", "")), unsafe=True),
                qemuimg.check(path, "qcow2")]

    # -- the run -------------------------------------------------------------------

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        pool = self._pool(ctx.inventory)
        try:
            files = pool_files(ctx.inventory, pool)
        except NotSupported as err:
            raise NotSupported(f"not fixed: {err.what}", host=self.host, pool=self.pool,
                               volume=self.volume, hint=err.hint) from None
        step = _Step(self, ctx, files)
        steps: dict[str, Callable[[], None]] = {
            "leftover-temporary": step.leftover_temporary,
            "leaked-clusters": step.repair_leaks,
            "dirty-bit": step.repair_leaks,
            "zeroed-ranges": step.zeroed_ranges,
            "chain-too-deep": step.flatten,
            "compat-0.10": step.amend_compat,
            "snapshot-unreferenced": step.drop_snapshot,
            "merge-snapshot": step.merge_snapshot,
            "commit-into-base": step.commit_into_base,
            "performance-layout": step.convert_layout,
            "corruption": step.repair_corruption,
            "backing-moved": step.relink,
        }
        try:
            steps[self.code]()
            ctx.stage(len(self.stages), "re-check")
            step.recheck()
        finally:
            refresh_libvirt(ctx.inventory, files)  # libvirt reads what changed under it
        ctx.inventory.refresh_quietly(pool)

    def _files(self, inventory: Inventory) -> PoolFiles:
        return pool_files(inventory, self._pool(inventory))

    def _format(self) -> str:
        return str(self.fix_params.get("format") or "qcow2")

    def _output_format(self) -> str:
        return str(self.fix_params.get("output_format") or self._format())

    def _preallocation(self) -> str:
        return str(self.fix_params.get("preallocation") or PREALLOCATION)


class _Step:
    """The steps of one run of a ``RunFix``: what each code does, then the re-check."""

    def __init__(self, op: RunFix, ctx: Context, files: PoolFiles) -> None:
        self.op, self.ctx, self.files = op, ctx, files
        self.pool, self.driver = files.pool, files.driver
        self.transport = host_transport(self.driver, op.host)
        self.path = _path(self.pool, op.volume)
        self.where = {"host": op.host, "pool": op.pool, "volume": op.volume}
        self.params = op.fix_params

    def stage(self, label: str) -> None:
        self.ctx.stage(self.op.stages.index(label) + 1, label)

    # -- the refusals every fix shares ---------------------------------------------

    def volume(self, fmt: str | None = None, name: str | None = None) -> Volume:
        """The volume (or the pool's volume ``name``), re-probed on disk; refused when a
        QEMU holds it, when it is not ``fmt`` (the fix's word, never a guess), or when
        qemu-img must not open it."""
        volume = self.driver.probe_volume(self.pool, name or self.op.volume)
        which = f"{name}: " if name else ""
        if fmt is not None and qemuimg.qemu_format(volume.format) != fmt:
            raise InvalidRequest(f"{which}the fix is for a {fmt} image, it is "
                                 f"{volume.format} on disk now", **self.where,
                                 hint="check it again")
        if self.driver.volume_in_use(volume):
            raise VolumeBusy(f"{which}in use by a running QEMU (its file lock): it is not "
                             "fixed while it runs", **self.where,
                             hint="stop the VM (or qemu-nbd) using it first")
        problem = None
        if volume.error:
            problem = volume.error
        elif volume.info.encrypted or volume.format == ImageFormat.LUKS:
            problem = "it is encrypted"
        elif volume.info.data_file:
            problem = f"its data lies in an external file ({volume.info.data_file!r})"
        elif volume.info.invalid or volume.info.truncated:
            problem = "its header is damaged (" + ("; ".join(volume.info.problems) or "?") + ")"
        elif volume.info.unknown_incompatible:
            problem = "it uses qcow2 features this console does not know"
        if problem:
            raise InvalidRequest(f"{which}cannot fix it: {problem}", **self.where)
        return volume

    def domains(self, volume: Volume) -> tuple[str, ...]:
        """The libvirt domains whose disks name ``volume`` (a libvirt pool's word; a
        directory pool knows none)."""
        if self.files.libvirt is None:
            return volume.used_by
        try:
            listed = self.ctx.inventory.driver(self.files.libvirt).probe_volume(
                self.files.libvirt, volume.name)
        except VolumeNotFound:
            return ()  # a file libvirt has not listed yet: no domain names it by volume
        return listed.used_by

    def nothing_based_on(self, volume: Volume, what: str) -> None:
        """Refuse when any volume of the host is based on ``volume`` (found on disk)."""
        based = self.ctx.inventory.dependants(self.op.host, volume.path)
        if based:
            names = ", ".join(sorted(v.name for _, v in based)[:5])
            raise VolumeBusy(f"{len(based)} volume(s) are based on {volume.name} ({names}): "
                             f"it is not {what}", **self.where,
                             hint="check again: merge or flatten those first")

    def based_on(self, top: Volume, base: Volume, base_name: str) -> None:
        """Refuse unless ``base`` is what ``top`` is based on directly."""
        if top.chain.depth < 2 or os.path.realpath(top.chain.links[1].path) != \
                os.path.realpath(base.path):
            raise InvalidRequest(f"{base_name!r} is not what it is based on (any more)",
                                 **self.where, hint="check it again")

    def others_on(self, base: Volume, top: Volume) -> list[str]:
        """The volumes of the host based directly on ``base``, ``top`` aside."""
        mine = os.path.realpath(top.path)
        return [v.name for depth, v in self.ctx.inventory.dependants(self.op.host, base.path)
                if depth == 1 and os.path.realpath(v.path) != mine]

    def usable_chain(self, volume: Volume) -> None:
        if volume.chain.problem is not None:
            raise InvalidRequest(f"its backing chain is broken ({volume.chain.problem}: "
                                 f"{volume.chain.problem_detail})", **self.where,
                                 hint="relink or restore its backing first")

    # -- commands ------------------------------------------------------------------

    def run(self, argv: list[str], what: str, *, progress_label: str | None = None,
            total: int = 0) -> CommandResult:
        """Run ``argv`` on the host; cancel kills it. ``progress_label``: feed its
        ``-p`` output to the job's progress."""
        reporter = CopyProgress(self.ctx.progress, total, progress_label or "") \
            if progress_label else None
        try:
            result = self.transport.run(argv, on_output=reporter.feed if reporter else None,
                                        should_cancel=self.ctx.should_cancel)
        except Cancelled:
            raise Cancelled(f"{what} was cancelled", **self.where) from None
        if reporter is not None and result.returncode == 0:
            reporter.finish()
        return result

    def must(self, result: CommandResult, what: str, hint: str = "") -> None:
        if result.returncode != 0:
            line = last_line(result.stderr) or f"exited with status {result.returncode}"
            if 'lock' in line and "Failed to get" in line:
                raise VolumeBusy(f"{what} refused: a running QEMU holds the image",
                                 **self.where, hint="stop the VM using it first")
            raise CommandFailed(f"{what} failed: {line}", **self.where, hint=hint)

    def check(self, fmt: str, *, repair: str | None = None,
              path: str | None = None) -> qemuimg.CheckResult:
        result = self.run(qemuimg.check(path or self.path, fmt, repair=repair),
                          "qemu-img check" + (f" -r {repair}" if repair else ""))
        found = qemuimg.parse_check(result.returncode, result.stdout)
        if found.status in ("error", "unknown"):
            line = last_line(result.stderr) or f"exited with status {result.returncode}"
            raise CommandFailed(f"qemu-img check failed: {line}", **self.where)
        return found

    def remove_temp(self, name: str) -> None:
        try:
            self.transport.remove_file(_path(self.pool, name))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StorageError(f"cannot remove {name}: {err.strerror}", **self.where) from None

    # -- the steps -----------------------------------------------------------------

    def leftover_temporary(self) -> None:
        name = self.op.volume
        if not name.startswith(TEMP_PREFIX) or "/" in name:
            raise InvalidRequest(f"{name!r} is not a job's temporary file ({TEMP_PREFIX}...)"
                                 ": it is not removed", **self.where)
        try:
            st = self.transport.lstat(self.path)
        except FileNotFoundError:
            raise VolumeNotFound("the temporary file is already gone", **self.where) from None
        if not _is_regular(st.st_mode):
            raise InvalidRequest("not a regular file: it is not removed", **self.where)
        job_id = job_of_temporary(name)
        journal = getattr(self.ctx, "journal", None)
        if job_id is not None and journal is not None:
            try:
                owner = journal.get(job_id)
            except (KeyError, LookupError, StorageError):
                owner = None
            if owner is not None and owner.state in ACTIVE and owner.id != self.ctx.job_id:
                raise VolumeBusy(f"job {owner.id} ({owner.kind} {owner.volume}) is "
                                 f"{owner.state}: this is its output in flight",
                                 **self.where, hint="wait for that job or cancel it")
        if self.transport.qemu_write_locked(self.path):
            raise VolumeBusy("a qemu-img or QEMU is writing it", **self.where,
                             hint="wait for the job writing it")
        self.stage("remove")
        self.ctx.remember(before={"bytes": st.st_blocks * 512})
        try:
            self.transport.remove_file(self.path)
        except OSError as err:
            raise StorageError(f"cannot remove it: {err.strerror}", **self.where) from None

    def repair_leaks(self) -> None:
        self.volume("qcow2")
        before = self.check("qcow2")
        self.ctx.remember(before=_check_record(before))
        self.stage("repair")
        self.check("qcow2", repair="leaks")

    def zeroed_ranges(self) -> None:
        volume = self.volume("raw")
        before, _ = self.hash(volume)
        allocated = _allocated(self.transport, self.path)
        self.ctx.remember(before={"bytes": allocated, "sha256": before})
        self.stage("punch holes")
        self.must(self.run(dig_holes(self.path), "fallocate --dig-holes"),
                  "punching holes (fallocate --dig-holes)")
        self.stage("verify")
        after, _ = self.hash(volume)
        if after != before:  # cannot happen unless something wrote it meanwhile
            raise StorageError("its content changed while holes were punched", **self.where,
                               hint="check who writes the image")
        self.ctx.remember(freed=allocated - _allocated(self.transport, self.path))

    def hash(self, volume: Volume) -> tuple[str, int]:
        def report(done: int, total: int) -> None:
            self.ctx.progress(Progress(1, 1, done, total, ""))

        try:
            return self.transport.sha256_file(volume.path, progress=report,
                                              should_cancel=self.ctx.should_cancel)
        except OSError as err:
            raise StorageError(f"cannot read it: {err.strerror}", **self.where) from None

    def flatten(self) -> None:
        fmt = self.op._format()
        volume = self.volume(fmt)
        self.usable_chain(volume)
        self.replace_by_copy(
            volume, lambda temp_path: qemuimg.convert(volume.path, fmt, temp_path, fmt),
            fmt, label="flatten", what="qemu-img convert (flattening)",
            differs="the flattened copy differs from the chain",
            differs_hint="nothing was replaced; check the chain",
            before={"depth": volume.chain.depth})

    def replace_by_copy(self, volume: Volume, argv: Callable[[str], list[str]], out: str,
                        *, label: str, what: str, differs: str, differs_hint: str,
                        before: dict[str, Any]) -> None:
        """Write ``argv(temp_path)`` (a qemu-img convert of ``volume`` as ``out``) under a
        journaled temporary name, compare it with the volume, then rename it over it; the
        partial copy is removed on any failure."""
        temp = temp_name(self.ctx.job_id, self.op.volume)
        temp_path = _path(self.pool, temp)
        self.ctx.remember(temp=temp, temp_pool=self.pool.name,
                          before=before)  # before the file exists
        self.remove_temp(temp)
        self.stage(label)
        try:
            self.must(self.run(argv(temp_path), "qemu-img convert", progress_label=label,
                               total=volume.capacity),
                      what, "the partial copy is removed")
            self.stage("verify")
            if not self.driver.same_content(volume, temp_path, out,
                                            should_cancel=self.ctx.should_cancel):
                raise StorageError(differs, **self.where, hint=differs_hint)
            self.stage("publish")
            self.transport.copy_attributes(volume.path, temp_path)
            # fsync, then renamed over the volume: it stays whole until then.
            self.transport.publish(temp_path, volume.path, replace=True)
        except BaseException:
            self.remove_temp(temp)
            raise

    def amend_compat(self) -> None:
        volume = self.volume("qcow2")
        self.ctx.remember(before={"version": volume.info.version})
        self.stage("amend")
        self.must(self.run(qemuimg.amend(self.path, "qcow2", {"compat": "1.1"}),
                           "qemu-img amend"), "qemu-img amend -o compat=1.1")

    def drop_snapshot(self) -> None:
        if self.params.get("marked") is not True:
            raise InvalidRequest("the snapshot was not marked for removal: it is kept",
                                 **self.where, hint="mark it, then run the fix")
        volume = self.volume()
        based = self.ctx.inventory.dependants(self.op.host, volume.path)
        if based:
            names = ", ".join(sorted(v.name for _, v in based)[:5])
            raise VolumeBusy(f"{len(based)} volume(s) are based on it now ({names}): it is "
                             "kept", **self.where)
        self.stage("delete")
        self.ctx.remember(before={"bytes": _allocated(self.transport, self.path)})
        self.driver.delete_volume(self.pool, self.op.volume)

    def merge_snapshot(self) -> None:
        """Drop the snapshot ``base`` out of the top's chain: a safe rebase of the top
        onto what ``base`` is based on copies into the top the clusters of ``base`` that
        differ from it (``qemu-img commit`` would write into ``base``, which other
        volumes may share). ``base`` itself is left in place, unreferenced."""
        top = self.volume("qcow2")
        self.usable_chain(top)
        base_name = str(self.params.get("base", ""))
        base = self.driver.probe_volume(self.pool, base_name)
        self.based_on(top, base, base_name)
        if self.driver.volume_in_use(base):
            raise VolumeBusy(f"{base_name} is in use by a running QEMU", **self.where)
        others = self.others_on(base, top)
        if others:
            raise VolumeBusy(f"{len(others)} other volume(s) are based on {base_name} "
                             f"({', '.join(sorted(others)[:5])}): it is not merged",
                             **self.where, hint="merge or flatten those first")
        below = _below_base(top, base_name)
        self.ctx.remember(before={"depth": top.chain.depth, "backing": top.info.backing_file})
        self.stage("rebase")
        argv = qemuimg.rebase(self.path, "qcow2", below[0] if below else None,
                              below[1] if below else None, unsafe=False, progress=True)
        self.must(self.run(argv, "qemu-img rebase", progress_label="rebase",
                           total=top.capacity), "qemu-img rebase")

    def commit_into_base(self) -> None:
        """Commit the top into its base, the one volume based on it: ``qemu-img commit -d``
        writes the top's clusters into the base and leaves the top as it was, so the top
        (read through the new base) must still compare equal to the base before the top
        is dropped, or emptied into a fresh overlay on the base (``drop`` false). A commit
        cut short leaves the top reading as before (it covers what was written) and is
        run again from the start."""
        top = self.volume("qcow2")
        self.usable_chain(top)
        base_name = str(self.params.get("base", ""))
        base = self.volume(name=base_name)
        self.based_on(top, base, base_name)
        if base.readonly:
            raise InvalidRequest(f"{base_name} is a snapshot (read-only on disk): a commit "
                                 "would change it", **self.where,
                                 hint="the merge-snapshot fix drops it from the chain "
                                      "without writing it")
        if qemuimg.qemu_format(base.format) not in ("raw", "qcow2"):
            raise InvalidRequest(f"{base_name} is {base.format}: commits go into raw or "
                                 "qcow2 bases only", **self.where)
        if base.capacity > top.capacity:
            raise InvalidRequest(f"{base_name} is larger than the top ({base.capacity} > "
                                 f"{top.capacity} bytes): it would read more than the top "
                                 "did", **self.where)
        users = sorted({*self.domains(top), *self.domains(base)})
        if users:
            raise VolumeBusy(f"libvirt domain(s) {', '.join(users[:5])} use the top or "
                             f"{base_name}: it is not committed", **self.where,
                             hint="detach the disk from the domain first")
        others = self.others_on(base, top)
        if others:
            raise VolumeBusy(f"{len(others)} other volume(s) are based on {base_name} "
                             f"({', '.join(sorted(others)[:5])}): a commit would change "
                             "what they read", **self.where,
                             hint="merge-snapshot (a rebase) leaves the base unchanged")
        self.nothing_based_on(top, "committed")
        drop = self.params.get("drop") is True
        self.ctx.remember(before={"depth": top.chain.depth, "backing": top.info.backing_file,
                                  "top_bytes": _allocated(self.transport, top.path),
                                  "base_bytes": _allocated(self.transport, base.path)})
        self.stage("commit")
        self.must(self.run(qemuimg.commit(top.path, "qcow2", keep=True), "qemu-img commit",
                           progress_label="commit", total=top.capacity),
                  "qemu-img commit", "the top still reads as before; run the fix again")
        self.stage("verify")
        if not self.driver.same_content(top, base.path, base.format,
                                        should_cancel=self.ctx.should_cancel):
            raise StorageError(f"after the commit {base_name} differs from what the top "
                               "reads", **self.where,
                               hint="the top was kept and reads as before; compare them")
        checked = self.check(qemuimg.qemu_format(base.format), path=base.path)
        if checked.status not in CHECKED:
            raise StorageError(f"qemu-img check finds {base_name} {checked.status} after "
                               "the commit", **self.where, hint="the top was kept")
        self.stage("drop" if drop else "empty")
        # Right before it goes: nothing may have been based on the top, or opened it.
        top = self.volume("qcow2")
        self.nothing_based_on(top, "dropped")
        users_now = self.domains(top)
        if users_now:
            raise VolumeBusy(f"libvirt domain(s) {', '.join(users_now)} use it now: "
                             "it is kept", **self.where)
        if drop:
            self.driver.delete_volume(self.pool, self.op.volume)
            return
        self.empty_top(top, base)

    def empty_top(self, top: Volume, base: Volume) -> None:
        """Replace the top by an empty overlay on ``base`` (which holds its data now):
        made under a journaled temporary name, then renamed over it."""
        temp = temp_name(self.ctx.job_id, self.op.volume)
        temp_path = _path(self.pool, temp)
        self.ctx.remember(temp=temp, temp_pool=self.pool.name)  # before the file exists
        self.remove_temp(temp)
        try:
            self.must(self.run(qemuimg.overlay(temp_path, top.capacity, backing_reference(
                base, self.pool.path), base.format), "qemu-img create"),
                "qemu-img create (the emptied top)", "the top was kept as it was")
            self.transport.copy_attributes(top.path, temp_path)
            self.transport.publish(temp_path, top.path, replace=True)
        except BaseException:
            self.remove_temp(temp)
            raise

    def convert_layout(self) -> None:
        """Convert a standalone volume to the performance strategy's layout: a
        preallocated copy in the preferred format under a journaled temporary name,
        compared with the volume, then renamed over it (as a flatten)."""
        fmt = self.op._format()
        out = self.op._output_format()
        volume = self.volume(fmt)
        self.usable_chain(volume)
        if volume.chain.depth > 1:
            raise InvalidRequest("it is based on another volume: the performance layout is "
                                 "a standalone image", **self.where,
                                 hint="flatten it (or copy it with --strategy performance)")
        if volume.readonly:
            raise InvalidRequest("it is a snapshot (read-only on disk): it is not rewritten",
                                 **self.where)
        self.nothing_based_on(volume, "converted")
        users = self.domains(volume)
        if users and out != fmt:
            raise VolumeBusy(f"libvirt domain(s) {', '.join(users[:5])} read it as {fmt}: "
                             f"as {out} they would not boot", **self.where,
                             hint=f"change the domain's disk to {out} first, or prefer {fmt}")
        self.replace_by_copy(
            volume, lambda temp_path: qemuimg.convert(
                volume.path, fmt, temp_path, out, preallocation=self.op._preallocation(),
                out_of_order=True),
            out, label="convert", what="qemu-img convert",
            differs=f"the {out} copy differs from the volume", differs_hint="nothing was replaced",
            before={"format": fmt, "allocation": _allocated(self.transport, volume.path)})

    def repair_corruption(self) -> None:
        if self.params.get("confirmed") is not True:
            raise InvalidRequest("repairing corruption may lose data: it runs only when "
                                 "confirmed", **self.where,
                                 hint="confirm the fix (a backup copy is taken first)")
        volume = self.volume("qcow2")
        before = self.check("qcow2")
        self.ctx.remember(before=_check_record(before))
        backup = backup_name(self.op.volume)
        temp = temp_name(self.ctx.job_id, backup)
        temp_path = _path(self.pool, temp)
        if self.transport.probe_path(_path(self.pool, backup), None)["kind"] != "missing":
            raise VolumeExists(f"the backup's name {backup!r} is taken", **self.where,
                               hint="try again in a second")
        self.ctx.remember(temp=temp, temp_pool=self.pool.name)  # before the file exists
        self.remove_temp(temp)
        self.stage("backup")
        try:
            # The file as it is, byte for byte (holes kept): qemu-img might not read a
            # corrupt image whole, and this copy must be able to undo the repair.
            self.must(self.run(sparse_copy(volume.path, temp_path), "the backup copy"),
                      "the backup copy (cp --sparse=always)")
            self.transport.publish(temp_path, _path(self.pool, backup))
        except BaseException:
            self.remove_temp(temp)
            raise
        self.ctx.remember(backup=backup)
        self.stage("repair")
        self.check("qcow2", repair="all")

    def relink(self) -> None:
        volume = self.volume("qcow2")
        new = str(self.params.get("new_backing", ""))
        fmt = str(self.params.get("backing_format", ""))
        self.stage("verify")
        if volume.chain.problem != LinkProblem.MISSING or not volume.info.backing_file:
            raise InvalidRequest("its backing is not missing (any more)", **self.where,
                                 hint="check it again")
        expected = os.path.basename(volume.info.backing_file)
        new_path = new if new.startswith("/") else _path(self.pool, new)
        if os.path.basename(new_path) != expected:
            raise InvalidRequest(f"{new!r} is not named {expected!r} as its backing was",
                                 **self.where)
        if volume.info.backing_format and volume.info.backing_format != fmt:
            raise InvalidRequest(f"its backing was {volume.info.backing_format}, the "
                                 f"candidate is said to be {fmt}", **self.where)
        candidate = self.candidate(new_path, fmt)
        if candidate.capacity != volume.capacity:
            raise InvalidRequest(f"{new_path} is {candidate.capacity} bytes, the image "
                                 f"{volume.capacity}: not its backing", **self.where)
        twins = [p for p in self.same_named(expected)
                 if os.path.realpath(p) != os.path.realpath(new_path)
                 and self.capacity_of(p, fmt) == volume.capacity]
        if twins:
            raise InvalidRequest(f"{len(twins)} other image(s) named {expected!r} have the "
                                 f"same size ({', '.join(sorted(twins)[:3])}): which one "
                                 "it was cannot be told", **self.where,
                                 hint="relink it by hand after comparing them")
        self.ctx.remember(before={"backing": volume.info.backing_file})
        self.stage("relink")
        reference = backing_reference(candidate, self.pool.path)
        self.must(self.run(qemuimg.rebase(self.path, "qcow2", reference, fmt, unsafe=True),
                           "qemu-img rebase -u"), "qemu-img rebase -u")

    def candidate(self, path: str, fmt: str) -> Volume:
        for pool in self.ctx.inventory.host_pools(self.op.host):
            if os.path.realpath(os.path.dirname(path)) == os.path.realpath(pool.path):
                found = self.ctx.inventory.driver(pool).probe_volume(
                    pool, os.path.basename(path))
                if qemuimg.qemu_format(found.format) != qemuimg.qemu_format(fmt):
                    raise InvalidRequest(f"{path} is {found.format}, not {fmt}", **self.where)
                return found
        raise InvalidRequest(f"{path} is in none of the host's pools", **self.where,
                             hint="a backing must lie in a pool of the host")

    def same_named(self, name: str) -> list[str]:
        found = []
        for pool in self.ctx.inventory.host_pools(self.op.host):
            path = _path(pool, name)
            if self.transport.probe_path(path, None)["kind"] == "file":
                found.append(path)
        return found

    def capacity_of(self, path: str, fmt: str) -> int | None:
        entry = self.transport.probe_path(path, fmt)
        info = entry.get("info") or {}
        size = info.get("virtual_size") if isinstance(info, dict) else None
        return size if isinstance(size, int) else None

    # -- after ---------------------------------------------------------------------

    def recheck(self) -> None:
        if self.op.code == "commit-into-base" and self.params.get("drop") is True:
            self.recheck_base()
            return
        if self.op.code in REMOVING:
            gone = self.transport.probe_path(self.path, None)["kind"] == "missing"
            self.ctx.remember(after={"status": "removed" if gone else "still there"})
            if not gone:
                raise StorageError("it is still there after its removal", **self.where)
            return
        volume = self.driver.probe_volume(self.pool, self.op.volume)
        found = self.check(qemuimg.qemu_format(volume.format))
        record = _check_record(found)
        record.update(depth=volume.chain.depth, dirty=volume.info.dirty,
                      version=volume.info.version, allocation=volume.allocation,
                      chain_problem=str(volume.chain.problem or "") or None)
        self.ctx.remember(after=record)
        if found.status not in CHECKED:
            hint = ("the copy taken before is " + str(self.ctx.resume.get("backup"))
                    if self.ctx.resume.get("backup") else "check it again")
            raise StorageError(f"qemu-img check still finds it {found.status} "
                               f"({found.corruptions} corruption(s), {found.leaks} "
                               "leaked cluster(s))", **self.where, hint=hint)
        if volume.chain.problem is not None:
            raise StorageError(f"its backing chain is still broken ({volume.chain.problem})",
                               **self.where)

    def recheck_base(self) -> None:
        """After a commit that dropped the top: the top is gone, the base checks clean."""
        gone = self.transport.probe_path(self.path, None)["kind"] == "missing"
        base = self.driver.probe_volume(self.pool, str(self.params.get("base", "")))
        found = self.check(qemuimg.qemu_format(base.format), path=base.path)
        self.ctx.remember(after={**_check_record(found), "top": "removed" if gone
                                 else "still there", "base_allocation": base.allocation,
                                 "depth": base.chain.depth})
        if not gone:
            raise StorageError("the top is still there after its removal", **self.where)
        if found.status not in CHECKED:
            raise StorageError(f"qemu-img check finds {base.name} {found.status}",
                               **self.where)


OPERATIONS[RunFix.kind] = RunFix


def dig_holes(path: str) -> list[str]:
    """``fallocate --dig-holes``: every all-zero block of a file becomes a hole, in
    place (the data reads the same, the space is given back)."""
    return ["fallocate", "--dig-holes", "--", path]


def sparse_copy(src: str, dst: str) -> list[str]:
    """A byte-for-byte copy of a file that keeps its holes (a backup)."""
    return ["cp", "--sparse=always", "--no-preserve=all", "--", src, dst]


def _below_base(top: Volume, base_name: str) -> tuple[str, str] | None:
    """What ``top`` is rebased onto when the link ``base_name`` is dropped: the reference
    (by name in the same directory) and format of the link below it; None: nothing."""
    if top.chain.depth < 3:
        return None
    link = top.chain.links[2]
    directory = os.path.dirname(top.path)
    same = os.path.normpath(os.path.dirname(link.path)) == os.path.normpath(directory)
    name = os.path.basename(link.path)
    return (name if same and ":" not in name else link.path, link.format)


def _check_record(found: qemuimg.CheckResult) -> dict[str, Any]:
    return {"status": found.status, "returncode": found.returncode,
            "corruptions": found.corruptions, "leaks": found.leaks,
            "leaks_fixed": found.leaks_fixed, "corruptions_fixed": found.corruptions_fixed}


def _path(pool: Pool, name: str) -> str:
    return os.path.join(pool.path, name)


def _allocated(transport: Transport, path: str) -> int:
    try:
        return transport.lstat(path).st_blocks * 512
    except OSError:
        return 0


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
