"""``archive`` and ``restore``: a volume to a zstd archive (with its checksum sidecar)
at any path of its host, and back, each as one job followed to its end."""

from __future__ import annotations

import argparse
import os

from console.commands import UsageError
from console.commands.engine import open_engine, run_op
from console.commands.places import job_config, place
from console.config import Config

ARCHIVE_SUFFIX = ".zst"


def _host_path(config: Config, spec: str, *, what: str,
               default_name: str | None = None) -> tuple[Config, str, str]:
    """(config, host, absolute path) of a file named as a VOL is: ``HOST:POOL/NAME``
    (a file in a pool's directory) or a path on host ``local``."""
    config, where = place(config, spec, what=what, default_name=default_name)
    pool = next(p for p in config.host(where.host).pools if p.name == where.pool)
    return config, where.host, os.path.join(pool.path, where.name)


def cmd_archive(args: argparse.Namespace) -> int:
    from console.jobs.operations import ArchiveVolume

    config = job_config(args, [args.volume, args.dest])
    config, vol = place(config, args.volume, what="VOL")
    config, host, dest = _host_path(config, args.dest, what="DEST",
                                    default_name=vol.name + ARCHIVE_SUFFIX)
    if host != vol.host:
        raise UsageError(f"DEST {args.dest}: the archive is written on VOL's host "
                         f"({vol.host})")
    with open_engine(args, config) as engine:
        engine.inventory.probe_volume(vol.host, vol.pool, vol.name)  # exit 2 if missing
        return run_op(args, engine, ArchiveVolume(
            vol.host, vol.pool, vol.name, dest=dest, level=args.level,
            overwrite=args.overwrite))


def cmd_restore(args: argparse.Namespace) -> int:
    from console.jobs.operations import RestoreVolume

    config = job_config(args, [args.archive, args.dest])
    config, host, archive = _host_path(config, args.archive, what="ARCHIVE")
    name = os.path.basename(archive)
    name = name[:-len(ARCHIVE_SUFFIX)] if name.endswith(ARCHIVE_SUFFIX) else name
    config, dest = place(config, args.dest, what="DEST", default_name=name)
    if dest.host != host:
        raise UsageError(f"ARCHIVE {args.archive}: it must be on DEST's host ({dest.host})")
    if args.into_existing and args.format:
        raise UsageError("--into-existing keeps the volume's format: drop --format")
    with open_engine(args, config) as engine:
        return run_op(args, engine, RestoreVolume(
            dest.host, dest.pool, dest.name, archive=archive, format=args.format,
            into_existing=args.into_existing))
