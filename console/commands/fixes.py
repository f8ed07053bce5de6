"""``fix``: run fixes a check proposes, each as a job followed to its end.

    storage-console fix ID [ID ...] [--in TARGET ...]    # the fixes ``check`` listed
    storage-console fix --type clean TARGET [...]       # every fix of one type there

The storage is checked again first (the disk is the truth: a fix ID names a fix of the
state found now, and one whose problem went away is not run). A high-risk fix (repairing
a corrupt image) runs only with ``--confirm``; dropping an unreferenced snapshot only
with ``--mark``. Each job re-checks its volume when it is done. Exit status: 0 when
every fix ran, 1 when one failed or was not run (not confirmed or marked), 2 for bad
input or a refusal of the job layer (read-only mode).
"""

from __future__ import annotations

import argparse
import sys

from console.commands import PROG, UsageError
from console.commands.checking import run_check
from console.commands.engine import open_engine, run_op
from console.fixes import Fix, FixType


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="*", metavar="ID|TARGET",
                   help="fix IDs from 'check'; with --type, the TARGETs to fix instead")
    p.add_argument("--type", choices=[str(t) for t in FixType],
                   help="every fix of this type in the TARGETs (default: all pools)")
    p.add_argument("--in", dest="within", action="append", default=[], metavar="TARGET",
                   help="with IDs: check only TARGET (faster than every pool)")
    p.add_argument("--confirm", action="store_true",
                   help="also run high-risk fixes (a backup is made first)")
    p.add_argument("--mark", action="store_true",
                   help="also drop snapshots nothing is based on")
    p.add_argument("--json", action="store_true", help="print each final job record")


def chosen(args: argparse.Namespace, fixes: list[Fix]) -> list[Fix]:
    if args.type:
        return [f for f in fixes if f.type == args.type]
    if not args.ids:
        raise UsageError("name the fixes: fix ID ... (from 'check'), or fix --type TYPE")
    by_id = {f.id: f for f in fixes}
    missing = [i for i in args.ids if i not in by_id]
    if missing:
        raise UsageError(f"no fix {', '.join(missing)} in the storage as it is now (run "
                         "'check' again: the problem may be gone, or the state changed)")
    return [by_id[i] for i in args.ids]


def cmd_fix(args: argparse.Namespace) -> int:
    from console.jobs.fixing import RunFix

    targets = list(args.ids) if args.type else list(args.within)
    config, report = run_check(args, targets)
    for error in report.errors:
        print(f"{PROG}: {error}", file=sys.stderr)
    todo = chosen(args, report.fixes)
    if not todo:
        print("nothing to fix")
        return 0
    status = 0
    with open_engine(args, config) as engine:
        for fix in todo:
            if fix.needs_confirmation and not args.confirm:
                print(f"{PROG}: fix {fix.id} ({fix.code} of {fix.volume}) is high-risk: "
                      "not run without --confirm", file=sys.stderr)
                status = 1
                continue
            if fix.params.get("requires_mark") and not args.mark:
                print(f"{PROG}: fix {fix.id} drops snapshot {fix.volume}: not run "
                      "without --mark", file=sys.stderr)
                status = 1
                continue
            print(f"fix {fix.id}: {fix.type} {fix.volume or fix.pool}: {fix.reason}",
                  file=sys.stderr)
            done = run_op(args, engine, RunFix.from_fix(fix, confirmed=args.confirm,
                                                        marked=args.mark))
            status = max(status, done)
    return status
