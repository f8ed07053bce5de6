"""Crash safety: kill -9 the process running a copy of a multi-GiB image, then recover.

Nothing may be left under the final name; the next start marks the job interrupted; a
resume produces a target identical to the source (qemu-img compare).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.runner import Runner

CHILD = textwrap.dedent("""
    import sys
    from console.cache import Cache
    from console.config import Config
    from console.inventory import Inventory
    from console.jobs.journal import Journal
    from console.jobs.operations import CopyVolume
    from console.jobs.runner import Runner

    pool, journal = sys.argv[1], sys.argv[2]
    inv = Inventory(Config.for_targets([pool]), Cache(None))
    runner = Runner(Journal(journal), inv, journal_interval=0.02)
    job = runner.submit(CopyVolume("local", pool, "src.raw", dest_pool=pool,
                                   dest_name="dst.qcow2", format="qcow2"))
    print(job.id, flush=True)
    runner.wait(job.id)
""")


def make_source(path: Path) -> None:
    """3 GiB virtual, 768 MiB of data in 16 extents with distinct patterns."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "3G"], check=True)
    writes = []
    for i in range(16):
        writes += ["-c", f"write -P {i + 1} {i * 192}M 48M"]
    subprocess.run(["qemu-io", "-f", "raw", *writes, str(path)], check=True,
                   capture_output=True)


def test_kill_9_mid_copy_then_resume(tmp_path: Path, pool_dir: Path) -> None:
    make_source(pool_dir / "src.raw")
    pool = str(pool_dir.resolve())
    journal_path = tmp_path / "journal.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, pool, str(journal_path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    job_id = int(child.stdout.readline())
    journal = Journal(journal_path)
    deadline = time.monotonic() + 60
    while journal.get(job_id).percent < 5:
        assert child.poll() is None, "the copy finished before it could be killed"
        assert time.monotonic() < deadline, "the copy never made progress"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert journal.get(job_id).state == JobState.RUNNING  # what the dead process left
    assert not (pool_dir / "dst.qcow2").exists()

    inv = Inventory(Config.for_targets([pool]), Cache(None))
    runner = Runner(journal, inv)
    (interrupted,) = runner.recover()
    assert interrupted.id == job_id and interrupted.state == JobState.INTERRUPTED
    done = runner.wait(runner.resume(job_id).id, 120)
    runner.close()
    assert (done.state, done.error) == (JobState.DONE, None)
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(pool_dir / "src.raw"), str(pool_dir / "dst.qcow2")],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    leftovers = [n for n in os.listdir(pool_dir) if n.startswith(".sc-tmp-")]
    assert leftovers == []
