"""Helpers shared by the benchmark modules: paths, timing, tables, targets.

Stdlib only, and nothing from the project: a benchmark measures the project as a user
runs it (a whole ``storage-console`` process), never by importing it.

Conventions for a ``bench_*.py`` module (``run.py`` finds them):

- it has ``main(argv: list[str] | None = None) -> int`` accepting ``--quick`` (a
  ``main()`` without a parameter works too: it then reads :func:`quick_requested`);
  where it keeps data comes from :func:`data_root` (``run.py --dir`` sets it);
- it prints its own result table(s);
- it calls :func:`record_target` for each target ratio so ``run.py`` can summarise;
- it returns 0 when it could measure (whether or not targets were met), non-zero when
  it could not (a tool missing, a daemon that would not start, a wrong result).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_DATA_ROOT = Path("/var/tmp/storage-console-bench")

# Set by run.py for modules whose main() takes no argv.
ENV_QUICK = "STORAGE_CONSOLE_BENCH_QUICK"
ENV_DATA_ROOT = "STORAGE_CONSOLE_BENCH_DIR"


class BenchError(Exception):
    """The benchmark cannot go on; the message says what failed and what to look at."""


# -- options shared by every module ------------------------------------------------


def quick_requested() -> bool:
    return os.environ.get(ENV_QUICK, "") not in ("", "0")


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where generated datasets live (reused between runs): never a tmpfs requirement."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_DATA_ROOT) or DEFAULT_DATA_ROOT)


def python_exe() -> str:
    venv_python = VENV_BIN / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def storage_console_exe() -> str:
    exe = VENV_BIN / "storage-console"
    if exe.exists():
        return str(exe)
    found = shutil.which("storage-console")
    if not found:
        raise BenchError("storage-console is not installed: run `make setup` first")
    return found


def require_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin", "/usr/bin") if os.access(p := f"{d}/{name}", os.X_OK)),
        None)
    if not found:
        raise BenchError(f"{name} is not installed (see the Makefile's APT_PACKAGES)")
    return found


# -- running and timing commands ---------------------------------------------------


def _tail(text: str | bytes | None, lines: int = 20) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
        check: bool = True, stdout: int | None = subprocess.PIPE,
        cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on failure or timeout raise BenchError with the command and stderr."""
    try:
        proc = subprocess.run(list(argv), stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=dict(env) if env is not None else None,
                              cwd=cwd, check=False)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv)}\n"
                         f"{_tail(err.stderr)}") from None
    except FileNotFoundError:
        raise BenchError(f"not found: {argv[0]}") from None
    if check and proc.returncode != 0:
        raise BenchError(f"exit status {proc.returncode}: {' '.join(argv)}\n"
                         f"{_tail(proc.stderr)}")
    return proc


def time_command(argv: Sequence[str], *, timeout: float,
                 env: Mapping[str, str] | None = None,
                 stdout: int | None = subprocess.DEVNULL) -> float:
    """Wall-clock seconds of one whole process (stdout discarded unless asked)."""
    start = time.perf_counter()
    run(argv, timeout=timeout, env=env, stdout=stdout)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def describe_runs(values: Sequence[float]) -> str:
    return "  ".join(f"{v:.3f}" for v in values)


# -- output ------------------------------------------------------------------------


def heading(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def note(message: str) -> None:
    print(f"  {message}", flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                right: Sequence[int] = ()) -> None:
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for n, r in enumerate(table):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  " + "  ".join(cells).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


# -- targets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    bench: str
    name: str
    met: bool | None  # None: could not be measured
    detail: str


TARGETS: list[Target] = []


def record_target(bench: str, name: str, met: bool | None, detail: str) -> Target:
    target = Target(bench, name, met, detail)
    TARGETS.append(target)
    verdict = {True: "met", False: "NOT met", None: "not measured"}[met]
    print(f"  target {name}: {verdict} ({detail})", flush=True)
    return target
