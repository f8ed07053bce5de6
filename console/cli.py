"""``storage-console``: the console, and sub-commands that print text or ``--json``.

This module parses the command line and dispatches; each sub-command lives in
``console.commands``, imported only when it runs. No sub-command imports Textual (they
must start fast; only the console needs it), and ``ls``/``pools`` not even the job
engine. Every error is one line on stderr naming what failed, with exit status 2; never
a traceback (set ``STORAGE_CONSOLE_DEBUG=1`` to see one for a bug).

The job commands (create, resize, copy, delete, snapshot, clone, growfs, archive,
restore, job resume) submit a job to the journal the console shares, then follow it to
its end with a progress bar on a terminal, plain lines otherwise; Ctrl-C cancels the
job. A job that failed or was cancelled exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.contract import CLONE_STRATEGIES, StorageError
from console.commands import PROG, UsageError
from console.commands.places import VOL_HELP, load_targets
from console.config import ConfigError, cache_path

if TYPE_CHECKING:
    from console.cache import Cache

# command -> (module of console.commands, handler)
HANDLERS: dict[str, tuple[str, str]] = {
    "ls": ("listing", "cmd_ls"), "pools": ("listing", "cmd_pools"),
    "create": ("volumes", "cmd_create"), "resize": ("volumes", "cmd_resize"),
    "copy": ("volumes", "cmd_copy"), "delete": ("volumes", "cmd_delete"),
    "snapshot": ("volumes", "cmd_snapshot"), "clone": ("volumes", "cmd_clone"),
    "growfs": ("volumes", "cmd_growfs"),
    "archive": ("archives", "cmd_archive"), "restore": ("archives", "cmd_restore"),
    "jobs": ("jobs", "cmd_jobs"), "job": ("jobs", "cmd_job"),
    "audit": ("audit", "cmd_audit"), "hosts": ("hosts", "cmd_hosts"),
    "pool": ("libvirt_pools", "cmd_pool"),
    "check": ("checking", "cmd_check"), "fix": ("fixes", "cmd_fix"),
}
JOB_COMMANDS = ("create", "resize", "copy", "delete", "snapshot", "clone", "growfs",
                "archive", "restore", "jobs", "job")
# Job commands whose job leaves volumes written: checked after, and fixed (auto_fix).
AUTO_FIX_COMMANDS = ("create", "resize", "copy", "snapshot", "clone", "growfs", "restore",
                     "job")
SUBCOMMANDS = tuple(HANDLERS)
MONITOR_REFRESH = 30.0  # seconds between refreshes in --monitor, unless --refresh
FORMATS = ("raw", "qcow2")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other error
        raise UsageError(f"{message} (see {self.prog} --help)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="config file (default: the XDG config dir's config.toml)")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser
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
    elif command == "check":
        p = _Parser(prog=f"{PROG} check",
                    description="Check volumes and pools; list what is wrong and the fixes "
                                "that would mend it. Exit status 0: nothing broken, 1: "
                                "something broken, 2: something could not be checked.")
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a directory, HOST:POOL, HOST:POOL/NAME, a volume file or a host name "
                            "(default: everything)")
        p.add_argument("--json", action="store_true",
                       help='print {"volumes": [...], "findings": [...], "fixes": [...]}')
        p.add_argument("--quick", action="store_true",
                       help="only what the scan finds: no qemu-img check, no zero count")
    elif command == "audit":
        p = _Parser(prog=f"{PROG} audit",
                    description="Commands run on hosts (the audit log), newest first.")
        p.add_argument("--host", metavar="H", help="only the commands run on host H")
        p.add_argument("--limit", type=int, default=50, metavar="N",
                       help="at most N entries (default 50)")
        p.add_argument("--json", action="store_true", help="print a JSON array")
    elif command == "hosts":
        p = _Parser(prog=f"{PROG} hosts",
                    description="Hosts and their state; add, remove, or trust one.")
        p.add_argument("action", nargs="?", choices=("list", "add", "remove", "trust"),
                       help="list (default): connect each host and show its state; add "
                            "NAME URI / remove NAME: edit the config; trust NAME: record "
                            "the host's SSH key after showing its fingerprint")
        p.add_argument("name", nargs="?", metavar="NAME")
        p.add_argument("uri", nargs="?", metavar="URI",
                       help="local, ssh://user@host:port, or a libvirt URI "
                            "(qemu:///system, qemu+ssh://user@host/system)")
        p.add_argument("--json", action="store_true", help="print a JSON array")
    elif command == "fix":
        from console.commands.fixes import add_arguments as fix_arguments

        p = _Parser(prog=f"{PROG} fix",
                    description="Run fixes 'check' proposes, each as a job.")
        fix_arguments(p)
    elif command == "pool":
        from console.commands.libvirt_pools import add_arguments

        p = _Parser(prog=f"{PROG} pool",
                    description="A libvirt host's pools: define, build, start, stop, "
                                "undefine, delete, autostart, info, xml.")
        add_arguments(p)
    elif command in JOB_COMMANDS:
        p = job_parser(command)
    else:
        p = _Parser(prog=PROG, description="A terminal console for virtualization storage. "
                    f"Sub-commands: {', '.join(SUBCOMMANDS)} (see '{PROG} ls --help').")
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a directory (an ad-hoc pool, selected at start) or HOST:POOL")
        p.add_argument("--read-only", action="store_true",
                       help="nothing can change storage (enforced below the UI)")
        p.add_argument("--no-refresh", action="store_true",
                       help="paint from the cache only; refresh with r")
        p.add_argument("--monitor", action="store_true",
                       help="a screen for watching: read-only (as --read-only), alerts "
                            "and events shown, every pool refreshed every "
                            f"{MONITOR_REFRESH:g}s unless --refresh says otherwise")
        p.add_argument("--refresh", type=_seconds, metavar="N",
                       help="refresh every pool every N seconds")
        p.add_argument("--theme", metavar="NAME",
                       help="storage-dark, storage-light, storage-high-contrast, "
                            "storage-mono or a user theme (default: the one last picked; "
                            "storage-mono when NO_COLOR is set)")
        p.add_argument("--cache", type=Path, metavar="FILE",
                       help=f"cache file (default: {cache_path()})")
        p.add_argument("--trust-host", action="append", default=[], metavar="NAME",
                       help="trust host NAME's SSH key as it is now (its fingerprint is "
                            "printed; a changed key is still refused)")
    if command is not None:  # accepted everywhere; the job layer refuses what mutates
        p.add_argument("--read-only", action="store_true",
                       help="nothing can change storage (enforced by the job layer)")
    _common(p)
    return p


def job_parser(command: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser
    if command == "create":
        p = _Parser(prog=f"{PROG} create", description="Create a volume, as a job.")
        p.add_argument("dest", metavar="DEST", help=VOL_HELP + "; the new volume")
        p.add_argument("--size", metavar="SIZE",
                       help="virtual size: 10G, 512M, 1.5T (binary units); default with "
                            "--backing: the backing's")
        p.add_argument("--format", choices=FORMATS, default="qcow2",
                       help="image format (default qcow2)")
        p.add_argument("--backing", metavar="VOL",
                       help="make a qcow2 overlay on VOL (a volume of DEST's pool: its "
                            "name, or VOL as above)")
        p.add_argument("--preallocation", choices=("falloc", "full"),
                       help="reserve the blocks (falloc: reading as zeroes) or write "
                            "zeroes (full); default: sparse")
        p.add_argument("--zero", action="store_true",
                       help="with --preallocation: write the zeroes for real (falloc "
                            "becomes full)")
    elif command == "resize":
        p = _Parser(prog=f"{PROG} resize", description="Resize a volume, as a job.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
        p.add_argument("size", metavar="SIZE",
                       help="the new virtual size (10G), or +SIZE to grow by that much")
        p.add_argument("--shrink", action="store_true",
                       help="allow a smaller size (cuts off data; never a file system)")
    elif command == "copy":
        p = _Parser(prog=f"{PROG} copy",
                    description="Copy a volume (flattening its chain), as a job.")
        p.add_argument("source", metavar="SRC", help=VOL_HELP)
        p.add_argument("dest", metavar="DEST",
                       help="as SRC, on the same host; a directory or HOST:POOL/ keeps the "
                            "source's name")
        p.add_argument("--format", metavar="F",
                       help="the copy's format: raw, qcow2, ... (default: the source's)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing DEST (atomically, once the copy is whole)")
        p.add_argument("--base", metavar="VOL",
                       help="incremental: a volume of DEST's pool identical to one of "
                            "SRC's bases (checked first); only the difference is copied, "
                            "and the copy is a qcow2 overlay on it")
        p.add_argument("--strategy", choices=CLONE_STRATEGIES,
                       help="space: the least space; holes stay holes, and a read-only "
                            "snapshot copied within its pool (as qcow2) becomes a qcow2 "
                            "overlay on it, which then depends on it. performance: a full "
                            "standalone copy with every byte preallocated (falloc; raw "
                            "or qcow2), so the guest never waits for allocation. Default: "
                            "a sparse standalone copy")
    elif command == "delete":
        p = _Parser(prog=f"{PROG} delete", description="Delete a volume, as a job.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
        p.add_argument("--wipe", choices=("zero", "random"),
                       help="overwrite the allocated data before unlinking")
        p.add_argument("--with-dependants", action="store_true",
                       help="delete the volumes based on VOL too (leaves first)")
        p.add_argument("--yes-i-am-sure-it-holds-data", dest="sure", action="store_true",
                       help="delete a volume that holds data without typing its name")
    elif command == "snapshot":
        p = _Parser(prog=f"{PROG} snapshot",
                    description="Snapshot a disk, as a job: the disk keeps its name and "
                                "becomes a qcow2 overlay on the read-only snapshot.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
        p.add_argument("--name", metavar="N",
                       help="the snapshot's name in VOL's pool (default: "
                            "VOL.snap-<UTC time>)")
    elif command == "clone":
        p = _Parser(prog=f"{PROG} clone",
                    description="A new disk from a snapshot, as a job.")
        p.add_argument("snapshot", metavar="SNAP", help=VOL_HELP)
        p.add_argument("dest", metavar="DEST",
                       help="as SNAP, on the same host; a directory or HOST:POOL/ keeps "
                            "the snapshot's name")
        p.add_argument("--strategy", choices=CLONE_STRATEGIES, default="space",
                       help="space: a qcow2 overlay on SNAP (default); performance: a "
                            "full standalone copy")
        p.add_argument("--format", metavar="F",
                       help="with --strategy performance: the copy's format (default: "
                            "the snapshot's)")
    elif command == "growfs":
        p = _Parser(prog=f"{PROG} growfs",
                    description="Grow the ext2/3/4 file system of a raw volume to fill "
                                "it, as a job.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
    elif command == "archive":
        p = _Parser(prog=f"{PROG} archive",
                    description="Archive a volume's data (flattened, raw) with zstd, as "
                                "a job; a checksum sidecar DEST.json goes beside it.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
        p.add_argument("dest", metavar="DEST",
                       help="the archive: a file path on VOL's host, or HOST:POOL/NAME; "
                            "a directory takes VOL's name + .zst")
        p.add_argument("--level", type=int, default=1, metavar="N",
                       help="zstd level, 1..19 (default 1)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    elif command == "restore":
        p = _Parser(prog=f"{PROG} restore",
                    description="Restore an archive (checked against its sidecar) into a "
                                "volume, as a job.")
        p.add_argument("archive", metavar="ARCHIVE",
                       help="the archive: a file path, or HOST:POOL/NAME")
        p.add_argument("dest", metavar="DEST",
                       help=VOL_HELP + "; a directory takes the archive's name without "
                            ".zst")
        p.add_argument("--format", choices=FORMATS,
                       help="the new volume's format (default raw)")
        p.add_argument("--into-existing", action="store_true",
                       help="write into an existing DEST at least as large, keeping its "
                            "format")
    elif command == "jobs":
        p = _Parser(prog=f"{PROG} jobs", description="Recent jobs, newest first.")
        p.add_argument("--all", action="store_true", help="every job in the journal")
    else:
        p = _Parser(prog=f"{PROG} job", description="Act on one job.")
        p.add_argument("action", choices=("cancel", "resume", "rollback"),
                       help="cancel a pending or running job; resume or roll back an "
                            "interrupted or failed one")
        p.add_argument("job_id", type=int, metavar="ID")
    p.add_argument("--json", action="store_true",
                   help="print the job record(s) as JSON" if command in ("jobs", "job")
                   else "print the final job record as JSON (no progress)")
    if command in AUTO_FIX_COMMANDS:
        p.add_argument("--no-auto-fix", action="store_true",
                       help="do not run the low-risk fix a check of the result proposes "
                            "(the config's [jobs] auto_fix, on by default)")
    return p


def _open_cache(args: argparse.Namespace) -> Cache:
    from console.cache import Cache

    cache = Cache(args.cache or cache_path())
    if cache.warning:
        print(f"{PROG}: warning: {cache.warning}", file=sys.stderr)
    return cache


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text}: give between 1 and 86400 seconds")
    return value


def watching(args: argparse.Namespace) -> tuple[bool, float | None]:
    """``(read_only, refresh_every)`` of the console: --monitor implies --read-only and a
    refresh every ``MONITOR_REFRESH`` seconds."""
    read_only = bool(args.read_only or args.monitor)
    refresh: float | None = args.refresh
    if refresh is None and args.monitor:
        refresh = MONITOR_REFRESH
    return read_only, refresh


def cmd_console(args: argparse.Namespace) -> int:
    from console.audit import AuditLog
    from console.config import archive_dir, journal_path
    from console.inventory import Inventory

    config = load_targets(args)
    if args.trust_host:
        from console.commands.hosts import trust

        for name in args.trust_host:
            print(trust(config, name), file=sys.stderr)
    cache = _open_cache(args)
    read_only, refresh_every = watching(args)
    inventory = Inventory(config, cache, read_only=read_only,
                          audit=AuditLog(journal_path()))
    if not read_only:  # the archive dialog's default directory
        archive_dir().mkdir(parents=True, exist_ok=True)
    from console.jobs.journal import Journal
    from console.jobs.runner import Runner

    runner = Runner(Journal(journal_path()), inventory)
    from console.ui.app import StorageConsoleApp  # Textual: only for the console
    from console.ui.theme_choice import UnknownTheme

    try:
        app = StorageConsoleApp(inventory, runner=runner, select=config.selected,
                                refresh_on_start=not args.no_refresh, monitor=args.monitor,
                                refresh_every=refresh_every, theme=args.theme)
    except UnknownTheme as err:
        runner.close(cancel=True)
        raise UsageError(f"--theme: {err}") from None
    try:
        app.run()
    finally:
        # Jobs still running are cancelled: each removes its partial output (quitting
        # asked first). They would be marked interrupted on the next start otherwise.
        runner.close(cancel=True)
    return 0


def handler(command: str | None) -> Callable[[argparse.Namespace], int]:
    """The command's handler, importing only its module."""
    if command is None:
        return cmd_console
    module, name = HANDLERS[command]
    found: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"console.commands.{module}"), name)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    try:
        args = build_parser(command).parse_args(argv[1:] if command else argv)
        return handler(command)(args)
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
