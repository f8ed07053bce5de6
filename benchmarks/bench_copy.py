"""Copies and archives through the job engine, side by side with cp, qemu-img and zstd.

Four measurements on one dataset (a 4 GiB raw image holding 1 GiB of data in many
extents, the same data as qcow2, and a qcow2 overlay on it with 5% of its clusters
rewritten):

- sparse raw copy: ours (a ``CopyVolume`` job on a ``Runner``, as the console and the
  command line run it) vs ``cp --sparse=always`` and ``qemu-img convert -f raw -O raw``;
  target: ours at most 1.05x the faster one;
- qcow2 -> qcow2 copy: ours vs ``qemu-img convert -f qcow2 -O qcow2``: at most 1.05x;
- incremental copy of the overlay to a pool that already holds an identical copy of its
  base, vs a full copy of it: at most 0.15x the time and the bytes written;
- archive of the raw image (``ArchiveVolume``, when the engine has it) vs
  ``zstd -1 -T0`` on the same file: at least 0.9x its throughput; measured with a cold
  and with a warm page cache (both read the image's holes through the page cache; a
  cold cache hides the CPU cost of hashing behind the disk, a warm one does not).

Ours is timed from ``submit()`` to the job being done: that includes the journal, the
reservation, the locks, the re-probe, qemu-img, and the fsync of the copy and of its
directory before it is published under its name. cp, qemu-img convert (cache=unsafe
unless told otherwise) and zstd do not fsync what they write, so each is timed twice in
the same run: the tool alone, and the tool followed by an fsync of its output and of the
directory (done in this process: no extra process start). Targets compare ours with
the durable variants; the ratios against the tools alone are printed too.

Every tool runs in turn, round after round (the order rotating), and the median is
reported; ours' first output is checked (qemu-img compare; the archive decompressed and
hashed), and the first copy of each tool and of ours must have stayed sparse.
Where ours spends its time is printed after the table (the engine's commands, fsync,
journal and refresh, timed by wrappers), with a cProfile of one archive.

Before each run the previous output is removed, everything is synced and the page cache
is dropped when the kernel lets us (``--warm`` keeps it: the sources are then
read from memory). The dataset lives under the data root and is reused while its marker
matches; outputs are removed after each timing. Run directly for more options::

    .venv/bin/python benchmarks/bench_copy.py --help
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # run as a script: sys.path is set just above
    REPO,
    BenchError,
    data_root,
    heading,
    median,
    note,
    print_table,
    quick_requested,
    record_target,
    require_tool,
    run,
    storage_console_exe,
)

BENCH = "copy"
GENERATOR_VERSION = 1  # bump when the dataset changes: old ones are rebuilt
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4 * KIB  # extents are aligned to this, and every block of data is stamped
CLUSTER = 64 * KIB  # qcow2's default cluster size
MIN_EXTENT, MAX_EXTENT = 4 * KIB, 4 * MIB  # log-uniform extent sizes

COPY_RATIO = 1.05  # ours / the faster tool, at most
INCREMENTAL_RATIO = 0.15  # incremental / full, at most (time and bytes)
ARCHIVE_RATIO = 0.90  # ours / zstd throughput, at least

FULL = {"virtual": 4 * GIB, "data": 1 * GIB, "changed": 0.05, "runs": 5}
QUICK = {"virtual": 1 * GIB, "data": 256 * MIB, "changed": 0.05, "runs": 2}
PARTS = ("raw", "qcow2", "incremental", "archive")

DROP_CACHES = "/proc/sys/vm/drop_caches"


# -- small helpers --------------------------------------------------------------------


def allocated(path: Path | str) -> int:
    return os.stat(path).st_blocks * 512


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB" if n >= 10 * MIB else f"{n / MIB:.1f} MiB"


def fsync_file_and_dir(path: Path) -> None:
    """What ours does before publishing: the file's data and its directory entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def clear_dir(directory: Path, keep: Sequence[str] = ()) -> None:
    """Remove the files a run left (outputs, temporary names); keep dot-directories
    (the engine's lock files) and the names in ``keep``."""
    for entry in os.scandir(directory):
        if entry.name in keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


class Cache:
    """Drops the page cache between runs when the kernel lets us, else says so."""

    def __init__(self, warm: bool) -> None:
        self.warm = warm
        self.can_drop = False
        self.why = "--warm: the page cache is kept"
        if not warm:
            try:
                os.sync()
                with open(DROP_CACHES, "w") as f:
                    f.write("3\n")
                self.can_drop = True
                self.why = "the page cache is dropped before every run (cold reads)"
            except OSError as err:
                self.why = (f"cannot drop the page cache ({err.strerror}): the sources are "
                            "read from memory (warm), medians of alternating runs")

    def settle(self) -> None:
        os.sync()
        if self.can_drop:
            with open(DROP_CACHES, "w") as f:
                f.write("3\n")


# -- the dataset ----------------------------------------------------------------------


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    kind: str  # "random" | "text" | "pattern"


@dataclass
class Dataset:
    root: Path
    virtual: int
    data: int
    extents: int
    changed_clusters: int
    reused: bool = False
    seconds: float = 0.0

    @property
    def src(self) -> Path:  # pool: disk.raw, disk.qcow2, top.qcow2 (on disk.qcow2)
        return self.root / "src"

    @property
    def inc(self) -> Path:  # pool: disk.qcow2 (a byte copy of src's), incremental outputs
        return self.root / "inc"

    @property
    def out(self) -> Path:  # pool: full copies' outputs, emptied after each run
        return self.root / "out"

    @property
    def scratch(self) -> Path:  # journals, XDG dirs
        return self.root / "scratch"

    @property
    def raw(self) -> Path:
        return self.src / "disk.raw"

    @property
    def qcow2(self) -> Path:
        return self.src / "disk.qcow2"

    @property
    def top(self) -> Path:
        return self.src / "top.qcow2"


