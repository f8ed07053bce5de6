"""Copying volumes between hosts against the real sshd fleet (hosts run on this machine,
so a "remote" pool is a local directory): sparse, zstd on the wire when both ends have
it, progress, publish-whole, cancel, overwrite, --base and resume after a kill."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.contract import ReadOnlyViolation
from backends.model import Progress
from backends.transfer import copy_file
from backends.transport import sparse
from backends.transport.local import LocalTransport
from backends.transport.scanner import TEMP_PREFIX
from backends.transport.ssh import SshTransport
from console.cache import Cache
from console.config import Config, journal_path
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState, Journal
from console.jobs.operations import describe_job
from console.jobs.runner import Runner
from console.jobs.transfer import TransferVolume
from tests.harness.sshd import Fleet

MiB = 1 << 20


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
                          capture_output=True).returncode == 0


def write_data(path: Path, size: int, extents: list[tuple[int, int]]) -> Path:
    """A sparse file of ``size`` bytes with random data at each (offset, length)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in extents:
            f.seek(offset)
            for _ in range(0, length, MiB):
                f.write(os.urandom(min(MiB, length)))
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture
def pools(tmp_path: Path) -> dict[str, Path]:
    found = {}
    for name in ("a", "b", "nozstd", "local"):
        found[name] = tmp_path / name
        found[name].mkdir()
    return found


@pytest.fixture
def conf(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path, pools: dict[str, Path]) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("".join(
        f"[[host]]\nname = '{n}'\nuri = '{sshd_fleet.uri(n)}'\n"
        f"[[host.pool]]\nname = 'images'\npath = '{pools[n]}'\n"
        for n in ("a", "b", "nozstd")))
    return path


def audit(host: str) -> list[list[str]]:
    listing = cli("audit", "--host", host, "--json")
    assert listing.returncode == 0, listing.stderr
    return [e["argv"] for e in json.loads(listing.stdout)]


def last_job() -> JobRecord:
    journal = Journal(journal_path())
    try:
        return max((j for j in journal.jobs() if j.kind == "transfer"), key=lambda j: j.id)
    finally:
        journal.close()


def last_transfer() -> dict[str, object]:
    return dict(last_job().resume["transfer"])


def test_copy_a_to_b_travels_sparse_and_compressed(conf: Path, pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "vm.raw", 256 * MiB,
                        [(1 * MiB, 8 * MiB), (100 * MiB, 4 * MiB)])
    with open(source, "r+b") as f:  # allocated zeroes: they travel as a hole
        f.seek(200 * MiB)
        f.write(bytes(4 * MiB))
    done = cli("copy", "a:images/vm.raw", "b:images/vm.raw", "--config", str(conf), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "done"
    target = pools["b"] / "vm.raw"
    assert identical(source, "raw", target, "raw")
    assert os.path.getsize(target) == 256 * MiB
    assert allocated(target) <= 12 * MiB + MiB < allocated(source)  # the zeroes stayed holes
    assert not [p for p in os.listdir(pools["b"]) if p.startswith(TEMP_PREFIX)]
    stats = last_transfer()
    assert stats["zstd"] is True and stats["data_bytes"] == 12 * MiB
    assert any("zstd" in argv and "sparse-send" in argv for argv in audit("a"))
    assert any("zstd" in argv and "sparse-receive" in argv for argv in audit("b"))
    assert describe_job(last_job()) == "copy a:images/vm.raw → b:images/vm.raw"
    listing = cli("jobs")
    assert "transfer  a:images/vm.raw → b:images/vm.raw" in listing.stdout, listing.stderr


def test_copy_from_and_to_this_machine(conf: Path, pools: dict[str, Path]) -> None:
    here = pools["local"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(here / "vm.qcow2"), "64M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 3M", "-c",
                    "write -P 9 40M 2M", str(here / "vm.qcow2")], check=True,
                   capture_output=True)
    up = cli("copy", str(here / "vm.qcow2"), "a:images/vm.qcow2", "--config", str(conf))
    assert up.returncode == 0, up.stderr
    assert identical(here / "vm.qcow2", "qcow2", pools["a"] / "vm.qcow2", "qcow2")
    down = cli("copy", "a:images/vm.qcow2", str(here / "back.qcow2"), "--config", str(conf))
    assert down.returncode == 0, down.stderr
    assert identical(here / "vm.qcow2", "qcow2", here / "back.qcow2", "qcow2")
    assert allocated(here / "back.qcow2") < 8 * MiB


