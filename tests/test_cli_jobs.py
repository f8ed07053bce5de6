"""The job commands as a script runs them: real processes, real images, the shared journal.

Results are checked with qemu-img (info, compare); the journal is read by a second
``Journal`` in this process, as a running console would.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.config import journal_path
from console.jobs.journal import JobRecord, JobState, Journal
from console.jobs.operations import temp_name
from tests.conftest import MakeImage
from tests.conftest_ui import slow_image

__all__ = ["slow_image"]  # a fixture

def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True,
                          text=True, timeout=60, input=stdin)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "console.cli", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                         check=True, capture_output=True).stdout
    return dict(json.loads(out))


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-f", a_fmt, "-F", b_fmt, str(a),
                           str(b)]).returncode == 0


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def journal() -> Journal:
    return Journal(journal_path())


def leftovers(pool: Path) -> list[str]:
    return [n for n in os.listdir(pool) if n.startswith(".sc-tmp")]


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    yield a, b


def wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_create_resize_copy_delete(pools: tuple[Path, Path]) -> None:
    a, b = pools
    done = run("create", str(a / "disk.qcow2"), "--size", "64M")
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout.splitlines()[-1] and not done.stderr
    assert (info(a / "disk.qcow2")["format"], info(a / "disk.qcow2")["virtual-size"]) == \
        ("qcow2", 64 << 20)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 3M",
                    str(a / "disk.qcow2")], check=True, capture_output=True)

    done = run("resize", str(a / "disk.qcow2"), "+64M")
    assert done.returncode == 0, done.stderr
    assert info(a / "disk.qcow2")["virtual-size"] == 128 << 20
    done = run("resize", str(a / "disk.qcow2"), "32M")  # a shrink without --shrink
    assert done.returncode == 1
    assert "smaller" in one_line(done.stderr) and "failed" in done.stderr
    assert info(a / "disk.qcow2")["virtual-size"] == 128 << 20

    done = run("copy", str(a / "disk.qcow2"), f"{b}/", "--format", "raw")
    assert done.returncode == 0, done.stderr
    assert info(b / "disk.qcow2")["format"] == "raw"
    assert identical(a / "disk.qcow2", "qcow2", b / "disk.qcow2", "raw")
    done = run("copy", str(a / "disk.qcow2"), str(b / "disk.qcow2"))
    assert done.returncode == 1 and "already exists" in one_line(done.stderr)
    done = run("copy", str(a / "disk.qcow2"), str(b / "disk.qcow2"), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert info(b / "disk.qcow2")["format"] == "qcow2"  # the source's format this time
    assert identical(a / "disk.qcow2", "qcow2", b / "disk.qcow2", "qcow2")

    done = run("delete", str(b / "disk.qcow2"))  # it holds data, and stdin is no terminal
    assert done.returncode == 2 and "--yes-i-am-sure-it-holds-data" in one_line(done.stderr)
    assert (b / "disk.qcow2").exists()
    done = run("delete", str(b / "disk.qcow2"), "--yes-i-am-sure-it-holds-data", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["kind"], record["state"], record["volume"]) == ("delete", "done",
                                                                   "disk.qcow2")
    assert not (b / "disk.qcow2").exists() and leftovers(a) == leftovers(b) == []

    listed = run("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [(j["kind"], j["state"]) for j in reversed(jobs)] == [
        ("create", "done"), ("resize", "done"), ("resize", "failed"), ("copy", "done"),
        ("copy", "failed"), ("copy", "done"), ("delete", "done")]
    assert all(j["who"] and "@" in j["who"] for j in jobs)
    text = run("jobs").stdout.splitlines()
    assert text[0].split() == ["ID", "STATE", "KIND", "VOLUME", "STAGE", "PCT", "SPEED",
                               "WHO", "ERROR"]
    assert len(text) == 8 and "failed" in text[3]


def test_addresses_backing_and_json(tmp_path: Path, make_image: MakeImage) -> None:
    pool = tmp_path / "images"
    pool.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f"[[host]]\nname = 'local'\n[[host.pool]]\nname = 'images'\n"
                      f"path = '{pool}'\n")
    make_image(pool / "base.qcow2", "qcow2", "8M")
    done = run("create", "local:images/over.qcow2", "--backing", "base.qcow2", "--json",
               "--config", str(config))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # only the final record: no progress lines
    assert (record["state"], record["host"], record["pool"]) == ("done", "local", "images")
    assert record["params"]["backing"] == "base.qcow2" and record["percent"] == 100
    over = info(pool / "over.qcow2")
    assert over["backing-filename"] == "base.qcow2" and over["virtual-size"] == 8 << 20
    # A second reader of the journal (a console) sees the job the command line ran.
    job = journal().get(record["id"])
    assert job.state == JobState.DONE and job.kind == "create" and job.finished


@pytest.mark.parametrize("args", [
    ("create", "{a}/new.qcow2", "--size", "1M"),
    ("resize", "{a}/keep.raw", "2M"),
    ("copy", "{a}/keep.raw", "{a}/copy.raw"),
    ("delete", "{a}/keep.raw"),
    ("create", "{a}/new.raw", "--size", "1M", "--format", "raw", "--preallocation", "full"),
    ("delete", "{a}/keep.raw", "--wipe", "zero", "--with-dependants"),
    ("snapshot", "{a}/keep.raw", "--name", "keep.snap"),
    ("clone", "{a}/keep.raw", "{a}/clone.qcow2"),
    ("growfs", "{a}/keep.raw"),
    ("archive", "{a}/keep.raw", "{a}/keep.raw.zst"),
    ("restore", "{a}/keep.raw.zst", "{a}/back.raw"),
    ("copy", "{a}/keep.raw", "{a}/copy.qcow2", "--base", "keep.raw"),
])
def test_read_only_is_refused_by_the_job_layer(pools: tuple[Path, Path], make_image: MakeImage,
                                               args: tuple[str, ...]) -> None:
    a, _ = pools
    make_image(a / "keep.raw", "raw", "1M")
    done = run(*(arg.format(a=a) for arg in args), "--read-only")
    assert done.returncode == 2
    assert "read-only" in one_line(done.stderr)
    assert sorted(os.listdir(a)) == ["keep.raw"]
    assert info(a / "keep.raw")["virtual-size"] == 1 << 20
    assert journal().jobs() == []  # refused before anything was journaled


@pytest.mark.parametrize(("args", "message"), [
    (("create", "{a}/x.qcow2", "--size", "12 parsecs"), "not a size"),
    (("create", "{a}/x.qcow2"), "--size is needed"),
    (("create", "/nonexistent/dir/x.qcow2", "--size", "1M"), "no such directory"),
    (("create", "nohost:pool/x.qcow2", "--size", "1M"), "no host 'nohost'"),
    (("delete", "{a}/missing.raw"), "missing.raw"),
    (("resize", "{a}/x.qcow2"), "the following arguments are required"),
    (("job", "cancel", "4242"), "no job 4242"),
    (("job", "explode", "1"), "invalid choice"),
    (("create", "{a}/x.raw", "--size", "1M", "--zero"), "add --preallocation"),
    (("delete", "{a}/x.raw", "--wipe", "twice"), "invalid choice"),
    (("clone", "{a}/s.qcow2", "{a}/c.qcow2", "--format", "raw"), "--strategy performance"),
    (("restore", "{a}/x.zst", "/nonexistent/dir/"), "no such directory"),
    (("snapshot", "{a}/missing.qcow2"), "missing.qcow2"),
    (("audit", "--limit", "0"), "--limit"),
])
def test_errors_are_one_line_exit_2(pools: tuple[Path, Path], args: tuple[str, ...],
                                    message: str) -> None:
    a, _ = pools
    done = run(*(arg.format(a=a) for arg in args))
    assert done.returncode == 2, done.stderr
    assert message in one_line(done.stderr)


def test_ctrl_c_cancels_the_copy(pools: tuple[Path, Path], slow_image: Path) -> None:
    a, b = pools
    src = a / "slow.qcow2"
    src.write_bytes(slow_image.read_bytes())
    child = start("copy", str(src), str(b / "copy.raw"), "--format", "raw")
    reader = journal()

    def copying() -> bool:
        jobs = reader.jobs()
        return bool(jobs) and jobs[0].stage == 2 and bool(leftovers(b))

    wait_for(copying)
    job = reader.jobs()[0]
    assert (job.state, job.kind, job.stages) == (JobState.RUNNING, "copy", 3)  # seen live
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=20)
    assert child.returncode == 1, err
    assert f"job {job.id}: stage 2/3 copy" in out.splitlines()  # plain lines: no terminal
    assert "cancelling job" in err and "was cancelled" in err and "Traceback" not in err
    job = reader.get(job.id)
    assert (job.state, job.error) == (JobState.ABORTED, "cancelled")
    assert os.listdir(b) == [".storage-console"]  # no target, no temporary file
    assert identical(src, "qcow2", slow_image, "qcow2")


def test_cancel_from_another_process(pools: tuple[Path, Path], slow_image: Path) -> None:
    a, b = pools
    src = a / "slow.qcow2"
    src.write_bytes(slow_image.read_bytes())
    child = start("copy", str(src), str(b / "copy.raw"), "--format", "raw")
    reader = journal()
    wait_for(lambda: bool(leftovers(b)))
    job_id = reader.jobs()[0].id
    done = run("job", "cancel", str(job_id))
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}: cancelled" in done.stdout
    _, err = child.communicate(timeout=20)
    assert child.returncode == 1 and "was cancelled" in err
    assert reader.get(job_id).state == JobState.ABORTED
    assert os.listdir(b) == [".storage-console"]


def interrupted_copy(src: Path, dest_pool: Path, name: str) -> JobRecord:
    """Journal a copy as a process that died mid-copy would have left it: running,
    owned by a dead process, a partial temporary file in the target pool."""
    j = journal()
    params = {"host": "local", "pool": str(src.parent), "volume": src.name,
              "dest_pool": str(dest_pool), "dest_name": name, "format": None,
              "overwrite": False}
    job = j.submit("copy", params, "local", str(src.parent), src.name)
    j.start(job.id, 3)
    temp = temp_name(job.id, name)
    j.remember(job.id, temp=temp, temp_pool=str(dest_pool))
    (dest_pool / temp).write_bytes(b"partial")
    with j.transaction() as conn:
        conn.execute("UPDATE jobs SET owner=?, stage=2 WHERE id=?",
                     (f"{socket.gethostname()}:999999999:0", job.id))  # no such pid
    return j.get(job.id)


def test_interrupted_job_is_reported_then_resumed_or_rolled_back(
        pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, b = pools
    src = make_image(a / "src.qcow2", "qcow2", "4M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 1M", str(src)],
                   check=True, capture_output=True)
    first = interrupted_copy(src, b, "one.qcow2")
    second = interrupted_copy(src, b, "two.qcow2")
    listed = run("jobs")
    assert listed.returncode == 0
    notes = listed.stderr.strip().splitlines()
    assert notes == [
        f"storage-console: job {job.id} (copy src.qcow2 → {name} in b) was interrupted: "
        f"`storage-console job resume {job.id}` or `storage-console job rollback {job.id}`"
        for job, name in ((first, "one.qcow2"), (second, "two.qcow2"))]
    assert run("jobs").stderr == ""  # reported once: they are interrupted now

    done = run("job", "resume", str(first.id))
    assert done.returncode == 0, done.stderr
    assert identical(src, "qcow2", b / "one.qcow2", "qcow2")
    done = run("job", "rollback", str(second.id), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "aborted"
    assert sorted(os.listdir(b)) == [".storage-console", "one.qcow2"]  # temps removed
    done = run("job", "rollback", str(second.id))
    assert done.returncode == 2 and "only interrupted or failed" in one_line(done.stderr)


def test_progress_bar_on_a_terminal(pools: tuple[Path, Path]) -> None:
    a, _ = pools
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "console.cli", "create",
                              str(a / "t.qcow2"), "--size", "1M"], stdout=slave,
                             stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert child.wait(30) == 0
    text = out.decode(errors="replace")
    assert "job 1" in text and "create t.qcow2" in text and "done" in text
    assert "━" in text and "100%" in text  # rich's bar, at its end
    assert (a / "t.qcow2").exists()


def test_read_only_is_accepted_by_reading_commands(pools: tuple[Path, Path]) -> None:
    a, _ = pools
    for args in (("ls", str(a)), ("pools", str(a)), ("jobs",)):
        done = run(*args, "--read-only")
        assert done.returncode == 0, done.stderr


def test_snapshot_then_clone(pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, b = pools
    disk = make_image(a / "disk.qcow2", "qcow2", "8M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 2M", str(disk)],
                   check=True, capture_output=True)
    done = run("snapshot", str(disk), "--name", "disk.snap", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["kind"], record["state"], record["params"]["name"]) == \
        ("snapshot", "done", "disk.snap")
    assert info(disk)["backing-filename"] == "disk.snap"  # the disk: an overlay on it
    assert (a / "disk.snap").stat().st_mode & 0o222 == 0  # read-only on disk
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 1M", str(disk)],
                   check=True, capture_output=True)  # the snapshot keeps the old data

    done = run("clone", str(a / "disk.snap"), str(b / "clone.qcow2"))
    assert done.returncode == 0, done.stderr
    assert "clone disk.snap → clone.qcow2 in b" in done.stdout
    clone = info(b / "clone.qcow2")
    assert clone["format"] == "qcow2" and clone["backing-filename"] == str(a / "disk.snap")
    assert identical(b / "clone.qcow2", "qcow2", a / "disk.snap", "qcow2")
    assert not identical(b / "clone.qcow2", "qcow2", disk, "qcow2")
    done = run("clone", str(a / "disk.snap"), f"{b}/", "--strategy", "performance",
               "--format", "raw")
    assert done.returncode == 0, done.stderr
    assert info(b / "disk.snap")["format"] == "raw"
    assert identical(b / "disk.snap", "raw", a / "disk.snap", "qcow2")
    assert leftovers(a) == leftovers(b) == []


def test_copy_strategies(pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, b = pools
    disk = make_image(a / "disk.raw", "raw", "8M")
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 1M", str(disk)],
                   check=True, capture_output=True)
    done = run("copy", str(disk), f"{b}/", "--strategy", "performance", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["strategy"] == "performance"
    assert (b / "disk.raw").stat().st_blocks * 512 >= 8 << 20  # preallocated
    assert identical(disk, "raw", b / "disk.raw", "raw")
    done = run("snapshot", str(disk), "--name", "gold")
    assert done.returncode == 0, done.stderr
    done = run("copy", str(a / "gold"), str(a / "thin"), "--strategy", "space")
    assert done.returncode == 0, done.stderr
    assert "(space)" in done.stdout
    assert info(a / "thin")["backing-filename"] == "gold"
    assert identical(a / "thin", "qcow2", a / "gold", "raw")
    done = run("copy", str(a / "gold"), str(b / "x"), "--base", "disk.raw",
               "--strategy", "performance")
    assert done.returncode == 2 and "--base" in one_line(done.stderr)
    assert "--strategy" in run("copy", "--help").stdout
    assert leftovers(a) == leftovers(b) == []


def test_archive_then_restore(pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, b = pools
    src = make_image(a / "src.qcow2", "qcow2", "8M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 3M", str(src)],
                   check=True, capture_output=True)
    done = run("archive", str(src), f"{b}/", "--level", "3")
    assert done.returncode == 0, done.stderr
    assert (b / "src.qcow2.zst").exists() and (b / "src.qcow2.zst.json").exists()
    done = run("archive", str(src), str(b / "src.qcow2.zst"))
    assert done.returncode == 1 and "exists" in one_line(done.stderr)

    done = run("restore", str(b / "src.qcow2.zst"), f"{b}/", "--format", "qcow2", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # a directory as DEST: the archive's name, less .zst
    assert (record["kind"], record["state"], record["volume"]) == ("restore", "done",
                                                                   "src.qcow2")
    assert info(b / "src.qcow2")["format"] == "qcow2"
    assert identical(b / "src.qcow2", "qcow2", src, "qcow2")
    make_image(a / "into.raw", "raw", "8M")
    done = run("restore", str(b / "src.qcow2.zst"), str(a / "into.raw"), "--into-existing")
    assert done.returncode == 0, done.stderr
    assert identical(a / "into.raw", "raw", src, "qcow2")
    assert leftovers(a) == leftovers(b) == []


def test_delete_wipe_zero(pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, _ = pools
    base = make_image(a / "base.qcow2", "qcow2", "4M")
    over = make_image(a / "over.qcow2", "qcow2", "4M", backing="base.qcow2",
                      backing_fmt="qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 0 1M", str(over)],
                   check=True, capture_output=True)
    done = run("delete", str(base), "--wipe", "zero")
    assert done.returncode == 2 and "based on it" in one_line(done.stderr)
    done = run("delete", str(base), "--wipe", "zero", "--with-dependants",
               "--yes-i-am-sure-it-holds-data", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["state"], record["params"]["wipe"], record["params"]["with_dependants"]) \
        == ("done", "zero", True)
    assert sorted(os.listdir(a)) == [".storage-console"]


def test_growfs(pools: tuple[Path, Path]) -> None:
    a, _ = pools
    image = a / "fs.raw"
    subprocess.run(["qemu-img", "create", "-f", "raw", str(image), "16M"], check=True,
                   capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)

    def blocks() -> int:
        out = subprocess.run(["dumpe2fs", "-h", str(image)], check=True, capture_output=True,
                             text=True).stdout
        return int(next(line.split(":")[1] for line in out.splitlines()
                        if line.startswith("Block count:")))

    before = blocks()
    done = run("resize", str(image), "32M")
    assert done.returncode == 0, done.stderr
    done = run("growfs", str(image))
    assert done.returncode == 0, done.stderr
    assert "growfs fs.raw" in done.stdout and "done" in done.stdout.splitlines()[-1]
    assert blocks() == 2 * before
    assert info(image)["virtual-size"] == 32 << 20


def test_incremental_copy_with_base(pools: tuple[Path, Path], make_image: MakeImage) -> None:
    a, b = pools
    base = make_image(a / "base.qcow2", "qcow2", "8M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 4M", str(base)],
                   check=True, capture_output=True)
    over = make_image(a / "over.qcow2", "qcow2", "8M", backing="base.qcow2",
                      backing_fmt="qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x78 1M 1M", str(over)],
                   check=True, capture_output=True)
    assert run("copy", str(base), f"{b}/").returncode == 0
    done = run("copy", str(over), f"{b}/", "--base", "base.qcow2")
    assert done.returncode == 0, done.stderr
    copied = info(b / "over.qcow2")
    assert copied["format"] == "qcow2" and copied["backing-filename"] == "base.qcow2"
    assert identical(b / "over.qcow2", "qcow2", over, "qcow2")


def test_audit_lists_the_commands_a_create_ran(pools: tuple[Path, Path]) -> None:
    a, _ = pools
    assert run("audit", "--json").stdout.strip() == "[]"  # nothing ran yet
    assert run("create", str(a / "aud.qcow2"), "--size", "1M").returncode == 0
    done = run("audit", "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    create = next(e for e in entries if e["argv"][:2] == ["qemu-img", "create"])
    assert create["host"] == "local" and create["returncode"] == 0
    assert "@" in create["who"] and create["duration"] >= 0
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    text = run("audit", "--host", "local", "--limit", "5").stdout.splitlines()
    assert text[0].split() == ["WHEN", "WHO", "HOST", "EXIT", "TIME", "COMMAND"]
    assert any("qemu-img create" in line and "aud.qcow2" in line for line in text[1:])
    assert len(text) <= 6
    assert run("audit", "--host", "elsewhere", "--json").stdout.strip() == "[]"