def plan_extents(virtual: int, data: int, seed: int) -> list[Extent]:
    """``data`` bytes in extents of log-uniform sizes, spread over ``virtual`` bytes with
    holes of random lengths between them (4 KiB aligned)."""
    rng = random.Random(seed)
    sizes: list[int] = []
    total = 0
    while total < data:
        size = int(math.exp(rng.uniform(math.log(MIN_EXTENT), math.log(MAX_EXTENT))))
        size = max(BLOCK, size // BLOCK * BLOCK)
        size = min(size, data - total)
        sizes.append(size)
        total += size
    free_blocks = (virtual - data) // BLOCK
    # At least one block of hole between extents: they stay separate extents on disk.
    if free_blocks < len(sizes):
        raise BenchError("--data too close to --virtual: no room for holes")
    cuts = sorted(rng.randrange(free_blocks - len(sizes) + 1) for _ in sizes)
    kinds = rng.choices(("random", "text", "pattern"), weights=(4, 4, 2), k=len(sizes))
    extents, offset, previous = [], 0, 0
    for size, cut, kind in zip(sizes, cuts, kinds, strict=True):
        offset += (cut - previous + 1) * BLOCK
        previous = cut
        extents.append(Extent(offset, size, kind))
        offset += size
    assert offset <= virtual
    return extents


def text_corpus(rng: random.Random, size: int) -> bytes:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 10)))
             for _ in range(3000)]
    parts: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(words, k=rng.randint(5, 14))) + "\n"
        parts.append(line)
        length += len(line)
    return "".join(parts).encode()[:size]


