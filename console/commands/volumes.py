"""The commands that change volumes, each as one job followed to its end: create,
resize, copy, delete, snapshot, clone, growfs."""

from __future__ import annotations

import argparse
import sys

from backends.contract import StorageError
from console.commands import UsageError
from console.commands.engine import Engine, open_engine, run_op
from console.commands.places import Place, is_address, job_config, place
from console.commands.text import printable
from console.config import Config
from console.units import parse_size


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as err:
        raise UsageError(f"size: {err}") from None
    if size <= 0:
        raise UsageError("size: must be larger than 0")
    return size


def _in_pool_of(config: Config, spec: str, of: Place, *, what: str,
                noun: str) -> tuple[Config, str]:
    """A volume named by an option (``--backing``, ``--base``) that must be in ``of``'s
    pool: its bare name, or a VOL there."""
    if "/" not in spec and not is_address(spec):
        return config, spec
    config, vol = place(config, spec, what=what)
    if (vol.host, vol.pool) != (of.host, of.pool):
        raise UsageError(f"{what} {spec}: the {noun} must be in DEST's pool")
    return config, vol.name


def _probe(engine: Engine, vol: Place) -> None:
    """Refuse a VOL that is not on disk before a job is journaled (exit 2)."""
    engine.inventory.probe_volume(vol.host, vol.pool, vol.name)


def cmd_create(args: argparse.Namespace) -> int:
    from console.jobs.operations import CreateVolume

    specs = [args.dest] + ([args.backing] if args.backing else [])
    config, dest = place(job_config(args, specs), args.dest, what="DEST")
    backing = None
    if args.backing:
        config, backing = _in_pool_of(config, args.backing, dest, what="--backing",
                                      noun="backing volume")
    if args.size is None and backing is None:
        raise UsageError("--size is needed (unless --backing gives it)")
    capacity = _size(args.size) if args.size is not None else 0
    if backing is not None and args.format != "qcow2":
        raise UsageError("--backing makes a qcow2 overlay: drop --format raw")
    if backing is not None and (args.preallocation or args.zero):
        raise UsageError("--backing makes a sparse overlay: drop --preallocation/--zero")
    if args.zero and not args.preallocation:
        raise UsageError("--zero writes the zeroes of a preallocated volume: add "
                         "--preallocation falloc|full")
    with open_engine(args, config) as engine:
        return run_op(args, engine, CreateVolume(
            dest.host, dest.pool, dest.name, format=args.format, capacity=capacity,
            backing=backing, preallocation=args.preallocation, zero=args.zero))


def cmd_resize(args: argparse.Namespace) -> int:
    from console.jobs.operations import ResizeVolume

    config, vol = place(job_config(args, [args.volume]), args.volume, what="VOL")
    with open_engine(args, config) as engine:
        if args.size.startswith("+"):
            current = engine.inventory.probe_volume(vol.host, vol.pool, vol.name)
            capacity = current.capacity + _size(args.size[1:])
        else:
            capacity = _size(args.size)
        return run_op(args, engine, ResizeVolume(vol.host, vol.pool, vol.name,
                                                 capacity=capacity, shrink=args.shrink))


def cmd_copy(args: argparse.Namespace) -> int:
    from console.jobs.operations import CopyVolume

    config = job_config(args, [args.source, args.dest] + ([args.base] if args.base else []))
    config, src = place(config, args.source, what="SRC")
    config, dest = place(config, args.dest, what="DEST", default_name=src.name)
    base = None
    if args.base:
        config, base = _in_pool_of(config, args.base, dest, what="--base", noun="base")
        if args.strategy == "performance":
            raise UsageError("--base makes an overlay on the base: it cannot be a "
                             "preallocated --strategy performance copy")
    if dest.host != src.host:
        return _copy_between_hosts(args, config, src, dest, base)
    with open_engine(args, config) as engine:
        return run_op(args, engine, CopyVolume(
            src.host, src.pool, src.name, dest_pool=dest.pool, dest_name=dest.name,
            format=args.format, overwrite=args.overwrite, base=base,
            strategy=args.strategy))