def test_a_host_without_zstd_gets_the_raw_stream(conf: Path, pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "vm.raw", 32 * MiB, [(4 * MiB, 2 * MiB)])
    done = cli("copy", "a:images/vm.raw", "nozstd:images/vm.raw", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert identical(source, "raw", pools["nozstd"] / "vm.raw", "raw")
    stats = last_transfer()
    assert stats["zstd"] is False and stats["data_bytes"] == 2 * MiB
    received = [argv for argv in audit("nozstd") if "sparse-receive" in argv]
    assert received and all("zstd" not in argv for argv in received)


def test_progress_is_heard_over_ssh(ssh_home: Path, sshd_fleet: Fleet,
                                   pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "vm.raw", 64 * MiB, [(0, 24 * MiB)])
    a, b = SshTransport("a", sshd_fleet.uri("a")), SshTransport("b", sshd_fleet.uri("b"))
    heard: list[tuple[int, int]] = []
    try:
        result = copy_file(a, str(source), b, str(pools["b"] / "new.raw"), compress=True,
                           progress=lambda done, total: heard.append((done, total)))
    finally:
        a.close()
        b.close()
    assert heard and heard[-1] == (24 * MiB, 24 * MiB)
    assert result.data_bytes == 24 * MiB and result.compressed
    assert identical(source, "raw", pools["b"] / "new.raw", "raw")


def test_cancel_mid_copy_leaves_nothing_on_the_target(conf: Path,
                                                      pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "big.raw", 2048 * MiB, [(0, 384 * MiB)])
    before = os.stat(source)
    inv = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(journal_path()), inv)
    try:
        job = runner.submit(TransferVolume("a", "images", "big.raw", dest_host="b",
                                           dest_pool="images", dest_name="big.raw"))
        deadline = time.monotonic() + 60
        while not [p for p in os.listdir(pools["b"]) if p.startswith(TEMP_PREFIX)]:
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.02)
        runner.cancel(job.id)
        finished = runner.wait(job.id, timeout=60)
    finally:
        runner.close()
        inv.close()
    assert finished.state == JobState.ABORTED, finished.error
    assert os.listdir(pools["b"]) in ([], [".storage-console"])
    after = os.stat(source)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_existing_target_needs_overwrite(conf: Path, pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "vm.raw", 8 * MiB, [(0, MiB)])
    (pools["b"] / "vm.raw").write_bytes(b"precious")
    refused = cli("copy", "a:images/vm.raw", "b:images/vm.raw", "--config", str(conf))
    assert refused.returncode != 0 and "exists" in refused.stderr
    assert (pools["b"] / "vm.raw").read_bytes() == b"precious"
    replaced = cli("copy", "a:images/vm.raw", "b:images/vm.raw", "--overwrite",
                   "--config", str(conf))
    assert replaced.returncode == 0, replaced.stderr
    assert identical(source, "raw", pools["b"] / "vm.raw", "raw")


