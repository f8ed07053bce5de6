"""Listing a 10,000-volume directory pool: ``storage-console ls DIR --json`` vs libvirt.

Same directory, three ways:

- ours: ``storage-console ls DIR --json > /dev/null`` as a whole process (start-up,
  scan, chains, health, SQLite cache write, JSON), median of several runs, with the XDG
  dirs pointed at a scratch dir so the user's cache and config are never touched;
- libvirt: ``virsh pool-refresh`` + ``virsh vol-list --details`` (two processes, summed)
  on a transient dir pool through libvirtd (started here if none is running, and
  stopped again at the end);
- ``qemu-img info --output=json -f FMT`` per file, on a sample, extrapolated.

Target: ours takes at most 0.2x libvirt's time.

The dataset (half raw, half qcow2, a third of all volumes qcow2 overlays with a
declared backing format, some of them chained two or more deep) is generated once from
a few ``qemu-img create`` templates cloned byte for byte (sparse), and reused while its
marker file matches the parameters. Run directly for more options::

    .venv/bin/python benchmarks/bench_listing.py --help
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # run as a script: sys.path is set just above
    BenchError,
    data_root,
    describe_runs,
    heading,
    median,
    note,
    print_table,
    python_exe,
    quick_requested,
    record_target,
    require_tool,
    run,
    storage_console_exe,
)

BENCH = "listing"
TARGET_RATIO = 0.20  # ours / libvirt
GENERATOR_VERSION = 1  # bump when the dataset layout changes: old caches are rebuilt
GIB = 1 << 30
SIZES_GIB = (1, 2, 4, 8, 10, 16, 20, 32, 40, 50, 64, 100)
NAME_DIGITS = 5
MAX_DEPTH = 4  # backing links below an overlay, at most
URI = "qemu:///system"

FULL = {"count": 10_000, "runs": 5, "libvirt_runs": 3, "sample": 300, "verify": 30}
QUICK = {"count": 1_000, "runs": 3, "libvirt_runs": 2, "sample": 50, "verify": 10}


# -- the dataset -------------------------------------------------------------------


@dataclass(frozen=True)
class Vol:
    name: str
    format: str  # "raw" | "qcow2"
    size: int
    backing: str | None = None  # a file name in the same directory
    backing_format: str | None = None
    depth: int = 0  # links below this volume
    data: bool = False  # raw only: 64 KiB written (allocation > 0)


@dataclass
class Dataset:
    root: Path  # holds the marker, the manifest and the pool directory
    pool: Path
    volumes: list[Vol]
    reused: bool = False
    seconds: float = 0.0

    @property
    def backed(self) -> int:
        return sum(1 for v in self.volumes if v.backing)

    def by_name(self) -> dict[str, Vol]:
        return {v.name: v for v in self.volumes}


def vol_name(index: int, fmt: str) -> str:
    return f"vol-{index:0{NAME_DIGITS}d}.{fmt}"


def plan_volumes(count: int, seed: int) -> list[Vol]:
    """Half raw, the rest qcow2; a third of all are qcow2 overlays (listed in creation
    order: a backing always comes before the volumes based on it)."""
    if not 3 <= count < 10**NAME_DIGITS:
        raise BenchError(f"--count must be between 3 and {10**NAME_DIGITS - 1}")
    rng = random.Random(seed)
    n_raw = count // 2
    n_backed = count // 3
    n_plain = count - n_raw - n_backed
    kinds = ["raw"] * n_raw + ["qcow2"] * n_plain
    rng.shuffle(kinds)
    indices = list(range(count))
    rng.shuffle(indices)  # names are not grouped by kind
    volumes: list[Vol] = []
    for kind in kinds:
        i = indices[len(volumes)]
        size = rng.choice(SIZES_GIB) * GIB
        volumes.append(Vol(vol_name(i, kind), kind, size, data=kind == "raw"
                           and rng.random() < 0.25))
    bases = list(volumes)
    overlays: list[Vol] = []
    for _ in range(n_backed):
        i = indices[len(volumes)]
        deep = [o for o in overlays[-500:] if o.depth < MAX_DEPTH]
        base = rng.choice(deep) if deep and rng.random() < 0.2 else rng.choice(bases)
        vol = Vol(vol_name(i, "qcow2"), "qcow2", base.size, backing=base.name,
                  backing_format=base.format, depth=base.depth + 1)
        volumes.append(vol)
        overlays.append(vol)
    return volumes


@dataclass
class Template:
    """A qcow2 file from qemu-img as sparse chunks, and where its backing digits are."""

    length: int
    chunks: list[tuple[int, bytes]]
    digits_chunk: int | None = None  # index into chunks
    digits_at: int = 0  # offset inside that chunk

    @classmethod
    def load(cls, path: Path, backing_name: str | None) -> Template:
        data = path.read_bytes()
        block = 4096
        chunks: list[tuple[int, bytes]] = []
        start = None
        for off in range(0, len(data) + block, block):
            zero = off >= len(data) or not data[off:off + block].strip(b"\0")
            if not zero and start is None:
                start = off
            elif zero and start is not None:
                chunks.append((start, data[start:off]))
                start = None
        template = cls(len(data), chunks)
        if backing_name is not None:
            offset, size = struct.unpack(">QI", data[8:20])
            found = data[offset:offset + size].decode()
            if found != backing_name:
                raise BenchError(f"{path}: backing name is {found!r}, expected {backing_name!r}")
            digits = offset + len("vol-")
            for n, (start_, chunk) in enumerate(chunks):
                if start_ <= digits < start_ + len(chunk):
                    template.digits_chunk, template.digits_at = n, digits - start_
            if template.digits_chunk is None:
                raise BenchError(f"{path}: backing name not found in the written blocks")
        return template

    def write(self, path: Path, backing: str | None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for n, (offset, chunk) in enumerate(self.chunks):
                if n == self.digits_chunk and backing is not None:
                    patched = bytearray(chunk)
                    digits = backing[len("vol-"):len("vol-") + NAME_DIGITS].encode()
                    patched[self.digits_at:self.digits_at + NAME_DIGITS] = digits
                    chunk = bytes(patched)
                os.pwrite(fd, chunk, offset)
            os.ftruncate(fd, self.length)
        finally:
            os.close(fd)


def make_templates(volumes: Sequence[Vol], where: Path) -> dict[tuple[str | None, int],
                                                                 Template]:
    """One qemu-img-made qcow2 per (backing format, size) the plan uses."""
    qemu_img = require_tool("qemu-img")
    where.mkdir(parents=True, exist_ok=True)
    templates: dict[tuple[str | None, int], Template] = {}
    for key in sorted({(v.backing_format, v.size) for v in volumes if v.format == "qcow2"},
                      key=lambda k: (k[0] or "", k[1])):
        backing_format, size = key
        path = where / f"t-{backing_format or 'none'}-{size}.qcow2"
        argv = [qemu_img, "create", "-q", "-f", "qcow2"]
        backing_name = None
        if backing_format:
            backing_name = vol_name(0, backing_format)
            argv += ["-u", "-b", backing_name, "-F", backing_format]
        run([*argv, str(path), str(size)], timeout=60)
        templates[key] = Template.load(path, backing_name)
    return templates


def dataset_params(count: int, seed: int) -> dict[str, Any]:
    return {"generator": GENERATOR_VERSION, "count": count, "seed": seed}


def prepare_dataset(base: Path, count: int, seed: int, *, regenerate: bool) -> Dataset:
    """Reuse ``base/listing-...`` when its marker matches; otherwise build it afresh."""
    params = dataset_params(count, seed)
    root = base / f"listing-n{count}-s{seed}-g{GENERATOR_VERSION}"
    marker = root / "complete.json"
    manifest = root / "manifest.json"
    pool = root / "pool"
    if not regenerate and marker.exists():
        try:
            if json.loads(marker.read_text()) == params:
                vols = [Vol(**v) for v in json.loads(manifest.read_text())]
                return Dataset(root, pool, vols, reused=True)
        except (OSError, ValueError, TypeError) as err:
            note(f"dataset marker unreadable ({err}): generating again")
    if root.exists():
        shutil.rmtree(root)  # our own incomplete or stale dataset
    start = time.perf_counter()
    pool.mkdir(parents=True)
    volumes = plan_volumes(count, seed)
    templates = make_templates(volumes, root / "templates")
    filler = b"\xa5" * 65536
    for v in volumes:
        path = pool / v.name
        if v.format == "raw":
            with open(path, "xb") as f:
                if v.data:
                    f.seek(1 << 20)
                    f.write(filler)
                f.truncate(v.size)
        else:
            templates[(v.backing_format, v.size)].write(path, v.backing)
    shutil.rmtree(root / "templates")
    manifest.write_text(json.dumps([asdict(v) for v in volumes]))
    marker.write_text(json.dumps(params))  # last: the dataset is complete
    return Dataset(root, pool, volumes, seconds=time.perf_counter() - start)


def verify_dataset(ds: Dataset, samples: int, seed: int) -> None:
    """The files are what the manifest says, as qemu-img sees them (a sample)."""
    qemu_img = require_tool("qemu-img")
    names = sorted(os.listdir(ds.pool))
    if len(names) != len(ds.volumes):
        raise BenchError(f"{ds.pool} holds {len(names)} entries, the manifest "
                         f"{len(ds.volumes)}: delete {ds.root} and run again")
    rng = random.Random(seed + 1)
    deepest = sorted(ds.volumes, key=lambda v: v.depth)[-3:]
    picked = rng.sample(ds.volumes, min(samples, len(ds.volumes))) + deepest
    for v in picked:
        out = run([qemu_img, "info", "--output=json", "-f", v.format, str(ds.pool / v.name)],
                  timeout=60).stdout
        info = json.loads(out)
        got = (info.get("format"), info.get("virtual-size"), info.get("backing-filename"),
               info.get("backing-filename-format"))
        want = (v.format, v.size, v.backing, v.backing_format)
        if got != want:
            raise BenchError(f"{v.name}: qemu-img says {got}, generated {want}")
    for v in deepest:
        path = str(ds.pool / v.name)
        chain = json.loads(run([qemu_img, "info", "--output=json", "--backing-chain",
                                "-f", "qcow2", path], timeout=60).stdout)
        if len(chain) != v.depth + 1:
            raise BenchError(f"{v.name}: qemu-img follows {len(chain)} images, "
                             f"generated a chain of {v.depth + 1}")
        run([qemu_img, "check", "-q", "-f", "qcow2", path], timeout=60)
    note(f"verified with qemu-img: {len(picked)} files (format, size, backing, backing "
         f"format), {len(deepest)} deepest chains (depth {deepest[-1].depth + 1}) + check")


# -- ours ---------------------------------------------------------------------------


@dataclass
class Ours:
    runs: list[float] = field(default_factory=list)
    first: float = 0.0
    empty: list[float] = field(default_factory=list)
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def seconds(self) -> float | None:
        return median(self.runs) if self.runs else None


def scratch_env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        path = scratch / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.pop("STORAGE_CONSOLE_DEBUG", None)
    return env


def check_ours(records: list[dict[str, Any]], ds: Dataset) -> tuple[list[str], str]:
    """What ours printed matches the generated dataset."""
    problems: list[str] = []
    if len(records) != len(ds.volumes):
        problems.append(f"ours listed {len(records)} volumes, generated {len(ds.volumes)}")
    backed = sum(1 for r in records if r.get("backing"))
    if backed != ds.backed:
        problems.append(f"ours found {backed} volumes with a backing, generated {ds.backed}")
    want = ds.by_name()
    wrong: collections.Counter[str] = collections.Counter()
    for r in records:
        v = want.get(r.get("name", ""))
        if v is None:
            wrong["unknown name"] += 1
            continue
        if r.get("format") != v.format:
            wrong["format"] += 1
        if r.get("capacity") != v.size:
            wrong["capacity"] += 1
        if (os.path.basename(r["backing"]) if r.get("backing") else None) != v.backing:
            wrong["backing"] += 1
        if r.get("backing") and r.get("backing_format") != v.backing_format:
            wrong["backing format"] += 1
        if len(r.get("chain") or ()) != v.depth:
            wrong["chain length"] += 1
        if r.get("chain_problem") or r.get("error"):
            wrong["chain problem or error"] += 1
    problems += [f"{n} volumes with a wrong {what}" for what, n in sorted(wrong.items())]
    health = collections.Counter(str(r.get("health")) for r in records)
    summary = (f"{len(records)} volumes, {backed} with a backing; health: "
               + ", ".join(f"{k} {n}" for k, n in sorted(health.items())))
    return problems, summary


def measure_ours(ds: Dataset, scratch: Path, runs: int) -> Ours:
    exe = storage_console_exe()
    env = scratch_env(scratch / "xdg")
    result = Ours()
    argv = [exe, "ls", str(ds.pool), "--json"]
    out_path = scratch / "ours.json"
    try:
        # First run: its output is checked against the manifest.
        with open(out_path, "w") as out:
            start = time.perf_counter()
            run(argv, timeout=900, env=env, stdout=out.fileno())
            result.first = time.perf_counter() - start
        records = json.loads(out_path.read_text())
        result.problems, result.summary = check_ours(records, ds)
        for _ in range(runs):
            start = time.perf_counter()
            run(argv, timeout=900, env=env, stdout=subprocess.DEVNULL)
            result.runs.append(time.perf_counter() - start)
        empty = scratch / "empty-pool"
        empty.mkdir(exist_ok=True)
        for _ in range(3):
            start = time.perf_counter()
            run([exe, "ls", str(empty), "--json"], timeout=120, env=env,
                stdout=subprocess.DEVNULL)
            result.empty.append(time.perf_counter() - start)
    except (BenchError, ValueError) as err:
        result.error = str(err)
    return result


def import_times(ds: Dataset, scratch: Path) -> tuple[float, list[tuple[str, float]]]:
    """Total import time (seconds) of one ``ls`` run and its biggest top-level imports."""
    env = scratch_env(scratch / "xdg")
    proc = run([python_exe(), "-X", "importtime", "-m", "console.cli", "ls", str(ds.pool),
                "--json"], timeout=900, env=env, stdout=subprocess.DEVNULL)
    total_us = 0
    top: list[tuple[str, float]] = []
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)")
    for line in proc.stderr.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        total_us += int(m.group(1))
        if len(m.group(3)) == 1:  # not nested: imported by the program itself
            top.append((m.group(4), int(m.group(2)) / 1e6))
    top.sort(key=lambda t: -t[1])
    return total_us / 1e6, top[:8]


PHASES = (  # (label, function name, path fragment): cumulative time from the profile
    ("imports (all modules)", "_find_and_load", "importlib._bootstrap"),
    ("scan the directory (scanner)", "scan_directory", "scanner"),
    ("  probe headers", "probe_open_file", "scanner"),
    ("  follow chains", "chain", "scanner"),
    ("records -> model objects", "volume_from_entry", "dir/listing.py"),
    ("health", "assess", "health"),
    ("cache write (SQLite)", "replace_pool", "cache"),
    ("JSON records", "volume_record", "cli"),
    ("JSON dump", "dump", "json"),
)


def profile_ours(ds: Dataset, scratch: Path,
                 results: Path) -> tuple[Path, Path, str, list[str]]:
    """cProfile one ``ls`` run; write the top by cumulative time to a text file."""
    env = scratch_env(scratch / "xdg")
    results.mkdir(parents=True, exist_ok=True)
    prof = results / "listing-ls.prof"
    text = results / "listing-ls-profile.txt"
    run([python_exe(), "-m", "cProfile", "-o", str(prof), "-m", "console.cli", "ls",
         str(ds.pool), "--json"], timeout=900, env=env, stdout=subprocess.DEVNULL)
    with open(text, "w") as f:
        stats = pstats.Stats(str(prof), stream=f)
        stats.strip_dirs().sort_stats("cumulative").print_stats(15)
        stats.sort_stats("tottime").print_stats(15)
    raw = pstats.Stats(str(prof))
    table: dict[tuple[str, int, str], tuple[Any, ...]] = raw.stats  # type: ignore[attr-defined]
    total: float = raw.total_tt  # type: ignore[attr-defined]
    phases = []
    for label, func, fragment in PHASES:
        cumulative = [v[3] for (path, _line, name), v in table.items()
                      if name == func and fragment in path]
        if cumulative:
            phases.append(f"{label:<30} {max(cumulative):7.3f} s")
    # The runpy / exec / import wrappers sit on top of every profile: leave them out.
    top = sorted(((k, v) for k, v in table.items()
                  if not (k[0].startswith(("<frozen", "~")) or k[2] == "<module>")),
                 key=lambda kv: -kv[1][3])
    lines = []
    for (path, line, name), (_cc, nc, tt, ct, _callers) in top[:15]:
        where = f"{os.path.basename(path)}:{line}" if line else path
        lines.append(f"{ct:7.3f} cum {tt:7.3f} own {nc:>8} calls  {name} ({where})")
    summary = "\n".join(f"    {x}" for x in lines)
    return prof, text, f"profiled run {total:.3f} s (cProfile overhead included)\n{summary}", phases


# -- libvirt -------------------------------------------------------------------------


class Libvirtd:
    """The system libvirtd: used if running, else started here and stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.virsh = require_tool("virsh")
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = logs / "libvirtd.log"
        self.pidfile = logs / "libvirtd.pid"

    def virsh_argv(self, *args: str) -> list[str]:
        return [self.virsh, "-q", "-c", URI, *args]

    def reachable(self) -> bool:
        try:
            run(self.virsh_argv("uri"), timeout=30)
        except BenchError:
            return False
        return True

    def _log_tail(self) -> str:
        parts = []
        for path in (self.logs / "libvirtd.out", self.log):
            try:
                lines = path.read_text(errors="replace").splitlines()[-30:]
            except OSError:
                continue
            if lines:
                parts.append(f"last lines of {path}:\n" + "\n".join(lines))
        return "\n".join(parts) or "(libvirtd wrote no log)"

    def start(self) -> None:
        if self.reachable():
            note(f"libvirtd is already running ({URI}): using it, leaving it running")
            return
        libvirtd = require_tool("libvirtd")
        for old in (self.log, self.logs / "libvirtd.out"):
            old.unlink(missing_ok=True)
        env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{self.log}")
        # In the foreground, as our child: we can wait for it (no zombie left behind)
        # and it goes when we stop it, whatever happens to the pid file.
        with open(self.logs / "libvirtd.out", "w") as out:
            self.proc = subprocess.Popen(
                [libvirtd, "--pid-file", str(self.pidfile)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.reachable():
            if self.proc.poll() is not None:
                raise BenchError(f"libvirtd failed to start (exit {self.proc.returncode})\n"
                                 f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"libvirtd started but {URI} does not answer after 60 s\n"
                                 f"{self._log_tail()}")
            time.sleep(0.3)
        note(f"started libvirtd (pid {self.proc.pid}, log {self.log}); stopped at the end")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            note(f"libvirtd (pid {self.proc.pid}) ignored SIGTERM for 30 s: SIGKILL")
            self.proc.kill()
            self.proc.wait(timeout=30)
        note(f"stopped libvirtd (pid {self.proc.pid})")


@contextmanager
def transient_pool(daemon: Libvirtd, target: Path) -> Iterator[tuple[str, float]]:
    """A transient dir pool on ``target``; yields its name and the seconds creating it
    took (libvirt scans the directory when it starts a pool)."""
    name = f"scbench-{os.getpid()}"
    # A pool left by an interrupted run on the same directory would refuse ours.
    listed = run(daemon.virsh_argv("pool-list", "--all", "--name"), timeout=120).stdout
    for old in (n.strip() for n in listed.splitlines()):
        if old.startswith("scbench-"):
            xml = run(daemon.virsh_argv("pool-dumpxml", old), timeout=120, check=False).stdout
            if f"<path>{target}</path>" in xml:
                note(f"destroying pool {old} left by an earlier run")
                run(daemon.virsh_argv("pool-destroy", old), timeout=600, check=False)
    start = time.perf_counter()
    run(daemon.virsh_argv("pool-create-as", name, "dir", "--target", str(target)),
        timeout=1800)
    created = time.perf_counter() - start
    try:
        yield name, created
    finally:
        proc = run(daemon.virsh_argv("pool-destroy", name), timeout=600, check=False)
        if proc.returncode != 0:
            note(f"warning: could not destroy pool {name}: {proc.stderr.strip()}")


@dataclass
class Libvirt:
    refresh: list[float] = field(default_factory=list)
    vol_list: list[float] = field(default_factory=list)
    create: float = 0.0
    listed: int = 0
    error: str | None = None

    @property
    def totals(self) -> list[float]:
        return [a + b for a, b in zip(self.refresh, self.vol_list, strict=True)]

    @property
    def seconds(self) -> float | None:
        return median(self.totals) if self.refresh else None


def measure_libvirt(ds: Dataset, logs: Path, runs: int) -> Libvirt:
    result = Libvirt()
    try:
        daemon = Libvirtd(logs)
    except BenchError as err:
        result.error = str(err)
        return result
    try:
        daemon.start()
        with transient_pool(daemon, ds.pool) as (name, created):
            result.create = created
            for _ in range(runs):
                start = time.perf_counter()
                run(daemon.virsh_argv("pool-refresh", name), timeout=1800,
                    stdout=subprocess.DEVNULL)
                middle = time.perf_counter()
                out = run(daemon.virsh_argv("vol-list", name, "--details"),
                          timeout=1800).stdout
                end = time.perf_counter()
                result.refresh.append(middle - start)
                result.vol_list.append(end - middle)
            # -q drops the header: one line per volume.
            result.listed = sum(1 for line in out.splitlines() if line.strip())
    except BenchError as err:
        result.error = str(err)
    finally:
        try:
            daemon.stop()
        except OSError as err:
            note(f"warning: stopping libvirtd: {err}")
    return result


# -- qemu-img ------------------------------------------------------------------------


def measure_qemu_img(ds: Dataset, sample: int, seed: int) -> tuple[float, int, float]:
    """Seconds for ``sample`` files, the sample size, and the extrapolation to all."""
    qemu_img = require_tool("qemu-img")
    picked = random.Random(seed + 2).sample(ds.volumes, min(sample, len(ds.volumes)))
    total = 0.0
    for v in picked:
        argv = [qemu_img, "info", "--output=json", "-f", v.format, str(ds.pool / v.name)]
        start = time.perf_counter()
        run(argv, timeout=60, stdout=subprocess.DEVNULL)
        total += time.perf_counter() - start
    return total, len(picked), total / len(picked) * len(ds.volumes)


# -- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_listing.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 volumes, fewer runs (smoke)")
    p.add_argument("--dir", help="dataset root (default: /var/tmp/storage-console-bench or "
                   "$STORAGE_CONSOLE_BENCH_DIR); reused between runs")
    p.add_argument("--count", type=int, help="volumes in the pool (default 10,000)")
    p.add_argument("--runs", type=int, help="timed runs of ours (median)")
    p.add_argument("--libvirt-runs", type=int, help="timed refresh + vol-list runs (median)")
    p.add_argument("--sample", type=int, help="files timed with qemu-img info")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--regenerate", action="store_true", help="rebuild the dataset")
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt side")
    p.add_argument("--no-profile", action="store_true", help="skip import time and cProfile")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick or quick_requested() else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def fmt_ratio(value: float | None, ours: float | None) -> str:
    if value is None or not ours:
        return "-"
    return f"{value / ours:.1f}x"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = data_root(args.dir)
    heading(f"listing: a {args.count:,}-volume directory pool")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    note(f"{os.cpu_count()} CPUs, load average {load} (timings are noisy when it is high)")
    status = 0
    try:
        root.mkdir(parents=True, exist_ok=True)
        ds = prepare_dataset(root, args.count, args.seed, regenerate=args.regenerate)
    except (BenchError, OSError) as err:
        print(f"  ERROR: cannot prepare the dataset: {err}")
        return 1
    n_raw = sum(1 for v in ds.volumes if v.format == "raw")
    depths = collections.Counter(v.depth for v in ds.volumes if v.backing)
    note(f"dataset {ds.pool}: " + ("reused" if ds.reused else
                                   f"generated in {ds.seconds:.1f} s"))
    note(f"{n_raw} raw, {len(ds.volumes) - n_raw} qcow2, {ds.backed} with a backing "
         "(chain links: " + ", ".join(f"{d}: {n}" for d, n in sorted(depths.items())) + ")")
    try:
        verify_dataset(ds, args.verify, args.seed)
    except BenchError as err:
        print(f"  ERROR: the dataset is not what was generated: {err}")
        return 1

    with tempfile.TemporaryDirectory(prefix="sc-bench-listing-") as tmp:
        scratch = Path(tmp)
        note(f"timing ours: 1 first run + {args.runs} runs ...")
        ours = measure_ours(ds, scratch, args.runs)
        if ours.error:
            print(f"  ERROR: storage-console ls failed:\n{_indent(ours.error)}")
            status = 1
        elif ours.problems:
            print("  ERROR: ours does not list what was generated:\n"
                  + "\n".join(f"    - {p}" for p in ours.problems))
            status = 1
        else:
            note(f"ours is correct: {ours.summary}")

        lv = Libvirt(error="skipped (--no-libvirt)")
        if not args.no_libvirt:
            note(f"timing libvirt: pool-create-as + {args.libvirt_runs} x "
                 "(pool-refresh + vol-list --details) ...")
            lv = measure_libvirt(ds, root / "results", args.libvirt_runs)
            if lv.error:
                print(f"  ERROR: libvirt side failed:\n{_indent(lv.error)}")
                status = 1
            elif lv.listed != len(ds.volumes):
                print(f"  ERROR: virsh vol-list shows {lv.listed} volumes, "
                      f"generated {len(ds.volumes)}")
                status = 1
            else:
                note(f"libvirt is correct: vol-list shows {lv.listed} volumes")

        note(f"timing qemu-img info on {min(args.sample, len(ds.volumes))} files ...")
        q_sample, q_n, q_all = measure_qemu_img(ds, args.sample, args.seed)

        t = ours.seconds
        rows = []
        if t is not None:
            rows.append([f"storage-console ls --json (median of {len(ours.runs)})",
                         f"{t:.3f}", "1.0x", describe_runs(ours.runs)])
            rows.append(["  first run", f"{ours.first:.3f}",
                         fmt_ratio(ours.first, t), ""])
            rows.append(["  on an empty directory (fixed cost)", f"{median(ours.empty):.3f}",
                         fmt_ratio(median(ours.empty), t), describe_runs(ours.empty)])
        else:
            rows.append(["storage-console ls --json", "failed", "-", ""])
        if lv.seconds is not None:
            rows.append([f"virsh pool-refresh + vol-list --details (median of "
                         f"{len(lv.totals)})", f"{lv.seconds:.3f}", fmt_ratio(lv.seconds, t),
                         describe_runs(lv.totals)])
            rows.append(["  pool-refresh", f"{median(lv.refresh):.3f}",
                         fmt_ratio(median(lv.refresh), t), describe_runs(lv.refresh)])
            rows.append(["  vol-list --details", f"{median(lv.vol_list):.3f}",
                         fmt_ratio(median(lv.vol_list), t), describe_runs(lv.vol_list)])
            rows.append(["  pool-create-as (starts the pool: a first scan)",
                         f"{lv.create:.3f}", fmt_ratio(lv.create, t), "once"])
        else:
            rows.append(["virsh pool-refresh + vol-list --details", "not measured", "-", ""])
        rows.append([f"qemu-img info per file ({q_n} timed, x{len(ds.volumes) / q_n:.0f})",
                     f"{q_all:.3f}", fmt_ratio(q_all, t),
                     f"{q_sample / q_n * 1000:.1f} ms per file"])
        print()
        print_table(["tool", "seconds", "vs ours", "runs / notes"], rows, right=(1, 2))
        print()
        if t is not None and lv.seconds:
            ratio = t / lv.seconds
            record_target(BENCH, f"ours/libvirt <= {TARGET_RATIO:.2f}", ratio <= TARGET_RATIO,
                          f"ours/libvirt = {ratio:.3f}, libvirt is {lv.seconds / t:.1f}x ours")
        else:
            record_target(BENCH, f"ours/libvirt <= {TARGET_RATIO:.2f}", None,
                          "ours or libvirt did not run")
        if t is not None:
            note(f"ours/qemu-img-per-file = {t / q_all:.3f}")

        if t is not None and not args.no_profile:
            results = root / "results"
            try:
                total, top = import_times(ds, scratch)
                note(f"imports of one ls run (python -X importtime): {total:.3f} s; biggest: "
                     + ", ".join(f"{name} {s:.3f}" for name, s in top[:6]))
                prof, text, summary, phases = profile_ours(ds, scratch, results)
                note(f"cProfile of one ls run: {text} (raw: {prof})")
                if phases:
                    note("phases (cumulative, under cProfile):")
                    for line in phases:
                        note(f"  {line}")
                note(f"top 15 by cumulative time (wrappers left out), {summary}")
            except BenchError as err:
                print(f"  warning: profiling failed: {err}")
    return status


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
