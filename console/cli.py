"""``storage-console``: the console, and sub-commands that print text or ``--json``.

No sub-command imports Textual (they must start fast; only the console needs it).
Every error is one line on stderr naming what failed, with exit status 2; never a
traceback (set ``STORAGE_CONSOLE_DEBUG=1`` to see one for a bug).

The job commands (create, resize, copy, delete, job resume) submit a job to the journal
the console shares, then follow it to its end with a progress bar on a terminal, plain
lines otherwise; Ctrl-C cancels the job. A job that failed or was cancelled exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.contract import StorageError
from backends.model import Health, Pool, PoolScan, Volume
from console.config import Config, ConfigError, cache_path, journal_path
from console.jobs.journal import ACTIVE, JobRecord, JobState
from console.units import format_size, parse_size

if TYPE_CHECKING:
    from console.cache import Cache
    from console.jobs.journal import Journal
    from console.jobs.operations import Operation

PROG = "storage-console"
JOB_COMMANDS = ("create", "resize", "copy", "delete", "jobs", "job")
SUBCOMMANDS = ("ls", "pools", *JOB_COMMANDS)


class UsageError(Exception):
    pass


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
        p.add_argument("--cache", type=Path, metavar="FILE",
                       help=f"cache file (default: {cache_path()})")
    if command is not None:  # accepted everywhere; the job layer refuses what mutates
        p.add_argument("--read-only", action="store_true",
                       help="nothing can change storage (enforced by the job layer)")
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


# -- jobs: create, resize, copy, delete, jobs, job ---------------------------------------

VOL_HELP = "HOST:POOL/NAME, or a file path (its directory is an ad-hoc pool on host local)"
FOLLOW_POLL = 0.2  # seconds between looks at the job while following it


def job_parser(command: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser
    if command == "create":
        p = _Parser(prog=f"{PROG} create", description="Create a volume, as a job.")
        p.add_argument("dest", metavar="DEST", help=VOL_HELP + "; the new volume")
        p.add_argument("--size", metavar="SIZE",
                       help="virtual size: 10G, 512M, 1.5T (binary units); default with "
                            "--backing: the backing's")
        p.add_argument("--format", choices=("raw", "qcow2"), default="qcow2",
                       help="image format (default qcow2)")
        p.add_argument("--backing", metavar="VOL",
                       help="make a qcow2 overlay on VOL (a volume of DEST's pool: its "
                            "name, or VOL as above)")
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
    elif command == "delete":
        p = _Parser(prog=f"{PROG} delete", description="Delete a volume, as a job.")
        p.add_argument("volume", metavar="VOL", help=VOL_HELP)
        p.add_argument("--yes-i-am-sure-it-holds-data", dest="sure", action="store_true",
                       help="delete a volume that holds data without typing its name")
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
    return p


def job_record(job: JobRecord) -> dict[str, Any]:
    record = dataclasses.asdict(job)
    record["state"] = str(job.state)
    record["eta"] = job.eta
    return record


def _short_pool(pool: str) -> str:
    return _printable(os.path.basename(pool.rstrip("/")) or pool)


def job_title(job: JobRecord) -> str:
    """``copy a.raw → b.qcow2``: what a job does, in a few words."""
    params = job.params
    name = _printable(job.volume)
    if job.kind == "copy":
        dest_pool = params.get("dest_pool") or job.pool
        dest = _printable(str(params.get("dest_name", "")))
        where = f" in {_short_pool(dest_pool)}" if dest_pool != job.pool else ""
        return f"copy {name} → {dest}{where}"
    if job.kind == "resize":
        return f"resize {name} to {format_size(int(params.get('capacity', 0)))}"
    return f"{job.kind} {name}"


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


def _speed_text(job: JobRecord) -> str:
    return f"{format_size(int(job.throughput))}/s" if job.throughput > 0 else "-"


def _percent_text(job: JobRecord) -> str:
    return f"{job.percent:.0f}%" if job.percent >= 0 else "-"


def _is_address(spec: str) -> bool:
    """``HOST:POOL/NAME`` rather than a path: a colon before any slash, not a file."""
    host, sep, _ = spec.partition(":")
    return bool(sep and host and "/" not in host and not os.path.exists(spec))


@dataclasses.dataclass(frozen=True)
class Place:
    host: str
    pool: str
    name: str


def _place(config: Config, spec: str, *, what: str,
           default_name: str | None = None) -> tuple[Config, Place]:
    """Where ``spec`` points: a configured pool, or a path's directory as an ad-hoc pool
    (added to the config that is returned). An empty name takes ``default_name``."""
    if _is_address(spec):
        host, _, rest = spec.partition(":")
        pool, _, name = rest.rpartition("/")
        try:
            hc = config.host(host)
        except KeyError:
            raise ConfigError(f"{what} {spec}: no host {host!r} in the config") from None
        if not any(p.name == pool for p in hc.pools):
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


def _job_config(args: argparse.Namespace, specs: Sequence[str]) -> Config:
    if any(_is_address(s) for s in specs):  # a configured pool: libvirt's pools count
        config = Config.load_default(args.config)
        config.create_embedded_pool()
        return config
    return Config.load(args.config)


def _with_job_pools(config: Config, job: JobRecord) -> Config:
    """Add the directories of an ad-hoc job's pools (named by their paths), so the job
    can be resumed or rolled back from another process."""
    for pool in {job.pool, str(job.params.get("dest_pool") or job.pool)}:
        try:
            config.host(job.host)
            known = any(p.name == pool for p in config.host(job.host).pools)
        except KeyError:
            known = False
        if not known:
            if job.host != "local" or not os.path.isabs(pool) or not os.path.isdir(pool):
                raise ConfigError(f"job {job.id}: its pool {job.host}:{pool} is not in the "
                                  "config (or its directory is gone)")
            config = config.with_targets([pool])
    return config


class Engine:
    """The runner over the shared journal, and the updates its jobs post."""

    def __init__(self, config: Config, *, read_only: bool) -> None:
        from console.cache import Cache
        from console.inventory import Inventory
        from console.jobs.journal import Journal
        from console.jobs.runner import Runner

        # SimpleQueue: its put may be called from the SIGINT handler (reentrant).
        self.updates: queue.SimpleQueue[JobRecord | None] = queue.SimpleQueue()
        # A cache of its own in memory: the console's is the console's to write.
        self.inventory = Inventory(config, Cache(None), read_only=read_only)
        self.runner = Runner(Journal(journal_path()), self.inventory,
                             on_update=self.updates.put)
        for job in self.runner.recover():
            print(f"{PROG}: job {job.id} ({job_title(job)}) was interrupted: "
                  f"`{PROG} job resume {job.id}` or `{PROG} job rollback {job.id}`",
                  file=sys.stderr)

    @property
    def journal(self) -> Journal:
        return self.runner.journal

    def close(self) -> None:
        self.runner.close(cancel=True)


def _engine(args: argparse.Namespace, config: Config) -> Engine:
    return Engine(config, read_only=args.read_only)


class PlainProgress:
    """Progress as plain lines (not a terminal): stage changes and every 10%."""

    def __init__(self, job: JobRecord, *, quiet: bool) -> None:
        self.quiet = quiet
        self.last: tuple[int, str, int] = (0, "", -1)
        self.say(f"job {job.id}: {job_title(job)}")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def update(self, job: JobRecord) -> None:
        if job.state != JobState.RUNNING or not job.stage_label:
            return
        step = int(job.percent // 10) if job.percent >= 0 else -1
        stage = f"job {job.id}: stage {job.stage}/{job.stages} {job.stage_label}"
        if (job.stage, job.stage_label) != self.last[:2]:
            self.last = (job.stage, job.stage_label, step)
            self.say(stage)
        elif step > self.last[2]:
            self.last = (job.stage, job.stage_label, step)
            self.say(f"{stage} {10 * step}% {_speed_text(job)}".rstrip())

    def note(self, text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    def close(self, job: JobRecord) -> None:
        if job.state == JobState.DONE:
            self.say(f"job {job.id}: done")


class TerminalProgress(PlainProgress):
    """A rich progress bar: stage X/Y, percent, throughput, ETA."""

    def __init__(self, job: JobRecord) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("job {task.fields[id]}"),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[stage]}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[percent]:>4}"),
            TextColumn("{task.fields[speed]:>8}"),
            TextColumn("ETA {task.fields[eta]}"),
            transient=False,
        )
        self.task = self.progress.add_task(job_title(job), total=None, id=job.id,
                                           stage="waiting", percent="", speed="", eta="-")
        self.progress.start()

    def update(self, job: JobRecord) -> None:
        stage = f"{job.stage}/{job.stages} {job.stage_label}".strip() \
            if job.state == JobState.RUNNING else str(job.state)
        percent = job.percent if job.percent >= 0 else None
        self.progress.update(self.task, total=100 if percent is not None else None,
                             completed=percent or 0, stage=stage,
                             percent=_percent_text(job), speed=_speed_text(job),
                             eta=_eta_text(job.eta))

    def note(self, text: str) -> None:
        self.progress.console.print(f"{PROG}: {text}", style="yellow", highlight=False)

    def close(self, job: JobRecord) -> None:
        self.update(job)
        self.progress.update(self.task, stage=str(job.state))
        self.progress.stop()


def follow(engine: Engine, job: JobRecord, *, json_out: bool) -> JobRecord:
    """Show the job's progress until it ends; Ctrl-C cancels it (and waits for it to
    stop: it removes its partial output)."""
    if sys.stdout.isatty() and not json_out:
        display: PlainProgress = TerminalProgress(job)
    else:
        display = PlainProgress(job, quiet=json_out)
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        engine.updates.put(None)  # wakes the loop at once

    previous = signal.signal(signal.SIGINT, on_sigint)
    cancelled = False
    next_look = 0.0
    try:
        while True:
            try:
                update = engine.updates.get(timeout=FOLLOW_POLL)
            except queue.Empty:
                update = None
            if update is not None and update.id == job.id:
                display.update(update)
                if update.state.finished:
                    break
            if interrupted.is_set() and not cancelled:
                cancelled = True
                display.note(f"cancelling job {job.id}; it removes what it wrote…")
                engine.runner.cancel(job.id)
            if time.monotonic() >= next_look:  # what other processes did to the job
                next_look = time.monotonic() + 0.5
                current = engine.journal.get(job.id)
                if current.state.finished:
                    break
                # A cancel from another process reaches the runner through the journal.
    finally:
        signal.signal(signal.SIGINT, previous)
    final = engine.runner.wait(job.id)
    display.close(final)
    return final


def _finish(final: JobRecord, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(job_record(final)))
    if final.state == JobState.DONE:
        return 0
    if final.state == JobState.ABORTED:
        why = "" if final.error in (None, "cancelled") else f": {final.error}"
        print(f"{PROG}: job {final.id} ({job_title(final)}) was cancelled{why}; what it "
              "wrote was removed", file=sys.stderr)
    else:
        print(f"{PROG}: job {final.id} ({job_title(final)}) {final.state}: {final.error}",
              file=sys.stderr)
    return 1


def _run_op(args: argparse.Namespace, engine: Engine, op: Operation) -> int:
    job = engine.runner.submit(op)
    return _finish(follow(engine, job, json_out=args.json), args)


def cmd_create(args: argparse.Namespace) -> int:
    from console.jobs.operations import CreateVolume

    specs = [args.dest] + ([args.backing] if args.backing else [])
    config, dest = _place(_job_config(args, specs), args.dest, what="DEST")
    backing = None
    if args.backing:
        if "/" in args.backing or _is_address(args.backing):
            config, base = _place(config, args.backing, what="--backing")
            if (base.host, base.pool) != (dest.host, dest.pool):
                raise UsageError(f"--backing {args.backing}: the backing volume must be in "
                                 "DEST's pool")
            backing = base.name
        else:
            backing = args.backing
    if args.size is None and backing is None:
        raise UsageError("--size is needed (unless --backing gives it)")
    capacity = _size(args.size) if args.size is not None else 0
    if backing is not None and args.format != "qcow2":
        raise UsageError("--backing makes a qcow2 overlay: drop --format raw")
    with _closing(_engine(args, config)) as engine:
        return _run_op(args, engine, CreateVolume(dest.host, dest.pool, dest.name,
                                                  format=args.format, capacity=capacity,
                                                  backing=backing))


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as err:
        raise UsageError(f"size: {err}") from None
    if size <= 0:
        raise UsageError("size: must be larger than 0")
    return size


def cmd_resize(args: argparse.Namespace) -> int:
    from console.jobs.operations import ResizeVolume

    config, vol = _place(_job_config(args, [args.volume]), args.volume, what="VOL")
    with _closing(_engine(args, config)) as engine:
        if args.size.startswith("+"):
            current = engine.inventory.probe_volume(vol.host, vol.pool, vol.name)
            capacity = current.capacity + _size(args.size[1:])
        else:
            capacity = _size(args.size)
        return _run_op(args, engine, ResizeVolume(vol.host, vol.pool, vol.name,
                                                  capacity=capacity, shrink=args.shrink))


def cmd_copy(args: argparse.Namespace) -> int:
    from console.jobs.operations import CopyVolume

    config = _job_config(args, [args.source, args.dest])
    config, src = _place(config, args.source, what="SRC")
    config, dest = _place(config, args.dest, what="DEST", default_name=src.name)
    if dest.host != src.host:
        raise UsageError(f"DEST {args.dest}: a copy stays on one host ({src.host})")
    with _closing(_engine(args, config)) as engine:
        return _run_op(args, engine, CopyVolume(
            src.host, src.pool, src.name, dest_pool=dest.pool, dest_name=dest.name,
            format=args.format, overwrite=args.overwrite))


def cmd_delete(args: argparse.Namespace) -> int:
    from console.jobs.operations import DeleteVolume

    config, vol = _place(_job_config(args, [args.volume]), args.volume, what="VOL")
    with _closing(_engine(args, config)) as engine:
        typed = None
        if not args.read_only:  # read-only: the job layer refuses it, below
            plan = engine.inventory.plan_delete(vol.host, vol.pool, vol.name)
            if plan.refused:
                raise StorageError(f"not deleted: {plan.refused}", host=vol.host,
                                   pool=vol.pool, volume=vol.name)
            if plan.holds_data:
                typed = vol.name if args.sure else _typed_name(vol)
        return _run_op(args, engine, DeleteVolume(vol.host, vol.pool, vol.name,
                                                  typed_name=typed))


def _typed_name(vol: Place) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"volume {vol.name!r} holds data: pass "
                         "--yes-i-am-sure-it-holds-data (or run on a terminal and type its "
                         "name)")
    print(f"volume {_printable(vol.name)!r} in {vol.host}:{_printable(vol.pool)} holds data. "
          "Type its name to delete it: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline().rstrip("\n")
    if typed != vol.name:
        raise UsageError("not deleted: the name typed does not match")
    return typed


def cmd_jobs(args: argparse.Namespace) -> int:
    with _closing(_engine(args, Config.load(args.config))) as engine:
        journal = engine.journal
        if args.all:
            jobs = journal.jobs(limit=-1)
        else:
            seen = {j.id: j for j in journal.jobs(limit=20)}
            for j in journal.jobs(states=(*ACTIVE, JobState.INTERRUPTED)):
                seen.setdefault(j.id, j)
            jobs = sorted(seen.values(), key=lambda j: j.id, reverse=True)
    if args.json:
        print(json.dumps([job_record(j) for j in jobs], indent=None))
        return 0
    if jobs:
        rows = [("ID", "STATE", "KIND", "VOLUME", "STAGE", "PCT", "SPEED", "WHO", "ERROR")]
        rows += [(str(j.id), str(j.state), j.kind, job_title(j).partition(" ")[2],
                  f"{j.stage}/{j.stages} {j.stage_label}".strip(), _percent_text(j),
                  _speed_text(j), j.who, _printable(j.error or "")) for j in jobs]
        print(_table(rows, {0, 5, 6}))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    from console.jobs.journal import Journal

    try:
        job = Journal(journal_path()).get(args.job_id)
    except KeyError:
        raise UsageError(f"no job {args.job_id} in the journal") from None
    if args.read_only:
        raise StorageError(f"refused to {args.action} job {job.id}: read-only mode")
    if args.action != "cancel":
        config = _with_job_pools(config, job)
    with _closing(_engine(args, config)) as engine:
        if args.action == "resume":
            job = engine.runner.resume(job.id)
            return _finish(follow(engine, job, json_out=args.json), args)
        if args.action == "rollback":
            final = engine.runner.rollback(job.id)
            if args.json:
                print(json.dumps(job_record(final)))
            else:
                print(f"job {final.id}: rolled back ({job_title(final)})")
            return 0
        return _cancel(args, engine, job.id)


def _cancel(args: argparse.Namespace, engine: Engine, job_id: int) -> int:
    job = engine.journal.get(job_id)
    if job.state not in ACTIVE:
        raise UsageError(f"job {job_id} is {job.state}: only pending or running jobs can be "
                         "cancelled")
    engine.runner.cancel(job_id)
    deadline = time.monotonic() + 10  # the process running it stops it within a second
    while time.monotonic() < deadline:
        job = engine.journal.get(job_id)
        if job.state.finished or job.state == JobState.INTERRUPTED:
            break
        time.sleep(0.1)
    if args.json:
        print(json.dumps(job_record(job)))
    if job.state == JobState.ABORTED:
        if not args.json:
            print(f"job {job_id}: cancelled ({job_title(job)})")
        return 0
    print(f"{PROG}: job {job_id} is {job.state} (asked to stop; its process "
          f"{job.owner or '(none)'} has not stopped it)", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _closing(engine: Engine) -> Iterator[Engine]:
    try:
        yield engine
    finally:
        engine.close()


JOB_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": cmd_create, "resize": cmd_resize, "copy": cmd_copy, "delete": cmd_delete,
    "jobs": cmd_jobs, "job": cmd_job,
}


def cmd_console(args: argparse.Namespace) -> int:
    from console.inventory import Inventory

    config = _load(args)
    cache = _open_cache(args)
    inventory = Inventory(config, cache, read_only=args.read_only)
    from console.jobs.journal import Journal
    from console.jobs.runner import Runner

    runner = Runner(Journal(journal_path()), inventory)
    from console.ui.app import StorageConsoleApp  # Textual: only for the console

    app = StorageConsoleApp(inventory, runner=runner, select=config.selected,
                            refresh_on_start=not args.no_refresh)
    try:
        app.run()
    finally:
        # Jobs still running are cancelled: each removes its partial output (quitting
        # asked first). They would be marked interrupted on the next start otherwise.
        runner.close(cancel=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    try:
        args = build_parser(command).parse_args(argv[1:] if command else argv)
        handler = {"ls": cmd_ls, "pools": cmd_pools, **JOB_HANDLERS}.get(command or "",
                                                                       cmd_console)
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