def extent_bytes(index: int, extent: Extent, rng: random.Random, corpus: bytes) -> bytearray:
    """The extent's content: distinct per 4 KiB block (each starts with a stamp), and
    never a block of zeroes (which a sparse copy would turn into a hole)."""
    n = extent.length
    if extent.kind == "random":
        buf = bytearray(rng.randbytes(n))
    elif extent.kind == "text":
        start = rng.randrange(len(corpus))
        doubled = corpus + corpus
        buf = bytearray()
        while len(buf) < n:
            buf += doubled[start:start + n - len(buf)]
            start = 0
    else:
        record = f"extent {index:06d} {rng.getrandbits(64):016x} ".encode()
        buf = bytearray((record * (n // len(record) + 1))[:n])
    for block in range(0, n, BLOCK):
        buf[block:block + 16] = struct.pack("<QQ", index + 1, block // BLOCK + 1)
    return buf


def dataset_params(virtual: int, data: int, changed: float, seed: int) -> dict[str, Any]:
    return {"generator": GENERATOR_VERSION, "virtual": virtual, "data": data,
            "changed": changed, "seed": seed}


def prepare_dataset(base: Path, virtual: int, data: int, changed: float, seed: int, *,
                    regenerate: bool) -> Dataset:
    params = dataset_params(virtual, data, changed, seed)
    root = base / (f"copy-v{virtual // MIB}M-d{data // MIB}M-c{changed:g}-s{seed}"
                   f"-g{GENERATOR_VERSION}")
    marker = root / "complete.json"
    if not regenerate and marker.exists():
        try:
            saved = json.loads(marker.read_text())
            if saved.get("params") == params:
                ds = Dataset(root, virtual, data, saved["extents"], saved["changed_clusters"],
                             reused=True)
                for d in (ds.out, ds.scratch):
                    d.mkdir(exist_ok=True)
                return ds
        except (OSError, ValueError, KeyError, TypeError) as err:
            note(f"dataset marker unreadable ({err}): generating again")
    if root.exists():
        shutil.rmtree(root)  # our own incomplete or stale dataset
    start = time.perf_counter()
    qemu_img = require_tool("qemu-img")
    qemu_io = require_tool("qemu-io")
    extents = plan_extents(virtual, data, seed)
    ds = Dataset(root, virtual, data, len(extents), 0)
    for d in (ds.src, ds.inc, ds.out, ds.scratch):
        d.mkdir(parents=True)
    note(f"generating {ds.raw}: {mib(data)} in {len(extents)} extents over {mib(virtual)} ...")
    rng = random.Random(seed + 1)
    corpus = text_corpus(rng, 1 * MIB)
    fd = os.open(ds.raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for i, extent in enumerate(extents):
            os.pwrite(fd, extent_bytes(i, extent, rng, corpus), extent.offset)
        os.ftruncate(fd, virtual)
        os.fsync(fd)
    finally:
        os.close(fd)
    if allocated(ds.raw) < data:
        raise BenchError(f"{ds.raw}: {allocated(ds.raw)} bytes allocated, {data} written: "
                         "the file system does not keep sparse files as written")
    note("converting it to qcow2 ...")
    run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(ds.raw), str(ds.qcow2)],
        timeout=1800)
    run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "disk.qcow2", "-F", "qcow2",
         str(ds.top), str(virtual)], timeout=60)
    # The overlay: a share of disk.qcow2's allocated clusters rewritten with new data.
    mapped = json.loads(run([qemu_img, "map", "--output=json", "-f", "qcow2", str(ds.qcow2)],
                            timeout=600).stdout)
    clusters = sorted({c for m in mapped if m.get("data")
                       for c in range(m["start"] // CLUSTER,
                                      (m["start"] + m["length"] - 1) // CLUSTER + 1)})
    picked = sorted(random.Random(seed + 2).sample(clusters,
                                                   max(1, round(len(clusters) * changed))))
    ds.changed_clusters = len(picked)
    commands = [f"write -q -P {1 + n % 255} {c * CLUSTER} {CLUSTER}"
                for n, c in enumerate(picked)]
    for i in range(0, len(commands), 500):  # bounded argv lengths
        argv = [qemu_io, "-f", "qcow2"]
        for command in commands[i:i + 500]:
            argv += ["-c", command]
        run([*argv, str(ds.top)], timeout=600)
    note(f"overlay {ds.top.name}: {len(picked)} of {len(clusters)} allocated clusters "
         "rewritten; copying disk.qcow2 into the incremental target pool ...")
    run(["cp", "--sparse=always", str(ds.qcow2), str(ds.inc / "disk.qcow2")], timeout=1800)
    run([qemu_img, "check", "-q", "-f", "qcow2", str(ds.qcow2)], timeout=600)
    run([qemu_img, "check", "-q", "-f", "qcow2", str(ds.top)], timeout=600)
    run([qemu_img, "compare", "-q", "-f", "raw", "-F", "qcow2", str(ds.raw), str(ds.qcow2)],
        timeout=1800)
    run(["cmp", str(ds.qcow2), str(ds.inc / "disk.qcow2")], timeout=1800)
    os.sync()
    marker.write_text(json.dumps({"params": params, "extents": len(extents),
                                  "changed_clusters": len(picked)}))
    ds.seconds = time.perf_counter() - start
    return ds


# -- ours: the engine -----------------------------------------------------------------


@dataclass
class Phases:
    """Where one run of ours went (seconds), from wrappers around the engine's parts."""

    total: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + seconds


@dataclass
class OurRun:
    seconds: float
    phases: Phases
    output: Path
    how: str


class Engine:
    """A Runner with its own journal over the dataset's pools, instrumented: the commands
    its transport runs, the publish (fsync, link, directory fsync), the journal writes and
    the refresh of the target pool are timed into the current run's ``Phases``."""

    def __init__(self, ds: Dataset) -> None:
        try:
            from backends.model import ImageFormat
            from console.cache import Cache as ConsoleCache
            from console.config import Config
            from console.inventory import Inventory
            from console.jobs import operations
            from console.jobs.journal import JobState, Journal
            from console.jobs.runner import Runner
        except Exception as err:  # someone's half-written module: say which
            raise BenchError(f"cannot import the job engine: {type(err).__name__}: {err}") \
                from None
        self.ds = ds
        self.operations = operations
        self.ImageFormat = ImageFormat
        self.JobState = JobState
        self._phases: Phases | None = None
        self._lock = threading.Lock()
        journal_dir = ds.scratch / f"engine-{os.getpid()}"
        if journal_dir.exists():
            shutil.rmtree(journal_dir)
        journal_dir.mkdir(parents=True)
        self.journal_dir = journal_dir
        pools = [str(p.resolve()) for p in (ds.src, ds.inc, ds.out)]
        self.inventory = Inventory(Config.for_targets(pools), ConsoleCache(None))
        self.runner = Runner(Journal(journal_dir / "journal.db"), self.inventory,
                             on_update=lambda _job: None)
        self.driver = cast(Any, self.inventory.driver(self.pool(ds.src)))  # the dir driver
        transport: Any = self.driver.transport
        transport.observer = self._observe
        self._instrument(transport, "publish", "publish: fsync, link, fsync the directory")
        self._instrument(self.inventory, "refresh_pool", "refresh the target pool (scan)")
        journal = self.runner.journal
        for method in ("submit", "start", "progress", "remember", "finish", "set_state",
                       "get"):
            if hasattr(journal, method):
                self._instrument(journal, method, "journal (SQLite, synchronous=FULL)")

    def close(self) -> None:
        self.runner.close(cancel=True)
        shutil.rmtree(self.journal_dir, ignore_errors=True)

    def pool(self, directory: Path) -> Any:
        return self.inventory.pool("local", str(directory.resolve()))

    # -- instrumentation ----------------------------------------------------------

    def _record(self, name: str, seconds: float) -> None:
        with self._lock:
            if self._phases is not None:
                self._phases.add(name, seconds)

    def _observe(self, host: str, argv: tuple[str, ...], returncode: int,
                 seconds: float) -> None:
        if argv and os.path.basename(argv[0]) == "zstd":
            what = ("compress_file: zstd reading the image, our drain (pipe, sha256 of "
                    "the archive), fsync")
        else:
            what = " ".join(os.path.basename(a) for a in argv[:2])
        self._record(what, seconds)

    def _instrument(self, obj: Any, method: str, bucket: str) -> None:
        original = getattr(obj, method)
        record = self._record

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record(bucket, time.perf_counter() - start)

        setattr(obj, method, timed)

    @contextmanager
    def measuring(self) -> Iterator[Phases]:
        phases = Phases()
        with self._lock:
            self._phases = phases
        try:
            yield phases
        finally:
            with self._lock:
                self._phases = None

    # -- operations ----------------------------------------------------------------

    def copy_base_field(self) -> str | None:
        """The CopyVolume parameter naming the base of an incremental copy, if any."""
        names = {f.name for f in dataclasses.fields(self.operations.CopyVolume)}
        return next((n for n in ("base", "base_volume") if n in names), None)

    def archive_class(self) -> type | None:
        ops = self.operations
        cls = getattr(ops, "ArchiveVolume", None) or getattr(ops, "OPERATIONS", {}).get(
            "archive")
        return cls if isinstance(cls, type) else None

    def _run_job(self, op: Any, phases: Phases) -> None:
        start = time.perf_counter()
        job = self.runner.submit(op)
        phases.add("submit (returns once journaled)", time.perf_counter() - start)
        job = self.runner.wait(job.id, timeout=3600)
        if job.state != self.JobState.DONE:
            raise BenchError(f"job {job.id} ({op.describe()}) ended {job.state}: {job.error}")

    def copy(self, src: Path, name: str, dest: Path, dest_name: str, *,
             fmt: str | None = None, base: str | None = None,
             direct: bool = False) -> OurRun:
        """One copy: a CopyVolume job (submit to done), or with ``direct`` the dir
        driver's copy_volume called without the runner (for an incremental copy while
        CopyVolume has no base parameter; a full copy to compare it with is then made the
        same way)."""
        with self.measuring() as phases:
            start = time.perf_counter()
            if direct:
                how = "driver.copy_volume (no runner, no journal)"
                src_pool, dest_pool = self.pool(src), self.pool(dest)
                backing = None
                if base is not None:
                    backing = self.driver.probe_volume(dest_pool, base)
                self.driver.copy_volume(
                    src_pool, name, dest_pool, dest_name,
                    fmt=self.ImageFormat(fmt) if fmt else None, backing=backing,
                    base_depth=1, progress=lambda _p: None)
            else:
                kwargs: dict[str, Any] = {"dest_pool": self.pool(dest).name,
                                          "dest_name": dest_name, "format": fmt}
                how = "CopyVolume job on a Runner"
                if base is not None:
                    base_field = self.copy_base_field()
                    if base_field is None:
                        raise BenchError("CopyVolume has no base parameter")
                    kwargs[base_field] = base
                    fields = {f.name for f in dataclasses.fields(self.operations.CopyVolume)}
                    if "base_depth" in fields:
                        kwargs["base_depth"] = 1
                op = self.operations.CopyVolume("local", self.pool(src).name, name, **kwargs)
                self._run_job(op, phases)
            phases.total = time.perf_counter() - start
        return OurRun(phases.total, phases, dest / dest_name, how)

    def archive(self, src: Path, name: str, dest: Path, archive_name: str) -> OurRun:
        cls = self.archive_class()
        if cls is None:
            raise BenchError("no ArchiveVolume")
        op = build_archive_op(cls, "local", self.pool(src).name, name, self.pool(dest),
                              dest / archive_name)
        with self.measuring() as phases:
            start = time.perf_counter()
            self._run_job(op, phases)
            phases.total = time.perf_counter() - start
        return OurRun(phases.total, phases, dest / archive_name, f"{cls.__name__} job on a Runner")


def build_archive_op(cls: type, host: str, pool: str, volume: str, dest_pool: Any,
                     dest_path: Path) -> Any:
    """An ArchiveVolume writing ``dest_path``, whatever its destination parameters are
    called: a pool and a name, or a path."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name in fields:
        if name in ("host", "pool", "volume"):
            continue
        if name in ("dest_pool", "target_pool", "archive_pool"):
            kwargs[name] = dest_pool.name
        elif name in ("dest_name", "archive_name", "target_name", "name"):
            kwargs[name] = dest_path.name
        elif name in ("dest", "destination", "path", "dest_path", "archive", "target",
                      "archive_path", "output"):
            kwargs[name] = str(dest_path)
        elif name == "overwrite":
            kwargs[name] = False
    if not any(k in kwargs for k in ("dest_name", "archive_name", "target_name", "name",
                                     "dest", "destination", "path", "dest_path", "archive",
                                     "target", "archive_path", "output")):
        raise BenchError(f"{cls.__name__}({', '.join(fields)}): cannot tell where it "
                         "writes the archive; teach build_archive_op its parameters")
    return cls(host, pool, volume, **kwargs)


# -- the tools ------------------------------------------------------------------------


@dataclass
class ToolRun:
    seconds: float  # the process alone
    durable: float  # the process, then fsync of its output and directory
    output: Path


def time_tool(argv: Sequence[str], output: Path, timeout: float = 3600) -> ToolRun:
    start = time.perf_counter()
    run(argv, timeout=timeout, stdout=subprocess.DEVNULL)
    middle = time.perf_counter()
    fsync_file_and_dir(output)
    end = time.perf_counter()
    return ToolRun(middle - start, end - start, output)


# -- one comparison -------------------------------------------------------------------


@dataclass
class Series:
    label: str
    runs: list[float] = field(default_factory=list)
    written: list[int] = field(default_factory=list)  # allocated bytes of the output
    phases: list[Phases] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        return median(self.runs) if self.runs else None

    @property
    def bytes_written(self) -> int | None:
        return int(median(self.written)) if self.written else None


@dataclass
class Contestant:
    """A runnable: returns the series it adds to (several for a tool timed alone and
    with fsync), the output to check and remove."""

    name: str
    go: Callable[[], list[tuple[Series, float, Path, Phases | None]]]
    check: Callable[[Path], None] | None = None  # on its first output


def rounds(contestants: Sequence[Contestant], runs: int, cache: Cache,
           cleanup: Callable[[], None]) -> None:
    """Every contestant once per round, the order rotating; the page cache dropped (or
    not) and the previous output removed before each run."""
    checked: set[str] = set()
    last: dict[str, str] = {}
    n = len(contestants)
    for r in range(runs):
        order = [contestants[(r + i) % n] for i in range(n)]
        for c in order:
            cleanup()
            cache.settle()
            results = c.go()
            output = results[0][2]
            written = allocated(output) if output.exists() else 0
            last[c.name] = "/".join(f"{seconds:.3f}" for _s, seconds, _o, _p in results)
            for series, seconds, _out, phases in results:
                series.runs.append(seconds)
                series.written.append(written)
                if phases is not None:
                    series.phases.append(phases)
            if c.check is not None and c.name not in checked:
                c.check(output)
                checked.add(c.name)
        note(f"round {r + 1}/{runs}: " + ", ".join(f"{c.name} {last[c.name]}"
                                                     for c in contestants))
    cleanup()


def tool_contestant(name: str, argv_for: Callable[[], list[str]], output: Path,
                    alone: Series, durable: Series,
                    check: Callable[[Path], None] | None = None) -> Contestant:
    def go() -> list[tuple[Series, float, Path, Phases | None]]:
        t = time_tool(argv_for(), output)
        return [(alone, t.seconds, output, None), (durable, t.durable, output, None)]
    return Contestant(name, go, check)


def ours_contestant(name: str, do: Callable[[], OurRun], series: Series,
                    check: Callable[[Path], None] | None = None) -> Contestant:
    def go() -> list[tuple[Series, float, Path, Phases | None]]:
        r = do()
        return [(series, r.seconds, r.output, r.phases)]
    return Contestant(name, go, check)


def cli_contestant(name: str, argv: list[str], env: dict[str, str], output: Path,
                   series: Series) -> Contestant:
    def go() -> list[tuple[Series, float, Path, Phases | None]]:
        start = time.perf_counter()
        run(argv, timeout=3600, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        return [(series, seconds, output, None)]
    return Contestant(name, go)


def compare_images(a: Path, a_fmt: str, b: Path, b_fmt: str) -> None:
    run([require_tool("qemu-img"), "compare", "-q", "-f", a_fmt, "-F", b_fmt, str(a),
         str(b)], timeout=1800)


def check_sparse(source_allocated: int, slack: float = 1.10) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        got = allocated(path)
        if got > source_allocated * slack + 16 * MIB:
            raise BenchError(f"{path}: {mib(got)} allocated, the source holds "
                             f"{mib(source_allocated)}: the copy is not sparse")
    return check


def check_copy(source: Path, fmt: str, source_allocated: int) -> Callable[[Path], None]:
    sparse = check_sparse(source_allocated)

    def check(path: Path) -> None:
        sparse(path)
        compare_images(source, fmt, path, fmt)
    return check


# -- the four measurements ------------------------------------------------------------


@dataclass
class Section:
    title: str
    ours: Series
    tools: list[Series]
    throughput_bytes: int  # what MB/s is computed over
    throughput_what: str
    notes: list[str] = field(default_factory=list)
    missing: str | None = None  # "not implemented yet", ...
    part: str = ""
    details: list[str] = field(default_factory=list)  # printed after the breakdown


def measure_raw(ds: Dataset, engine: Engine, cache: Cache, runs: int, cli: bool,
                env: dict[str, str]) -> Section:
    qemu_img = require_tool("qemu-img")
    out = ds.out / "copy.raw"
    src_alloc = allocated(ds.raw)
    ours = Series("ours: CopyVolume job, submit to done (fsync included)")
    cp, cp_d = Series("cp --sparse=always"), Series("cp --sparse=always + fsync")
    qi, qi_d = Series("qemu-img convert -f raw -O raw"), Series(
        "qemu-img convert -f raw -O raw + fsync")
    contestants = [
        ours_contestant("ours", lambda: engine.copy(ds.src, "disk.raw", ds.out, "copy.raw"),
                        ours, check_copy(ds.raw, "raw", src_alloc)),
        tool_contestant("cp", lambda: ["cp", "--sparse=always", str(ds.raw), str(out)], out,
                        cp, cp_d, check_sparse(src_alloc)),
        tool_contestant("qemu-img", lambda: [qemu_img, "convert", "-f", "raw", "-O", "raw",
                                             str(ds.raw), str(out)], out, qi, qi_d,
                        check_sparse(src_alloc)),
    ]
    tools = [cp, cp_d, qi, qi_d]
    if cli:
        cli_series = Series("ours: `storage-console copy --json`, whole process")
        contestants.append(cli_contestant(
            "cli", [storage_console_exe(), "copy", str(ds.raw), str(out), "--json"], env,
            out, cli_series))
        tools.append(cli_series)
    rounds(contestants, runs, cache, lambda: clear_dir(ds.out))
    return Section(f"sparse raw copy ({mib(ds.virtual)} virtual, {mib(src_alloc)} data)",
                   ours, tools, src_alloc, "data")


def measure_qcow2(ds: Dataset, engine: Engine, cache: Cache, runs: int) -> Section:
    qemu_img = require_tool("qemu-img")
    out = ds.out / "copy.qcow2"
    src_alloc = allocated(ds.qcow2)
    ours = Series("ours: CopyVolume job, submit to done (fsync included)")
    qi, qi_d = Series("qemu-img convert -f qcow2 -O qcow2"), Series(
        "qemu-img convert -f qcow2 -O qcow2 + fsync")
    cp, cp_d = Series("cp --sparse=always (the file as is)"), Series(
        "cp --sparse=always + fsync (the file as is)")
    contestants = [
        ours_contestant("ours", lambda: engine.copy(ds.src, "disk.qcow2", ds.out,
                                                    "copy.qcow2"),
                        ours, check_copy(ds.qcow2, "qcow2", src_alloc)),
        tool_contestant("qemu-img", lambda: [qemu_img, "convert", "-f", "qcow2", "-O",
                                             "qcow2", str(ds.qcow2), str(out)], out, qi, qi_d,
                        check_sparse(src_alloc)),
        tool_contestant("cp", lambda: ["cp", "--sparse=always", str(ds.qcow2), str(out)],
                        out, cp, cp_d, check_sparse(src_alloc)),
    ]
    rounds(contestants, runs, cache, lambda: clear_dir(ds.out))
    return Section(f"qcow2 -> qcow2 copy ({mib(src_alloc)} file)", ours, [qi, qi_d, cp, cp_d],
                   src_alloc, "file")


def measure_incremental(ds: Dataset, engine: Engine, cache: Cache, runs: int) -> Section:
    qemu_img = require_tool("qemu-img")
    direct = engine.copy_base_field() is None
    how = ("the dir driver's copy_volume called directly (CopyVolume has no base parameter "
           "yet): no runner, journal, reservation or locks, for both" if direct else
           "CopyVolume jobs on a Runner, submit to done")
    inc_out, full_out = ds.inc / "top-inc.qcow2", ds.inc / "top-full.qcow2"
    top_alloc = allocated(ds.top)
    chain_alloc = allocated(ds.top) + allocated(ds.qcow2)
    ours_inc = Series("ours: incremental copy onto the pool's disk.qcow2")
    ours_full = Series("ours: full copy (flattened qcow2)")
    by_hand, by_hand_d = Series("qemu-img convert -B disk.qcow2 (by hand)"), Series(
        "qemu-img convert -B disk.qcow2 + fsync (by hand)")

    def check_incremental(path: Path) -> None:
        compare_images(ds.top, "qcow2", path, "qcow2")
        info = json.loads(run([qemu_img, "info", "--output=json", "-f", "qcow2", str(path)],
                              timeout=60).stdout)
        if os.path.basename(info.get("backing-filename") or "") != "disk.qcow2":
            raise BenchError(f"{path}: backed by {info.get('backing-filename')!r}, "
                             "expected the target pool's disk.qcow2")
        if allocated(path) > top_alloc * 1.5 + 4 * MIB:
            raise BenchError(f"{path}: {mib(allocated(path))} allocated, the overlay "
                             f"holds {mib(top_alloc)}: the copy was not incremental")

    def check_full(path: Path) -> None:
        compare_images(ds.top, "qcow2", path, "qcow2")

    contestants = [
        ours_contestant("incremental",
                        lambda: engine.copy(ds.src, "top.qcow2", ds.inc, inc_out.name,
                                            fmt="qcow2", base="disk.qcow2", direct=direct),
                        ours_inc, check_incremental),
        ours_contestant("full",
                        lambda: engine.copy(ds.src, "top.qcow2", ds.inc, full_out.name,
                                            fmt="qcow2", direct=direct),
                        ours_full, check_full),
        tool_contestant("by-hand", lambda: [qemu_img, "convert", "-f", "qcow2", "-O", "qcow2",
                                            "-B", "disk.qcow2", "-F", "qcow2", str(ds.top),
                                            str(inc_out)], inc_out, by_hand, by_hand_d),
    ]
    rounds(contestants, runs, cache, lambda: clear_dir(ds.inc, keep=("disk.qcow2",)))
    section = Section(f"incremental copy ({ds.changed_clusters} clusters changed, "
                      f"{mib(top_alloc)} overlay on a {mib(allocated(ds.qcow2))} base)",
                      ours_inc, [ours_full, by_hand, by_hand_d], chain_alloc, "chain")
    section.notes.append(f"ours: {how}")
    return section


def measure_archive(ds: Dataset, engine: Engine, cache: Cache, runs: int,
                    profile: bool) -> list[Section]:
    """Cold (when the page cache can be dropped), then warm: a cold cache hides CPU time
    behind the disk, so the two states give different ratios and both are reported."""
    sections = [archive_rounds(ds, engine, cache, runs, "")]
    if cache.can_drop and engine.archive_class() is not None:
        warm = Cache(warm=True)
        with open(ds.raw, "rb") as f:  # the whole image in memory, holes included
            while f.read(16 * MIB):
                pass
        warm_section = archive_rounds(ds, engine, warm, runs, ", page cache warm")
        warm_section.part = "archive-warm"
        sections.append(warm_section)
    if engine.archive_class() is not None and profile:
        sections[-1].details = profile_archive(ds, engine, cache)
    return sections


def archive_rounds(ds: Dataset, engine: Engine, cache: Cache, runs: int,
                   state: str) -> Section:
    zstd = require_tool("zstd")
    out = ds.out / "disk.raw.zst"
    ours = Series("ours: archive job, submit to done")
    z, z_d = Series("zstd -1 -T0"), Series("zstd -1 -T0 + fsync")
    cls = engine.archive_class()
    contestants = [tool_contestant("zstd", lambda: [zstd, "-q", "-f", "-1", "-T0",
                                                    str(ds.raw), "-o", str(out)], out, z, z_d)]
    missing = None
    if cls is None:
        missing = "not implemented yet"
    else:
        ours.label = f"ours: {cls.__name__} job, submit to done"
        contestants.insert(0, ours_contestant(
            "ours", lambda: engine.archive(ds.src, "disk.raw", ds.out, "ours.raw.zst"), ours,
            check_archive(ds) if not state else None))
    if state:
        note(f"archive again{state} ({runs} rounds) ...")
    rounds(contestants, runs, cache, lambda: clear_dir(ds.out))
    return Section(f"archive of disk.raw ({mib(ds.virtual)} image{state})", ours, [z, z_d],
                   ds.virtual, "image", missing=missing, part="archive")


def profile_archive(ds: Dataset, engine: Engine, cache: Cache) -> list[str]:
    """cProfile of one archive made by the driver in this thread (the job's work without
    the runner): where the drain's time goes. The hashing thread is not in it."""
    import cProfile
    import pstats

    clear_dir(ds.out)
    cache.settle()
    profile = cProfile.Profile()
    start = time.perf_counter()
    times = os.times()
    profile.enable()
    try:
        engine.driver.archive_volume(engine.pool(ds.src), "disk.raw",
                                     str(ds.out / "profiled.raw.zst"))
    finally:
        profile.disable()
        clear_dir(ds.out)
    wall = time.perf_counter() - start
    after = os.times()
    lines = [f"cProfile of one archive by the driver in this thread, no runner ({wall:.3f} "
             f"s wall, cProfile included; this process {after.user - times.user:.2f} s "
             f"user + {after.system - times.system:.2f} s system, zstd "
             f"{after.children_user - times.children_user:.2f} s user + "
             f"{after.children_system - times.children_system:.2f} s system); the feeding "
             "thread's biggest own times:"]
    stats = pstats.Stats(profile)
    table_ = stats.stats  # type: ignore[attr-defined]
    top = sorted(table_.items(), key=lambda kv: -kv[1][2])[:6]
    for (path, line, name), (_cc, calls, own, _cum, _callers) in top:
        where = f"{os.path.basename(path)}:{line}" if line else path
        lines.append(f"  {own:7.3f} s own {calls:>7} calls  {name} ({where})")
    return lines


def check_archive(ds: Dataset) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        if not path.exists():
            candidates = sorted(p.name for p in ds.out.iterdir() if not p.name.startswith("."))
            raise BenchError(f"the archive job wrote no {path.name} (found: "
                             f"{', '.join(candidates) or 'nothing'})")
        zstd = require_tool("zstd")
        # Decompressed, it is the image (sha256 of both; zstd -t alone would not say).
        got = subprocess.run(f"{zstd} -dc {path} | sha256sum", shell=True, check=True,
                             capture_output=True, text=True).stdout.split()[0]
        want = subprocess.run(["sha256sum", str(ds.raw)], check=True, capture_output=True,
                              text=True).stdout.split()[0]
        if got != want:
            raise BenchError(f"{path}: decompressed, it is not disk.raw")
    return check


# -- output ---------------------------------------------------------------------------


def fmt_s(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


def fmt_ratio(ours: float | None, other: float | None) -> str:
    if not ours or not other:
        return "-"
    return f"{ours / other:.2f}x"


def table(sections: Sequence[Section]) -> None:
    rows: list[list[str]] = []
    for s in sections:
        rows.append([s.title, "", "", "", "", ""])
        every = [s.ours, *s.tools]
        for series in every:
            if series is s.ours and s.missing:
                rows.append([f"  {s.ours.label}", "-", "-", "-", "-",
                             f"{s.part}: {s.missing}"])
                continue
            t = series.seconds
            rate = f"{s.throughput_bytes / t / MIB:,.0f}" if t else "-"
            written = mib(series.bytes_written) if series.bytes_written is not None else "-"
            ratio = "1.00x" if series is s.ours else fmt_ratio(s.ours.seconds, t)
            rows.append([f"  {series.label}", fmt_s(t), rate, written, ratio,
                         " ".join(f"{x:.3f}" for x in series.runs)])
    print_table(["copy / tool", "median s", "MiB/s", "written", "ours/this", "runs (s)"],
                rows, right=(1, 2, 3, 4))


def breakdown(section: Section) -> None:
    if not section.ours.phases:
        return
    totals = [p.total for p in section.ours.phases]
    names: list[str] = []
    for p in section.ours.phases:
        names += [n for n in p.parts if n not in names]
    rows = []
    accounted = [0.0] * len(totals)
    for name in names:
        values = [p.parts.get(name, 0.0) for p in section.ours.phases]
        accounted = [a + v for a, v in zip(accounted, values, strict=True)]
        rows.append((name, median(values)))
    rest = [t - a for t, a in zip(totals, accounted, strict=True)]
    rows.sort(key=lambda r: -r[1])
    t = median(totals)
    note(f"where ours went ({section.title}; medians over "
         f"{len(totals)} runs, total {t:.3f} s; journal calls overlap the others):")
    for name, value in rows:
        note(f"  {value:8.3f} s {value / t:6.1%}  {name}")
    note(f"  {median(rest):8.3f} s {median(rest) / t:6.1%}  the rest (threads, probes, "
         "locks, Python)")


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_copy.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a 1 GiB image with 256 MiB of data, 2 rounds (smoke)")
    p.add_argument("--dir", help="dataset root (default: /var/tmp/storage-console-bench or "
                   "$STORAGE_CONSOLE_BENCH_DIR); reused between runs")
    p.add_argument("--virtual", type=int, help="virtual size in MiB (default 4096)")
    p.add_argument("--data", type=int, help="MiB of data in it (default 1024)")
    p.add_argument("--runs", type=int, help="rounds (every tool once per round; median)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", action="append", choices=PARTS,
                   help="run only this measurement (repeatable)")
    p.add_argument("--warm", action="store_true",
                   help="keep the page cache between runs (default: drop it when allowed)")
    p.add_argument("--no-cli", action="store_true",
                   help="skip the whole-process `storage-console copy` row")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the cProfile of one archive")
    p.add_argument("--regenerate", action="store_true", help="rebuild the dataset")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick or quick_requested() else FULL
    args.virtual = args.virtual * MIB if args.virtual else defaults["virtual"]
    args.data = args.data * MIB if args.data else defaults["data"]
    args.changed = defaults["changed"]
    args.runs = args.runs or defaults["runs"]
    return args


def scratch_env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        path = scratch / "xdg" / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.only or list(PARTS)
    heading(f"copy: {mib(args.virtual)} raw image with {mib(args.data)} of data; "
            f"{', '.join(parts)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    note(f"{os.cpu_count()} CPUs, load average {load} (timings are noisy when it is high)")
    try:
        for tool in ("qemu-img", "qemu-io", "zstd", "cp"):
            require_tool(tool)
        root = data_root(args.dir)
        root.mkdir(parents=True, exist_ok=True)
        ds = prepare_dataset(root, args.virtual, args.data, args.changed, args.seed,
                             regenerate=args.regenerate)
    except (BenchError, OSError) as err:
        print(f"  ERROR: cannot prepare the dataset: {err}")
        return 1
    note(f"dataset {ds.root}: " + ("reused" if ds.reused else
                                   f"generated in {ds.seconds:.1f} s")
         + f"; {ds.extents} extents; disk.raw {mib(allocated(ds.raw))} allocated, "
         f"disk.qcow2 {mib(allocated(ds.qcow2))}, top.qcow2 {mib(allocated(ds.top))}")
    cache = Cache(args.warm)
    note(cache.why)
    if not cache.can_drop:  # the sources in memory for every tool alike
        for path in (ds.raw, ds.qcow2, ds.top):
            with open(path, "rb") as f:
                while f.read(16 * MIB):
                    pass

    sys.path.insert(0, str(REPO))
    status = 0
    sections: list[Section] = []
    engine: Engine | None = None
    try:
        clear_dir(ds.out)
        clear_dir(ds.inc, keep=("disk.qcow2",))
        try:
            engine = Engine(ds)
        except BenchError:
            raise
        except Exception as err:  # the engine mid-change: say what, do not crash run.py
            raise BenchError(f"the job engine cannot start: {type(err).__name__}: {err}") \
                from None
        env = scratch_env(ds.scratch)
        steps: list[tuple[str, Callable[[], Section | list[Section]]]] = [
            ("raw", lambda: measure_raw(ds, engine, cache, args.runs, not args.no_cli, env)),
            ("qcow2", lambda: measure_qcow2(ds, engine, cache, args.runs)),
            ("incremental", lambda: measure_incremental(ds, engine, cache, args.runs)),
            ("archive", lambda: measure_archive(ds, engine, cache, args.runs,
                                                not args.no_profile)),
        ]
        for name, step in steps:
            if name not in parts:
                continue
            note(f"timing {name} ({args.runs} rounds) ...")
            try:
                made = step()
            except BenchError as err:
                print(f"  ERROR: {name}: {err}")
                status = 1
                made = Section(f"{name}: could not measure", Series("ours"), [], 1, "",
                               missing="failed")
            for section in made if isinstance(made, list) else [made]:
                section.part = section.part or name
                sections.append(section)
    except BenchError as err:
        print(f"  ERROR: {err}")
        return 1
    finally:
        if engine is not None:
            engine.close()
        clear_dir(ds.out)
        clear_dir(ds.inc, keep=("disk.qcow2",))
        shutil.rmtree(ds.scratch / "xdg", ignore_errors=True)

    print()
    note("ours is timed from submit() to the job done: it includes our fsync of the copy "
         "and of its directory before publishing; cp, qemu-img convert and zstd fsync "
         "nothing (qemu-img convert writes with cache=unsafe unless given -t): the "
         "+ fsync rows are the same runs, then an fsync of the output and its directory "
         "(in this process).")
    note(f"{cache.why}; MiB/s over the source's allocated bytes (the image's virtual size "
         "for the archive); written = allocated size of the output")
    print()
    table(sections)
    for s in sections:
        for line in s.notes:
            note(line)
    print()
    targets(sections)
    print()
    for s in sections:
        breakdown(s)
        for line in s.details:
            note(line)
    return status


def _by_label(section: Section, prefix: str) -> Series | None:
    return next((t for t in section.tools if t.label.startswith(prefix)), None)


def targets(sections: Sequence[Section]) -> None:
    by_part = {s.part: s for s in sections}
    raw = by_part.get("raw")
    if raw is not None:
        name = f"raw copy <= {COPY_RATIO:.2f}x the faster of cp / qemu-img (with fsync)"
        durable = [t for t in raw.tools if t.label.endswith("+ fsync") and t.seconds]
        alone = [t for t in raw.tools if not t.label.endswith("+ fsync") and t.seconds
                 and not t.label.startswith("ours")]
        if raw.ours.seconds and durable and alone:
            best = min(durable, key=lambda t: t.seconds or 0)
            best_alone = min(alone, key=lambda t: t.seconds or 0)
            ratio = raw.ours.seconds / (best.seconds or 1)
            record_target(BENCH, name, ratio <= COPY_RATIO,
                          f"ours {raw.ours.seconds:.3f} s / {best.label} {best.seconds:.3f} s "
                          f"= {ratio:.2f}x; vs {best_alone.label} alone "
                          f"{best_alone.seconds:.3f} s: "
                          f"{raw.ours.seconds / (best_alone.seconds or 1):.2f}x")
        else:
            record_target(BENCH, name, None, "did not run")
    q = by_part.get("qcow2")
    if q is not None:
        name = f"qcow2 copy <= {COPY_RATIO:.2f}x qemu-img convert -O qcow2 (with fsync)"
        d, a = _by_label(q, "qemu-img convert -f qcow2 -O qcow2 +"), _by_label(
            q, "qemu-img convert -f qcow2 -O qcow2")
        if q.ours.seconds and d and d.seconds and a and a.seconds:
            ratio = q.ours.seconds / d.seconds
            record_target(BENCH, name, ratio <= COPY_RATIO,
                          f"ours {q.ours.seconds:.3f} s / {d.seconds:.3f} s = {ratio:.2f}x; "
                          f"vs qemu-img alone {a.seconds:.3f} s: {q.ours.seconds / a.seconds:.2f}x")
        else:
            record_target(BENCH, name, None, "did not run")
    inc = by_part.get("incremental")
    if inc is not None:
        full = _by_label(inc, "ours: full")
        for what in ("time", "bytes written"):
            name = f"incremental {what} <= {INCREMENTAL_RATIO:.2f}x a full copy"
            if full is None or not inc.ours.runs or not full.runs:
                record_target(BENCH, name, None, "did not run")
                continue
            if what == "time":
                part, whole = inc.ours.seconds or 0.0, full.seconds or 1.0
                detail = f"{part:.3f} s / {whole:.3f} s"
            else:
                part = float(inc.ours.bytes_written or 0)
                whole = float(full.bytes_written or 1)
                detail = f"{mib(part)} / {mib(whole)}"
            ratio = part / whole
            record_target(BENCH, name, ratio <= INCREMENTAL_RATIO, f"{detail} = {ratio:.3f}x")
    for key, state in (("archive", ""), ("archive-warm", ", page cache warm")):
        arc = by_part.get(key)
        if arc is None:
            continue
        name = (f"archive >= {ARCHIVE_RATIO:.2f}x the throughput of zstd -1 -T0 (with fsync"
                f"{state})")
        d, a = _by_label(arc, "zstd -1 -T0 +"), _by_label(arc, "zstd -1 -T0")
        if arc.missing:
            record_target(BENCH, name, None, f"archive: {arc.missing}")
        elif arc.ours.seconds and d and d.seconds and a and a.seconds:
            ratio = d.seconds / arc.ours.seconds  # throughput: the inverse of time
            record_target(BENCH, name, ratio >= ARCHIVE_RATIO,
                          f"ours {arc.throughput_bytes / arc.ours.seconds / MIB:,.0f} MiB/s "
                          f"/ zstd+fsync {arc.throughput_bytes / d.seconds / MIB:,.0f} MiB/s = "
                          f"{ratio:.2f}x; vs zstd alone: {a.seconds / arc.ours.seconds:.2f}x")
        else:
            record_target(BENCH, name, None, "did not run")


if __name__ == "__main__":
    sys.exit(main())
