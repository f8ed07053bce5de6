"""``ls`` and ``pools``: what is on disk, re-read, as a table or ``--json``.

Read-only in every sense, and fast to start: no Textual, no job engine, no cache file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from backends.contract import StorageError
from backends.model import Health, Pool, PoolScan, Volume
from console.commands import PROG
from console.commands.places import load_targets, selected_keys
from console.commands.text import print_json, printable, table
from console.units import format_size

if TYPE_CHECKING:
    from console.inventory import Inventory


def volume_record(v: Volume, h: Health) -> dict[str, Any]:
    return {
        "host": v.host, "pool": v.pool, "name": v.name, "path": v.path,
        "format": str(v.format), "capacity": v.capacity, "allocation": v.allocation,
        "backing": v.backing, "backing_format": v.backing_format,
        "chain_depth": v.chain_depth, "chain": [link.path for link in v.chain.links[1:]],
        "chain_problem": str(v.chain.problem) if v.chain.problem else None,
        "health": str(h.state), "reasons": list(h.reasons),
        "snapshot": v.readonly, "in_use": v.in_use, "error": v.error,
    }


def pool_record(scan: PoolScan | None, pool: Pool, error: str | None) -> dict[str, Any]:
    cap = scan.pool.capacity if scan else None
    return {
        "host": pool.host, "pool": pool.name, "type": pool.kind, "path": pool.path,
        "capacity": cap.capacity if cap else None,
        "allocation": cap.allocation if cap else None,
        "available": cap.available if cap else None,
        "committed": cap.committed if cap else None,
        "volumes": len(scan.volumes) if scan else None, "error": error,
    }


ScanResult = tuple[Pool, PoolScan | None, list[Health], str | None]


def scan_each(args: argparse.Namespace) -> tuple[list[ScanResult], bool]:
    """Scan the selected pools on disk (with no TARGET: every host's pools, hosts
    asked in parallel). Read-only in every sense: the cache is the console's, and a
    script listing every minute should not contend with it. A host or pool that fails
    is one line on stderr; the others are still listed."""
    from console.inventory import Inventory

    config = load_targets(args)
    inventory = Inventory(config, None, read_only=True)
    failed = False

    def complain(err: StorageError) -> None:
        nonlocal failed
        print(f"{PROG}: {err}", file=sys.stderr)
        failed = True

    def host_pools(host: str) -> list[Pool]:
        if not config.host(host).discovers and config.host(host).host.uri == "local":
            return list(config.host(host).pools)  # nothing to connect to
        try:
            return inventory.discover_host(host)
        except StorageError as err:
            complain(err)
            return []

    if args.targets:
        pools = [p for p in (_target_pool(inventory, h, n, complain)
                             for h, n in selected_keys(config, args.targets)) if p]
    else:
        hosts = [h.name for h in inventory.hosts()]
        pools = [p for found in _each(host_pools, hosts) for p in found]

    def one(pool: Pool) -> ScanResult:
        try:
            scan, healths = inventory.scan_pool(pool)
        except StorageError as err:
            complain(err)
            return (pool, None, [], str(err))
        return (pool, scan, healths, None)

    results = _each(one, pools)
    inventory.close()
    return results, failed


def _target_pool(inventory: Inventory, host: str, name: str,
                 complain: Callable[[StorageError], None]) -> Pool | None:
    try:
        return inventory.pool(host, name)
    except StorageError as err:
        complain(err)
    except KeyError:
        complain(StorageError("no such pool on the host", host=host, pool=name))
    return None


T = TypeVar("T")
R = TypeVar("R")


def _each(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``fn`` over ``items`` in order; in threads when they are on several remote hosts,
    else in this thread (the scanner forks to probe big local pools only when it is
    the process's one thread)."""
    remote = {getattr(i, "host", i) for i in items} - {"local"}
    if len(items) < 2 or not remote:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(items), 16)) as workers:
        return list(workers.map(fn, items))


def cmd_ls(args: argparse.Namespace) -> int:
    results, failed = scan_each(args)
    records = [volume_record(v, h) for _, scan, healths, _ in results if scan
               for v, h in zip(scan.volumes, healths, strict=True)]
    if args.json:
        print_json(records)
    elif records:
        rows = [("HOST", "POOL", "NAME", "FORMAT", "CAPACITY", "ALLOC", "BACKING", "HEALTH")]
        rows += [(r["host"], printable(os.path.basename(r["pool"]) or r["pool"]),
                  printable(r["name"]), r["format"], format_size(r["capacity"]),
                  format_size(r["allocation"]),
                  printable(os.path.basename(r["backing"])) if r["backing"] else "-",
                  r["health"]) for r in records]
        print(table(rows, {4, 5}))
    return 2 if failed else 0


def cmd_pools(args: argparse.Namespace) -> int:
    results, failed = scan_each(args)
    records = [pool_record(scan, pool, err) for pool, scan, _, err in results]
    if args.json:
        print_json(records)
    elif records:
        rows = [("HOST", "POOL", "TYPE", "CAPACITY", "ALLOC", "AVAIL", "COMMITTED", "VOLUMES",
                 "PATH")]
        rows += [(r["host"], printable(r["pool"]), r["type"], format_size(r["capacity"]),
                  format_size(r["allocation"]), format_size(r["available"]),
                  format_size(r["committed"]),
                  str(r["volumes"]) if r["volumes"] is not None else "-",
                  printable(r["path"])) for r in records]
        print(table(rows, {3, 4, 5, 6, 7}))
    return 2 if failed else 0
