"""Where a command acts: the pools a TARGET names, the volume a VOL or DEST names.

A TARGET is a directory (an ad-hoc pool on host ``local``) or ``HOST:POOL`` of the config;
a VOL or DEST is ``HOST:POOL/NAME`` or a file path, whose directory becomes an ad-hoc
pool on host ``local``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from console.commands import UsageError
from console.config import Config, ConfigError

if TYPE_CHECKING:
    from console.jobs.journal import JobRecord

VOL_HELP = "HOST:POOL/NAME, or a file path (its directory is an ad-hoc pool on host local)"


def load_targets(args: argparse.Namespace) -> Config:
    """The config, with ``args.targets`` (directories become ad-hoc pools)."""
    if args.targets:  # only the named pools: no need to ask libvirt for its pools
        return Config.load(args.config).with_targets(args.targets)
    config = Config.load_default(args.config)
    config.create_embedded_pool()
    return config


def selected_keys(config: Config, targets: Sequence[str]) -> list[tuple[str, str]]:
    """(host, pool) of each TARGET, in order, once each (directories were added to the
    config as ad-hoc pools by ``load_targets``)."""
    picked: list[tuple[str, str]] = []
    for target in targets:
        sub = config.with_targets([target])
        assert sub.selected is not None
        if sub.selected not in picked:
            picked.append(sub.selected)
    return picked


def is_address(spec: str) -> bool:
    """``HOST:POOL/NAME`` rather than a path: a colon before any slash, not a file."""
    host, sep, _ = spec.partition(":")
    return bool(sep and host and "/" not in host and not os.path.exists(spec))


@dataclasses.dataclass(frozen=True)
class Place:
    host: str
    pool: str
    name: str


def place(config: Config, spec: str, *, what: str,
          default_name: str | None = None) -> tuple[Config, Place]:
    """Where ``spec`` points: a configured pool, or a path's directory as an ad-hoc pool
    (added to the config that is returned). An empty name takes ``default_name``."""
    if is_address(spec):
        host, _, rest = spec.partition(":")
        pool, _, name = rest.rpartition("/")
        try:
            hc = config.host(host)
        except KeyError:
            raise ConfigError(f"{what} {spec}: no host {host!r} in the config") from None
        if not any(p.name == pool for p in hc.pools) and not (hc.discovers and pool):
            raise ConfigError(f"{what} {spec}: host {host!r} has no pool {pool!r} "
                              "(write HOST:POOL/NAME)")
    else:
        path = os.path.abspath(spec)
        if spec.endswith("/") or os.path.isdir(path):
            directory, name = path, ""
        else:
            directory, name = os.path.split(path)
        if not os.path.isdir(directory):
            raise ConfigError(f"{what} {spec}: no such directory {directory}")
        config = config.with_targets([directory])
        assert config.selected is not None
        host, pool = config.selected
    name = name or default_name or ""
    if not name:
        raise UsageError(f"{what} {spec}: name a volume (HOST:POOL/NAME or a file path)")
    return config, Place(host, pool, name)


def job_config(args: argparse.Namespace, specs: Sequence[str]) -> Config:
    """The config a job command needs for the VOL/DEST ``specs`` it was given."""
    if any(is_address(s) for s in specs):  # a configured pool: libvirt's pools count
        config = Config.load_default(args.config)
        config.create_embedded_pool()
        return config
    return Config.load(args.config)


def with_job_pools(config: Config, job: JobRecord) -> Config:
    """Add the directories of an ad-hoc job's pools (named by their paths), so the job
    can be resumed or rolled back from another process."""
    dest_host = str(job.params.get("dest_host") or job.host)  # a copy between hosts
    for host, pool in {(job.host, job.pool),
                       (dest_host, str(job.params.get("dest_pool") or job.pool))}:
        try:
            hc = config.host(host)
            known = hc.discovers or any(p.name == pool for p in hc.pools)
        except KeyError:
            known = False
        if not known:
            if host != "local" or not os.path.isabs(pool) or not os.path.isdir(pool):
                raise ConfigError(f"job {job.id}: its pool {host}:{pool} is not in the "
                                  "config (or its directory is gone)")
            config = config.with_targets([pool])
    return config