def _copy_between_hosts(args: argparse.Namespace, config: Config, src: Place, dest: Place,
                        base: str | None) -> int:
    from console.jobs.transfer import TransferVolume

    with open_engine(args, config) as engine:
        _probe(engine, src)
        return run_op(args, engine, TransferVolume(
            src.host, src.pool, src.name, dest_host=dest.host, dest_pool=dest.pool,
            dest_name=dest.name, overwrite=args.overwrite, base=base, format=args.format))


def cmd_delete(args: argparse.Namespace) -> int:
    from console.jobs.operations import DeleteVolume

    config, vol = place(job_config(args, [args.volume]), args.volume, what="VOL")
    with open_engine(args, config) as engine:
        typed = None
        if not args.read_only:  # read-only: the job layer refuses it, below
            plan = engine.inventory.plan_delete(vol.host, vol.pool, vol.name,
                                                with_dependants=args.with_dependants)
            if plan.refused:
                raise StorageError(f"not deleted: {plan.refused}", host=vol.host,
                                   pool=vol.pool, volume=vol.name)
            if plan.holds_data:
                typed = vol.name if args.sure else _typed_name(vol, len(plan.order))
        return run_op(args, engine, DeleteVolume(
            vol.host, vol.pool, vol.name, typed_name=typed, wipe=args.wipe,
            with_dependants=args.with_dependants))


def _typed_name(vol: Place, count: int) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"volume {vol.name!r} holds data: pass "
                         "--yes-i-am-sure-it-holds-data (or run on a terminal and type its "
                         "name)")
    what = "holds data" if count == 1 else f"and the {count - 1} volume(s) based on it " \
        "hold data"
    print(f"volume {printable(vol.name)!r} in {vol.host}:{printable(vol.pool)} {what}. "
          "Type its name to delete it: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline().rstrip("\n")
    if typed != vol.name:
        raise UsageError("not deleted: the name typed does not match")
    return typed


def cmd_snapshot(args: argparse.Namespace) -> int:
    from console.jobs.operations import SnapshotVolume

    config, vol = place(job_config(args, [args.volume]), args.volume, what="VOL")
    if args.name is not None and (not args.name or "/" in args.name):
        raise UsageError(f"--name {args.name!r}: a volume name in VOL's pool (no '/')")
    with open_engine(args, config) as engine:
        _probe(engine, vol)
        return run_op(args, engine, SnapshotVolume(vol.host, vol.pool, vol.name,
                                                   name=args.name))


def cmd_clone(args: argparse.Namespace) -> int:
    from console.jobs.operations import CloneVolume

    config = job_config(args, [args.snapshot, args.dest])
    config, snap = place(config, args.snapshot, what="SNAP")
    config, dest = place(config, args.dest, what="DEST", default_name=snap.name)
    if dest.host != snap.host:
        raise UsageError(f"DEST {args.dest}: a clone stays on one host ({snap.host})")
    if args.format and args.strategy != "performance":
        raise UsageError("--format is for --strategy performance (a space clone is a "
                         "qcow2 overlay)")
    with open_engine(args, config) as engine:
        _probe(engine, snap)
        return run_op(args, engine, CloneVolume(
            snap.host, snap.pool, snap.name, dest_pool=dest.pool, dest_name=dest.name,
            strategy=args.strategy, format=args.format))


def cmd_growfs(args: argparse.Namespace) -> int:
    from console.jobs.operations import GrowFilesystem

    config, vol = place(job_config(args, [args.volume]), args.volume, what="VOL")
    with open_engine(args, config) as engine:
        _probe(engine, vol)
        return run_op(args, engine, GrowFilesystem(vol.host, vol.pool, vol.name))
