"""``ls`` and ``pools``: what is on disk, re-read, as a table or ``--json``.

Read-only in every sense, and fast to start: no Textual, no job engine, no cache file.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from backends.contract import StorageError
from backends.model import Health, Pool, PoolScan, Volume
from console.commands import PROG
from console.commands.places import load_targets, selected_pools
from console.commands.text import print_json, printable, table
from console.units import format_size


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
    """Scan the selected pools on disk. Read-only in every sense: the cache is the
    console's, and a script listing every minute should not contend with it."""
    from console.inventory import Inventory

    config = load_targets(args)
    pools = selected_pools(config, args.targets)
    inventory = Inventory(config, None, read_only=True)
    results: list[ScanResult] = []
    failed = False
    for pool in pools:
        try:
            scan, healths = inventory.scan_pool(pool)
        except StorageError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            results.append((pool, None, [], str(err)))
            failed = True
            continue
        results.append((pool, scan, healths, None))
    return results, failed


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
