"""Crash safety: kill -9 the process running a copy of a multi-GiB image, then recover.

Nothing may be left under the final name; the next start marks the job interrupted; a
resume produces a target identical to the source (qemu-img compare). The qemu-img the
dead process started dies with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from console.cache import Cache
from console.config import Config, journal_path
from console.inventory import Inventory
from console.jobs.journal import JobState, Journal
from console.jobs.runner import Runner
from tests.conftest import PATIENCE

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


def kill_9_past_5_percent(script: str, pool: str, journal_path: Path) -> tuple[Journal, int]:
    """Run ``script`` (it submits a job and prints its id) and kill -9 it once the job
    is past 5%: the journal as the dead process left it, and the job's id."""
    child = subprocess.Popen([sys.executable, "-c", script, pool, str(journal_path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    job_id = int(child.stdout.readline())
    journal = Journal(journal_path)
    deadline = time.monotonic() + PATIENCE
    while journal.get(job_id).percent < 5:
        assert child.poll() is None, "the job finished before it could be killed"
        assert time.monotonic() < deadline, "the job never made progress"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return journal, job_id


def test_kill_9_mid_copy_then_resume(tmp_path: Path, pool_dir: Path) -> None:
    make_source(pool_dir / "src.raw")
    pool = str(pool_dir.resolve())
    journal, job_id = kill_9_past_5_percent(CHILD, pool, tmp_path / "journal.db")
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


FIX_CHILD = textwrap.dedent("""
    import sys
    from console.cache import Cache
    from console.config import Config
    from console.inventory import Inventory
    from console.jobs.fixing import RunFix
    from console.jobs.journal import Journal
    from console.jobs.runner import Runner

    pool, journal = sys.argv[1], sys.argv[2]
    inv = Inventory(Config.for_targets([pool]), Cache(None))
    runner = Runner(Journal(journal), inv, journal_interval=0.02)
    job = runner.submit(RunFix("local", pool, "s4.qcow2", fix_type="optimize",
                               code="chain-too-deep",
                               fix_params={"name": "s4.qcow2", "format": "qcow2"}))
    print(job.id, flush=True)
    runner.wait(job.id)
""")


def test_kill_9_mid_flatten_fix_then_resume(tmp_path: Path, pool_dir: Path) -> None:
    # A fix is a job like the others: killed mid-way, the volume is whole and the same;
    # resumed, it finishes the flatten.
    make_source(pool_dir / "base.raw")
    below, below_fmt = "base.raw", "raw"
    for i in range(1, 5):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F",
                        below_fmt, str(pool_dir / f"s{i}.qcow2")], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {100 + i} {i * 200}M 1M",
                        str(pool_dir / f"s{i}.qcow2")], check=True, capture_output=True)
        below, below_fmt = f"s{i}.qcow2", "qcow2"
    top = pool_dir / "s4.qcow2"
    reference = tmp_path / "reference.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(top),
                    str(reference)], check=True)
    pool = str(pool_dir.resolve())
    journal, job_id = kill_9_past_5_percent(FIX_CHILD, pool, tmp_path / "journal.db")
    assert journal.get(job_id).state == JobState.RUNNING
    # Killed mid-way: the volume is still the 5-deep chain, its content unchanged.
    assert subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", str(top),
                           str(reference)], capture_output=True).returncode == 0

    inv = Inventory(Config.for_targets([pool]), Cache(None))
    runner = Runner(journal, inv)
    (interrupted,) = runner.recover()
    assert interrupted.id == job_id
    done = runner.wait(runner.resume(job_id).id, 120)
    runner.close()
    assert (done.state, done.error) == (JobState.DONE, None)
    assert done.resume["after"]["depth"] == 1
    compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", str(top),
                              str(reference)], capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert [n for n in os.listdir(pool_dir) if n.startswith(".sc-tmp-")] == []


def children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:  # field 4: the parent
            found.append((int(entry), cmdline))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (a container's init may be slow to reap it, or never)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


SILENT = textwrap.dedent("""
    import sys, threading
    from backends.transport import lifeline
    from backends.transport.local import LocalTransport

    if sys.argv[1] == "lifeline":
        assert lifeline.enable()
    # From a worker thread that waits for it, as a job runs its commands.
    worker = threading.Thread(target=LocalTransport().run, args=(["sleep", "6000"],),
                              kwargs={"should_cancel": lambda: False})
    worker.start()
    print("started", flush=True)
    worker.join()
""")


@pytest.mark.parametrize("lifeline", [True, False])
def test_a_silent_command_dies_with_its_process(lifeline: bool) -> None:
    """A command that writes nothing (qemu-img compare, or convert between two progress
    lines on slow storage) gets no SIGPIPE to end it: only the lifeline does."""
    proc = subprocess.Popen([sys.executable, "-c", SILENT, "lifeline" if lifeline else "-"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    deadline = time.monotonic() + 10
    while not (sleeping := [pid for pid, cmd in children(proc.pid) if cmd.startswith(b"sleep")]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # With the lifeline it dies: wait for that as long as a busy machine needs. Without,
    # nothing ends its long sleep: a second's look shows it still there.
    deadline = time.monotonic() + (PATIENCE if lifeline else 1)
    while alive(sleeping[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert alive(sleeping[0]) is not lifeline
    finally:
        if alive(sleeping[0]):
            os.kill(sleeping[0], signal.SIGKILL)


def test_kill_9_of_the_command_line_kills_its_qemu_img(pool_dir: Path) -> None:
    make_source(pool_dir / "src.raw")
    src, dst = pool_dir / "src.raw", pool_dir / "dst.qcow2"
    cli = subprocess.Popen([sys.executable, "-m", "console.cli", "copy", str(src), str(dst),
                            "--format", "qcow2", "--json"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    qemu: list[tuple[int, bytes]] = []
    while not qemu:  # mid-copy: qemu-img has been started (the copy takes seconds)
        assert cli.poll() is None, "the copy ended before it could be killed"
        assert time.monotonic() < deadline, "the copy never got going"
        qemu = [c for c in children(cli.pid) if c[1].startswith(b"qemu-img\0convert")]
        time.sleep(0.01)
    ((pid, cmdline),) = qemu
    assert b".sc-tmp-" in cmdline and b"convert" in cmdline  # writing the job's temp file
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    # At once. (Left alone, qemu-img -p would also die, of SIGPIPE, at its next progress
    # line: seconds here, minutes on slow storage; the test above covers silent ones.)
    deadline = time.monotonic() + 1
    while alive(pid):
        assert time.monotonic() < deadline, f"qemu-img ({pid}) outlived the killed process"
        time.sleep(0.02)
    assert not dst.exists()

    (job,) = Journal(journal_path()).jobs(limit=1)
    assert job.state == JobState.RUNNING  # what the dead process left
    done = subprocess.run([sys.executable, "-m", "console.cli", "job", "resume", str(job.id),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(src),
                              str(dst)], capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert [n for n in os.listdir(pool_dir) if n.startswith(".sc-tmp-")] == []
