"""Run every benchmark: each ``benchmarks/bench_*.py`` module that has a ``main()``.

    .venv/bin/python benchmarks/run.py            # all, full size (make bench)
    .venv/bin/python benchmarks/run.py --quick    # smaller data: a smoke run
    .venv/bin/python benchmarks/run.py --only listing --dir /srv/scratch

A module's ``main`` may take ``argv``: it then gets ``["--quick"]`` when asked (so it
must accept that option), else ``[]``. A ``main()`` without parameters reads the same
choice from the environment (``common.quick_requested()``). ``--dir`` is passed in the
environment only (``common.data_root()``). Adding a benchmark is adding a file:
nothing here needs to change.

Timings are never pass/fail: the exit status is 0 when every benchmark could measure,
whether or not its targets were met (the summary says which were). It is 1 when a
benchmark could not run or found a wrong result (a daemon that would not start, a
listing that does not match the data), so a broken benchmark does not pass silently.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # run as a script: sys.path is set just above

HERE = Path(__file__).resolve().parent


def discover() -> dict[str, Path]:
    """``{"listing": .../bench_listing.py, ...}`` in name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def _accepts_argv(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return bool(params)


def run_one(name: str, argv: list[str]) -> tuple[str, float]:
    """Import and run one module; returns (status, seconds)."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"bench_{name}")
    except Exception:
        traceback.print_exc()
        return "import failed", time.perf_counter() - start
    main = getattr(module, "main", None)
    if not callable(main):
        return "skipped (no main())", 0.0
    try:
        code = main(argv) if _accepts_argv(main) else main()
    except KeyboardInterrupt:
        raise
    except SystemExit as exit_:  # argparse --help, or a sys.exit inside
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:
        traceback.print_exc()
        return "crashed", time.perf_counter() - start
    status = "ok" if code in (0, None) else f"failed (status {code})"
    return status, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run the benchmarks (timings are reported, never pass/fail).")
    parser.add_argument("--quick", action="store_true", help="smaller data: a smoke run")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (repeatable): "
                        + ", ".join(available))
    parser.add_argument("--dir", help="where datasets are generated and kept "
                        f"(default {common.DEFAULT_DATA_ROOT})")
    args = parser.parse_args(argv)

    selected = list(available)
    if args.only:
        wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.only]
        unknown = [n for n in wanted if n not in available]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)} "
                         f"(available: {', '.join(available)})")
        selected = wanted
    if not selected:
        print("no benchmarks found (benchmarks/bench_*.py)")
        return 1

    if args.quick:
        os.environ[common.ENV_QUICK] = "1"
    if args.dir:
        os.environ[common.ENV_DATA_ROOT] = str(Path(args.dir).resolve())
    # Only --quick goes on the command line (every module accepts it); --dir travels in
    # the environment, read by common.data_root(), so a module without it does not break.
    module_argv = ["--quick"] if args.quick else []

    results: list[tuple[str, str, float]] = []
    for name in selected:
        print(f"\n######## bench_{name}{' (quick)' if args.quick else ''} ########", flush=True)
        status, seconds = run_one(name, list(module_argv))
        results.append((name, status, seconds))

    common.heading("summary")
    common.print_table(["benchmark", "status", "took"],
                       [[n, s, f"{t:.0f} s"] for n, s, t in results], right=(2,))
    if common.TARGETS:
        print()
        verdicts = {True: "met", False: "NOT met", None: "not measured"}
        common.print_table(
            ["benchmark", "target", "verdict", "measured"],
            [[t.bench, t.name, verdicts[t.met], t.detail] for t in common.TARGETS])
    missed = [t for t in common.TARGETS if t.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) NOT met (reported, not a failure).")
    broken = [n for n, s, _ in results if s != "ok" and not s.startswith("skipped")]
    if broken:
        print(f"\nbenchmark(s) that could not measure: {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
