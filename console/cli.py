"""``storage-console``: the console, and sub-commands that print text or ``--json``.

``ls`` and ``pools`` never import Textual (they must start fast). Every error is one
line on stderr naming what failed, with exit status 2; never a traceback (set
``STORAGE_CONSOLE_DEBUG=1`` to see one for a bug).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.contract import StorageError
from backends.model import Health, Pool, PoolScan, Volume
from console.config import Config, ConfigError, cache_path
from console.units import format_size

if TYPE_CHECKING:
    from console.cache import Cache

PROG = "storage-console"
SUBCOMMANDS = ("ls", "pools")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other error
        raise UsageError(f"{message} (see {self.prog} --help)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="config file (default: the XDG config dir's config.toml)")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    if command == "ls":
        p = _Parser(prog=f"{PROG} ls", description="List volumes, re-read from disk.")
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a directory, or HOST:POOL from the config (default: all pools)")
        p.add_argument("--json", action="store_true", help="print a JSON array")
    elif command == "pools":
        p = _Parser(prog=f"{PROG} pools", description="List pools with their space.")
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a directory, or HOST:POOL (default: all pools)")
        p.add_argument("--json", action="store_true", help="print a JSON array")
    else:
        p = _Parser(prog=PROG, description="A terminal console for virtualization storage. "
                    f"Sub-commands: {', '.join(SUBCOMMANDS)} (see '{PROG} ls --help').")
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a directory (an ad-hoc pool, selected at start) or HOST:POOL")
        p.add_argument("--read-only", action="store_true",
                       help="nothing can change storage (enforced below the UI)")
        p.add_argument("--no-refresh", action="store_true",
                       help="paint from the cache only; refresh with r")
        p.add_argument("--cache", type=Path, metavar="FILE",
                       help=f"cache file (default: {cache_path()})")
    _common(p)
    return p


def _load(args: argparse.Namespace) -> Config:
    if args.targets:  # only the named pools: no need to ask libvirt for its pools
        return Config.load(args.config).with_targets(args.targets)
    config = Config.load_default(args.config)
    config.create_embedded_pool()
    return config


def _selected_pools(config: Config, targets: Sequence[str]) -> list[Pool]:
    if not targets:
        return [p for hc in config.hosts for p in hc.pools]
    picked: list[Pool] = []
    for target in targets:
        # with_targets has added directories as pools; look each one up again.
        sub = config.with_targets([target])
        assert sub.selected is not None
        host, name = sub.selected
        pool = next(p for p in sub.host(host).pools if p.name == name)
        if pool not in picked:
            picked.append(pool)
    return picked


def _open_cache(args: argparse.Namespace) -> Cache:
    from console.cache import Cache

    cache = Cache(args.cache or cache_path())
    if cache.warning:
        print(f"{PROG}: warning: {cache.warning}", file=sys.stderr)
    return cache


def volume_record(v: Volume, h: Health) -> dict[str, Any]:
    return {
        "host": v.host, "pool": v.pool, "name": v.name, "path": v.path,
        "format": str(v.format), "capacity": v.capacity, "allocation": v.allocation,
        "backing": v.backing, "backing_format": v.backing_format,
        "chain_depth": v.chain_depth, "chain": [link.path for link in v.chain.links[1:]],
        "chain_problem": str(v.chain.problem) if v.chain.problem else None,
        "health": str(h.state), "reasons": list(h.reasons),
        "snapshot": v.readonly, "error": v.error,
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


def _printable(text: str) -> str:
    # Names may hold newlines or undecodable bytes: never let them break the table.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        .encode("unicode_escape").decode("ascii").replace("\\\\", "\\")


def _table(rows: Iterable[Sequence[str]], right: set[int]) -> str:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


ScanResult = tuple[Pool, PoolScan | None, list[Health], str | None]


def _scan_each(args: argparse.Namespace) -> tuple[list[ScanResult], bool]:
    """Scan the selected pools on disk. Read-only in every sense: the cache is the
    console's, and a script listing every minute should not contend with it."""
    from console.inventory import Inventory

    config = _load(args)
    pools = _selected_pools(config, args.targets)
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


def _print_json(records: list[dict[str, Any]]) -> None:
    # One object per line, greppable. '}, {"host": ' cannot occur inside a JSON string
    # (its quotes would be escaped), so splitting the one fast dumps() there is safe.
    text = json.dumps(records).replace('}, {"host": ', '},\n{"host": ')
    sys.stdout.write(text[:1] + "\n" + text[1:-1] + "\n]\n" if records else "[]\n")


def cmd_ls(args: argparse.Namespace) -> int:
    results, failed = _scan_each(args)
    records = [volume_record(v, h) for _, scan, healths, _ in results if scan
               for v, h in zip(scan.volumes, healths, strict=True)]
    if args.json:
        _print_json(records)
    elif records:
        rows = [("HOST", "POOL", "NAME", "FORMAT", "CAPACITY", "ALLOC", "BACKING", "HEALTH")]
        rows += [(r["host"], _printable(os.path.basename(r["pool"]) or r["pool"]),
                  _printable(r["name"]), r["format"], format_size(r["capacity"]),
                  format_size(r["allocation"]),
                  _printable(os.path.basename(r["backing"])) if r["backing"] else "-",
                  r["health"]) for r in records]
        print(_table(rows, {4, 5}))
    return 2 if failed else 0


def cmd_pools(args: argparse.Namespace) -> int:
    results, failed = _scan_each(args)
    records = [pool_record(scan, pool, err) for pool, scan, _, err in results]
    if args.json:
        _print_json(records)
    elif records:
        rows = [("HOST", "POOL", "TYPE", "CAPACITY", "ALLOC", "AVAIL", "COMMITTED", "VOLUMES",
                 "PATH")]
        rows += [(r["host"], _printable(r["pool"]), r["type"], format_size(r["capacity"]),
                  format_size(r["allocation"]), format_size(r["available"]),
                  format_size(r["committed"]),
                  str(r["volumes"]) if r["volumes"] is not None else "-",
                  _printable(r["path"])) for r in records]
        print(_table(rows, {3, 4, 5, 6, 7}))
    return 2 if failed else 0


def cmd_console(args: argparse.Namespace) -> int:
    from console.inventory import Inventory

    config = _load(args)
    cache = _open_cache(args)
    inventory = Inventory(config, cache, read_only=args.read_only)
    from console.ui.app import StorageConsoleApp  # Textual: only for the console

    app = StorageConsoleApp(inventory, select=config.selected,
                            refresh_on_start=not args.no_refresh)
    app.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    try:
        args = build_parser(command).parse_args(argv[1:] if command else argv)
        handler = {"ls": cmd_ls, "pools": cmd_pools}.get(command or "", cmd_console)
        return handler(args)
    except (UsageError, ConfigError, StorageError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `storage-console ls | head`: the reader left; not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, sqlite3.Error) as err:
        if os.environ.get("STORAGE_CONSOLE_DEBUG"):
            raise
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line, with the way to see more
        if os.environ.get("STORAGE_CONSOLE_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(err).__name__}: {err} (run with "
              "STORAGE_CONSOLE_DEBUG=1 for the traceback, and please report it)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