def make_chain(pool: Path, size: str = "64M") -> Path:
    """base.qcow2 (data at 0 and 8 MiB) under top.qcow2 (data at 4 MiB, and a range
    zeroed over the base's): the guest sees all of it."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool / "base.qcow2"),
                    size], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 3M", "-c",
                    "write -P 6 8M 2M", str(pool / "base.qcow2")], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(pool / "top.qcow2")], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 4M 1M", "-c",
                    "write -z 1M 1M", str(pool / "top.qcow2")], check=True,
                   capture_output=True)
    return pool / "top.qcow2"


def info(path: Path) -> dict[str, object]:
    return dict(json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True,
        text=True).stdout))


def test_a_chain_without_base_is_copied_flattened(conf: Path, pools: dict[str, Path]) -> None:
    top = make_chain(pools["a"])
    done = cli("copy", "a:images/top.qcow2", "b:images/top.qcow2", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    copy = pools["b"] / "top.qcow2"
    found = info(copy)
    assert found["format"] == "qcow2" and "backing-filename" not in found
    assert identical(top, "qcow2", copy, "qcow2")  # the guest sees the same disk
    assert sorted(os.listdir(pools["b"])) in (["top.qcow2"], [".storage-console", "top.qcow2"])
    assert not [p for p in os.listdir(pools["a"]) if p.startswith(TEMP_PREFIX)]
    converted = [argv for argv in audit("a") if argv[:2] == ["qemu-img", "convert"]]
    assert converted and "-f" in converted[0] and "-O" in converted[0]


@pytest.mark.parametrize(("src_fmt", "dest_fmt"), [("qcow2", "raw"), ("raw", "qcow2")])
def test_format_is_converted_on_the_source_host(conf: Path, pools: dict[str, Path],
                                                src_fmt: str, dest_fmt: str) -> None:
    source = pools["a"] / f"vm.{src_fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", src_fmt, str(source), "96M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", src_fmt, "-c", "write -P 3 2M 6M", "-c",
                    "write -P 4 70M 1M", str(source)], check=True, capture_output=True)
    done = cli("copy", f"a:images/vm.{src_fmt}", f"b:images/vm.{dest_fmt}", "--format",
               dest_fmt, "--config", str(conf), "--json")
    assert done.returncode == 0, done.stderr
    copy = pools["b"] / f"vm.{dest_fmt}"
    assert info(copy)["format"] == dest_fmt
    assert identical(source, src_fmt, copy, dest_fmt)
    assert allocated(copy) < 16 * MiB  # sparse all the way
    assert not [p for p in os.listdir(pools["a"]) if p.startswith(TEMP_PREFIX)]
    job = last_job()
    assert job.stages == 4 and job.stage_label == "publish"


def test_base_and_another_format_are_refused(conf: Path, pools: dict[str, Path]) -> None:
    make_chain(pools["a"])
    refused = cli("copy", "a:images/top.qcow2", "b:images/top.raw", "--base", "base.qcow2",
                  "--format", "raw", "--config", str(conf))
    assert refused.returncode != 0 and "cannot change its format" in refused.stderr


def test_base_sends_only_the_overlay(conf: Path, pools: dict[str, Path]) -> None:
    a = pools["a"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(a / "base.qcow2"), "256M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 96M",
                    str(a / "base.qcow2")], check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(a / "top.qcow2")], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 10M 1M",
                    str(a / "top.qcow2")], check=True, capture_output=True)
    base = cli("copy", "a:images/base.qcow2", "b:images/base.qcow2", "--config", str(conf))
    assert base.returncode == 0, base.stderr
    wrong = cli("copy", "a:images/top.qcow2", "b:images/top.qcow2", "--base", "nothere",
                "--config", str(conf))
    assert wrong.returncode != 0
    top = cli("copy", "a:images/top.qcow2", "b:images/top.qcow2", "--base", "base.qcow2",
              "--config", str(conf))
    assert top.returncode == 0, top.stderr
    stats = last_transfer()
    assert int(str(stats["wire_bytes"])) < 4 * MiB  # the 96 MiB base stayed where it was
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(pools["b"] / "top.qcow2")],
        check=True, capture_output=True, text=True).stdout)
    assert info["backing-filename"] == "base.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert identical(a / "top.qcow2", "qcow2", pools["b"] / "top.qcow2", "qcow2")


def test_a_base_that_differs_is_refused(conf: Path, pools: dict[str, Path]) -> None:
    a, b = pools["a"], pools["b"]
    for pool in (a, b):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool / "base.qcow2"),
                        "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", str(b / "base.qcow2")],
                   check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(a / "top.qcow2")], check=True)
    refused = cli("copy", "a:images/top.qcow2", "b:images/top.qcow2", "--base", "base.qcow2",
                  "--config", str(conf))
    assert refused.returncode != 0 and "copy of" in refused.stderr
    assert sorted(os.listdir(b)) in (["base.qcow2"], [".storage-console", "base.qcow2"])


def test_kill_mid_copy_then_resume(conf: Path, pools: dict[str, Path]) -> None:
    source = write_data(pools["a"] / "big.raw", 1024 * MiB, [(0, 384 * MiB)])
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "copy", "a:images/big.raw",
                             "b:images/big.raw", "--config", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not [p for p in os.listdir(pools["b"]) if p.startswith(TEMP_PREFIX)]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    job = last_job()
    resumed = cli("job", "resume", str(job.id), "--config", str(conf))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert identical(source, "raw", pools["b"] / "big.raw", "raw")
    assert not [p for p in os.listdir(pools["b"]) if p.startswith(TEMP_PREFIX)]


def test_local_transports_take_the_same_way(tmp_path: Path) -> None:
    source = write_data(tmp_path / "src.raw", 16 * MiB, [(MiB, MiB)])
    heard: list[tuple[str, tuple[str, ...], int]] = []
    here = LocalTransport("here")
    here.observer = lambda host, argv, code, secs: heard.append((host, argv, code))
    progress: list[Progress] = []
    result = copy_file(here, str(source), here, str(tmp_path / "dst.raw"), compress=False,
                       progress=lambda d, t: progress.append(Progress(done=d, total=t)))
    assert result.data_bytes == MiB and progress[-1].percent == 100.0
    assert identical(source, "raw", tmp_path / "dst.raw", "raw")
    assert sorted((argv[0], code) for _, argv, code in heard) == [("sparse-receive", 0),
                                                                  ("sparse-send", 0)]


def test_spawn_is_refused_in_read_only_mode(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ReadOnlyViolation):
        LocalTransport("here", read_only=True).spawn(["touch", str(marker)])
    assert not marker.exists()


def test_a_damaged_stream_leaves_no_file(tmp_path: Path) -> None:
    source = write_data(tmp_path / "src.raw", 4 * MiB, [(MiB, MiB)])
    stream = io.BytesIO()
    sparse.send(str(source), stream.write)
    data = bytearray(stream.getvalue())
    data[len(sparse.MAGIC) + 3 * sparse.FRAME.size + 100] ^= 1  # a byte of the data
    with pytest.raises(sparse.ChecksumError):
        sparse.receive(str(tmp_path / "dst.raw"), io.BytesIO(bytes(data)))
    with pytest.raises(sparse.StreamError):  # cut short
        sparse.receive(str(tmp_path / "dst.raw"), io.BytesIO(bytes(data[:-40])))
    assert not (tmp_path / "dst.raw").exists()
    size, sent, _ = sparse.receive(str(tmp_path / "dst.raw"), io.BytesIO(stream.getvalue()))
    assert (size, sent) == (4 * MiB, MiB)
    assert (tmp_path / "dst.raw").read_bytes() == source.read_bytes()


def test_a_job_starts_one_agent_session_per_host(conf: Path, pools: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Locks, probes, the space check and publish go through one agent per host; the
    stream's two ends and the refresh's scan are the only other agents."""
    from backends.transport import ssh
    from console.jobs.locks import LOCK_DIR, lock_path

    started: list[tuple[str, str]] = []
    start_agent, spawn = ssh.SshTransport._start_agent, ssh.SshTransport.spawn

    def counted_start(self: ssh.SshTransport, op: str, args: dict[str, object]) -> object:
        started.append((self.host, op))
        return start_agent(self, op, args)

    def counted_spawn(self: ssh.SshTransport, argv: list[str], **kw: object) -> object:
        started.append((self.host, "stream"))
        return spawn(self, argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh.SshTransport, "_start_agent", counted_start)
    monkeypatch.setattr(ssh.SshTransport, "spawn", counted_spawn)
    source = write_data(pools["a"] / "vm.raw", 16 * MiB, [(0, 2 * MiB)])
    inv = Inventory(Config.load(conf), Cache(None))
    # The job's own agents are counted: the auto-fix check after it has its own.
    runner = Runner(Journal(journal_path()), inv, auto_fix=False)
    try:
        job = runner.wait(runner.submit(TransferVolume(
            "a", "images", "vm.raw", dest_host="b", dest_pool="images",
            dest_name="vm.raw")).id, 120)
    finally:
        runner.close()
        inv.close()
    assert job.state == JobState.DONE, job.error
    assert identical(source, "raw", pools["b"] / "vm.raw", "raw")
    assert sorted(started) == [("a", "session"), ("a", "stream"), ("b", "scan_directory"),
                               ("b", "session"), ("b", "stream")]
    # The sessions let their locks go: both can be taken again at once.
    here = LocalTransport("here")
    with here.lock_file(lock_path(str(pools["a"] / LOCK_DIR), "vm.raw"), "test"), \
            here.lock_file(lock_path(str(pools["b"] / LOCK_DIR), "vm.raw"), "test"):
        pass


