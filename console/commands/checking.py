"""``check``: what is wrong with the storage and the fixes that would mend it.

Exit status for monitoring scripts: 0 nothing is broken, 1 something is broken, 2 a host,
pool or volume could not be checked (or bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from backends.contract import StorageError
from backends.model import Pool, Volume
from console.commands import PROG
from console.commands.text import printable, table
from console.config import Config, ConfigError
from console.units import format_size

if TYPE_CHECKING:
    from console.checks import CheckReport


def resolve(config: Config, targets: list[str]) -> tuple[Config, list[tuple[str, str]],
                                                          set[tuple[str, str, str]] | None,
                                                          list[str]]:
    """(config with ad-hoc pools, (host, pool) to check, the volumes asked for or None
    for whole pools, hosts named whole). A TARGET is a directory, ``HOST:POOL``,
    ``HOST:POOL/NAME``, a volume's file or a host's name."""
    pools: list[tuple[str, str]] = []
    volumes: set[tuple[str, str, str]] = set()
    whole_pools: set[tuple[str, str]] = set()
    hosts: list[str] = []

    def picked(sub: Config, name: str | None = None) -> None:
        """Record the pool ``sub`` selected (and its volume ``name``, if one)."""
        assert sub.selected is not None
        if name is None:
            whole_pools.add(sub.selected)
        else:
            volumes.add((*sub.selected, name))
        if sub.selected not in pools:
            pools.append(sub.selected)

    for target in targets:
        if os.path.isfile(target):  # a volume's file: its directory, that volume
            directory, name = os.path.split(os.path.abspath(target))
            config = config.with_targets([directory])
            picked(config, name)
            continue
        if not os.path.isdir(target) and ":" not in target:
            try:
                config.host(target)
            except KeyError:
                raise ConfigError(f"{target}: no such directory, host, or HOST:POOL") from None
            hosts.append(target)
            continue
        try:
            config = config.with_targets([target])
        except ConfigError:
            host, _, rest = target.partition(":")
            pool, sep, name = rest.rpartition("/")
            if not sep or not name or ":" not in target:
                raise
            config = config.with_targets([f"{host}:{pool}"])
            picked(config, name)
            continue
        picked(config)
    only = {v for v in volumes if (v[0], v[1]) not in whole_pools} if volumes else None
    return config, pools, only, hosts


def run_check(args: argparse.Namespace, targets: list[str], *,
              deep: bool = True) -> tuple[Config, CheckReport]:
    """Check ``targets`` (every host's pools when empty): the config used (ad-hoc pools
    added) and the report, with the errors of what could not be checked in it."""
    from console.checks import check_pools
    from console.config import journal_path
    from console.inventory import Inventory
    from console.jobs.journal import Journal

    config = Config.load_default(args.config)
    if not targets:
        config.create_embedded_pool()
    config, keys, wanted, hosts = resolve(config, list(targets))
    inventory = Inventory(config, None, read_only=True)
    errors: list[str] = []
    pools: list[Pool] = []
    for host in ([h.name for h in inventory.hosts()] if not targets else hosts):
        try:
            if config.host(host).discovers:
                inventory.discover_host(host)
            pools += inventory.host_pools(host)
        except StorageError as err:
            errors.append(str(err))
    for host, name in keys:
        try:
            pool = inventory.pool(host, name)
        except StorageError as err:
            errors.append(str(err))
            continue
        except KeyError:
            errors.append(f"{host}:{name}: no such pool on the host")
            continue
        if pool not in pools:
            pools.append(pool)
    only: Callable[[Volume], bool] | None = None
    if wanted is not None:
        whole = {(p.host, p.name) for p in pools} - {(h, p) for h, p, _ in wanted}

        def only(v: Volume) -> bool:
            return (v.host, v.pool) in whole or (v.host, v.pool, v.name) in wanted

    path = journal_path()
    journal = Journal(path) if path.exists() else None
    try:
        report = check_pools(inventory, pools, deep=deep, journal=journal, only=only)
    finally:
        if journal is not None:
            journal.close()
        inventory.close()
    if wanted is not None:
        seen = {(v.volume.host, v.volume.pool, v.volume.name) for v in report.volumes}
        errors += [f"{h}:{p}/{n}: no such volume" for h, p, n in sorted(wanted - seen)]
    report.errors[:0] = errors
    return config, report


def cmd_check(args: argparse.Namespace) -> int:
    _, report = run_check(args, list(args.targets), deep=not args.quick)
    if args.json:
        print(json.dumps(report.record(), indent=1))
    else:
        _print(report.record())
    for error in report.errors:
        print(f"{PROG}: {error}", file=sys.stderr)
    if report.errors:
        return 2
    return 1 if report.broken else 0


def _print(record: dict[str, object]) -> None:
    _print_findings(record)
    volumes = record["volumes"]
    assert isinstance(volumes, list)
    tried = [v for v in volumes if v.get("last_fix")]
    if tried:  # the state of the last fix attempted on each volume, from the journal
        print()
        rows: list[tuple[str, ...]] = [("VOLUME", "LAST FIX", "CODE", "STATE", "HOST",
                                        "STAGE", "PCT", "ERROR")]
        for v in tried:
            f = v["last_fix"]
            rows.append((printable(v["name"]), f"job {f['job']}", str(f["code"]),
                         f["state"], printable(f["host"]),
                         f"{f['stage']}/{f['stages']} {f['stage_label']}".strip(),
                         f"{f['percent']:.0f}%" if f["percent"] >= 0 else "-",
                         printable(f["error"] or "")))
        print(table(rows, {6}))


def _print_findings(record: dict[str, object]) -> None:
    findings = record["findings"]
    fixes = record["fixes"]
    assert isinstance(findings, list) and isinstance(fixes, list)
    if not findings:
        print("nothing found: every volume checked is optimized")
        return
    rows: list[tuple[str, ...]] = [("SEVERITY", "HOST", "POOL", "VOLUME", "CODE", "REASON")]
    rows += [(f["severity"], f["host"], printable(os.path.basename(f["pool"]) or f["pool"]),
              printable(f["volume"] or "-"), f["code"], printable(f["reason"]))
             for f in findings]
    print(table(rows, set()))
    if fixes:
        print()
        rows = [("FIX", "TYPE", "RISK", "SPACE", "VOLUME", "CODE", "WHAT")]
        rows += [(f["id"], f["type"], f["risk"] + ("!" if f["needs_confirmation"] else ""),
                  _space(f["space_change"]), printable(f["volume"] or "-"), f["code"],
                  printable(f["reason"].split(": ", 1)[0])) for f in fixes]
        print(table(rows, {3}))


def _space(change: int) -> str:
    if change == 0:
        return "0"
    return ("-" if change < 0 else "+") + format_size(abs(change))