def test_a_locked_source_stops_the_job_before_anything_moves(conf: Path,
                                                              pools: dict[str, Path]) -> None:
    from console.jobs.locks import LOCK_DIR, lock_path

    write_data(pools["a"] / "vm.raw", 8 * MiB, [(0, MiB)])
    with LocalTransport("a").lock_file(lock_path(str(pools["a"] / LOCK_DIR), "vm.raw"),
                                       "job 999 (someone)"):
        refused = cli("copy", "a:images/vm.raw", "b:images/vm.raw", "--config", str(conf))
    assert refused.returncode != 0 and "locked by job 999" in refused.stderr
    assert os.listdir(pools["b"]) in ([], [".storage-console"])


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB ext4 mounted on a loop device (root only): a pool that fills up."""
    image, mnt = tmp_path / "fs.img", tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True,
                   capture_output=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_flattening_without_room_on_the_source_is_refused(conf: Path, small_pool: Path,
                                                         pools: dict[str, Path]) -> None:
    base = small_pool / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 14M", str(base)],
                   check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(small_pool / "top.qcow2")], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 8 20M 2M",
                    str(small_pool / "top.qcow2")], check=True, capture_output=True)
    with open(conf, "a") as f:  # host a's second pool, on the small file system
        f.write(f"[[host]]\nname = 'a2'\nuri = '{_uri_of(conf, 'a')}'\n"
                f"[[host.pool]]\nname = 'small'\npath = '{small_pool}'\n")
    refused = cli("copy", "a2:small/top.qcow2", "b:images/top.qcow2", "--config", str(conf))
    assert refused.returncode != 0
    message = refused.stderr
    assert "flattening it needs room for a staging copy" in message
    assert "host 'a2', pool 'small', volume 'top.qcow2'" in message
    assert re.search(r"needs \d+(\.\d+)?M, pool has", message), message
    assert sorted(os.listdir(small_pool)) == [".storage-console", "base.qcow2",
                                              "lost+found", "top.qcow2"]
    assert os.listdir(pools["b"]) in ([], [".storage-console"])


def _uri_of(conf: Path, host: str) -> str:
    import tomllib

    hosts = tomllib.loads(conf.read_text())["host"]
    return str(next(h["uri"] for h in hosts if h["name"] == host))


@pytest.mark.parametrize("stage", ["convert", "transfer"])
def test_cancel_while_flattening_leaves_nothing_on_either_host(
        conf: Path, pools: dict[str, Path], stage: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(pools["a"] / "base.qcow2"),
                    "2G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 512M",
                    str(pools["a"] / "base.qcow2")], check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(pools["a"] / "top.qcow2")], check=True)
    before = sorted(os.listdir(pools["a"]))
    inv = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(journal_path()), inv)
    try:
        job = runner.submit(TransferVolume("a", "images", "top.qcow2", dest_host="b",
                                           dest_pool="images", dest_name="top.qcow2"))
        deadline = time.monotonic() + 120
        while runner.journal.get(job.id).stage_label != stage:
            assert time.monotonic() < deadline, "the stage never came"
            assert runner.journal.get(job.id).state in (JobState.PENDING, JobState.RUNNING)
            time.sleep(0.01)
        where = pools["a" if stage == "convert" else "b"]  # the half-written file
        while not [p for p in os.listdir(where) if p.startswith(TEMP_PREFIX)]:
            assert time.monotonic() < deadline, f"nothing was written in {where}"
            time.sleep(0.01)
        runner.cancel(job.id)
        finished = runner.wait(job.id, timeout=60)
    finally:
        runner.close()
        inv.close()
    assert finished.state == JobState.ABORTED, finished.error
    assert sorted(os.listdir(pools["a"])) in (before, sorted([*before, ".storage-console"]))
    assert os.listdir(pools["b"]) in ([], [".storage-console"])
