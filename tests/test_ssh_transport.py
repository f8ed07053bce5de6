"""The SSH transport against real sshd instances on loopback (tests/harness/sshd.py):
host keys (unknown, changed, trusted), listings equal to the local ones (agent and shell
fallback), hostile names, read-only refusals, streaming and cancel, hosts that die or
hang, ProxyJump, and locks held on the host."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import marshal
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backends.contract import (
    Cancelled,
    CommandFailed,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    PoolUnavailable,
    ReadOnlyViolation,
    VolumeBusy,
)
from backends.drivers.dir.driver import DirDriver
from backends.model import Pool, PoolScan
from backends.transport import ssh as ssh_module
from backends.transport.agent import ENTRIES_PER_PART
from backends.transport.bundle import AGENT_MODULES, agent_digest
from backends.transport.local import LocalTransport
from backends.transport.ssh import SshTransport, resolve, trust_host_key
from tests.conftest import PATIENCE, MakeImage, strip_backing_format
from tests.harness.sshd import Fleet

# A command substitution can hold no "/" in a file name: it would touch "pwned" in the
# remote shell's directory (root's home, where sshd starts sessions), or in HOME.
HOSTILE = ["with space.qcow2", "new\nline.qcow2", "semi;colon.raw", "$(touch pwned)",
           "`touch pwned`", "-leading-dash.raw", "quote'and\"dq.raw", "*"]
HOSTILE_BYTES = b"latin1-\xe9t\xe9.raw"  # not UTF-8


def keygen_fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def transport(fleet: Fleet, name: str, **kwargs: object) -> SshTransport:
    return SshTransport(name, fleet.uri(name), **kwargs)  # type: ignore[arg-type]


def sessions_since(fleet: Fleet, name: str, offset: int) -> list[str]:
    return [line for line in fleet[name].log_text()[offset:].splitlines()
            if "Accepted publickey" in line or "Starting session" in line]


# -- host keys ------------------------------------------------------------------------


def test_unknown_host_key_refused_before_anything_runs(ssh_home: Path, sshd_fleet: Fleet,
                                                       tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    offset = len(sshd_fleet["unknown"].log_text())
    t = transport(sshd_fleet, "unknown", known_hosts=str(tmp_path / "console_known_hosts"))
    with pytest.raises(HostKeyUnknown) as err:
        t.run(["touch", str(marker)])
    assert err.value.key_type == "ssh-ed25519"
    assert err.value.fingerprint == keygen_fingerprint(
        sshd_fleet["unknown"].host_key.with_suffix(".pub"))
    assert err.value.fingerprint in str(err.value) and "host 'unknown'" in str(err.value)
    assert not marker.exists()
    assert sessions_since(sshd_fleet, "unknown", offset) == []  # not even authenticated


def test_trust_then_connect(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path) -> None:
    console_known = tmp_path / "state" / "known_hosts"
    uri = sshd_fleet.uri("unknown")
    with pytest.raises(HostKeyUnknown) as err:
        SshTransport("unknown", uri, known_hosts=str(console_known)).connect()
    with pytest.raises(HostKeyChanged):  # the user was shown another key: refused
        trust_host_key(uri, str(console_known), expected="SHA256:" + "A" * 43)
    assert not console_known.exists()
    shown = err.value.fingerprint
    assert trust_host_key(uri, str(console_known), expected=shown) == shown
    assert trust_host_key(uri, str(console_known)) == shown  # already there: not twice
    lines = console_known.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"[{sshd_fleet.address}]:{sshd_fleet['unknown'].port} "
                               "ssh-ed25519 ")
    assert oct(console_known.stat().st_mode & 0o777) == "0o600"
    t = SshTransport("unknown", uri, known_hosts=str(console_known))
    assert t.run(["echo", "hello"]).stdout == b"hello\n"
    # Hashed entries (as OpenSSH's HashKnownHosts writes them) are matched too.
    hashed = tmp_path / "hashed_known_hosts"
    trust_host_key(uri, str(hashed), hashed=True)
    assert hashed.read_text().startswith("|1|")
    assert SshTransport("unknown", uri, known_hosts=str(hashed)).run(["true"]).returncode == 0


def test_changed_host_key_refused_loudly(ssh_home: Path, sshd_fleet: Fleet,
                                         tmp_path: Path) -> None:
    sshd = sshd_fleet["rekey"]
    t = transport(sshd_fleet, "rekey", keepalive=0)
    assert t.run(["true"]).returncode == 0
    old = keygen_fingerprint(sshd.host_key.with_suffix(".pub"))
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    new = keygen_fingerprint(sshd.host_key.with_suffix(".pub"))
    marker = tmp_path / "ran"
    offset = len(sshd.log_text())
    for attempt in (t, transport(sshd_fleet, "rekey")):  # reconnecting, and anew
        with pytest.raises(HostKeyChanged) as err:
            attempt.run(["touch", str(marker)])
        assert err.value.fingerprint == new and err.value.recorded == (f"ssh-ed25519 {old}",)
        assert "HAS CHANGED" in str(err.value) and old in str(err.value) and new in str(err.value)
    console_known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyChanged):  # never by a simple trust call
        trust_host_key(sshd_fleet.uri("rekey"), str(console_known))
    assert not console_known.exists() and not marker.exists()
    assert sessions_since(sshd_fleet, "rekey", offset) == []


def test_unreachable_and_bad_auth(ssh_home: Path, sshd_fleet: Fleet,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dials: list[object] = []
    dial = ssh_module._dial_tcp

    def counted(*args: Any) -> Any:
        dials.append(args)
        return dial(*args)

    monkeypatch.setattr(ssh_module, "_dial_tcp", counted)
    # Nothing listens there: only this session's fleet uses its address.
    where = f"{sshd_fleet.address}:22299"
    with pytest.raises(HostUnreachable, match=f"cannot connect to {re.escape(where)}"):
        SshTransport("gone", f"ssh://root@{where}", connect_timeout=2).connect()
    assert len(dials) == 1  # a host never reached fails at once: no retries
    (ssh_home / ".ssh" / "id_ed25519").rename(ssh_home / ".ssh" / "moved")
    try:
        with pytest.raises(HostUnreachable, match="refused our keys"):
            transport(sshd_fleet, "a").connect()
    finally:
        (ssh_home / ".ssh" / "moved").rename(ssh_home / ".ssh" / "id_ed25519")


def test_ssh_config_and_proxy_jump(ssh_home: Path, sshd_fleet: Fleet) -> None:
    target = resolve("sc-a")
    assert (target.hostname, target.port, target.user) == (sshd_fleet.address,
                                                          sshd_fleet["a"].port, "root")
    assert SshTransport("a", "ssh://sc-a").run(["echo", "via config"]).stdout == b"via config\n"
    offset = len(sshd_fleet["a"].log_text())
    jumped = SshTransport("b", "ssh://sc-b-via-a")
    assert resolve("sc-b-via-a").proxy_jump == \
        f"root@{sshd_fleet.address}:{sshd_fleet['a'].port}"
    assert jumped.run(["echo", "jumped"]).stdout == b"jumped\n"
    assert any("Accepted publickey" in line
               for line in sshd_fleet["a"].log_text()[offset:].splitlines())


def test_match_exec_still_works_with_invoke_deferred(tmp_path: Path) -> None:
    # A fresh process: invoke is not loaded by importing the transport, and is loaded
    # when ~/.ssh/config has a `Match exec` line to run (sshlib).
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        'Match host sc-yes exec "true"\n  HostName 10.1.1.1\n'
        'Match host sc-no exec "false"\n  HostName 10.2.2.2\n')
    script = (
        "import sys\n"
        "from backends.transport.ssh import resolve\n"
        "print(type(sys.modules['invoke']).__name__, 'unittest.mock' in sys.modules)\n"
        "print(resolve('sc-yes').hostname, resolve('sc-no').hostname)\n"
        "print(type(sys.modules['invoke']).__name__)\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=root, env={**os.environ, "HOME": str(tmp_path)})
    assert out.stdout.splitlines() == ["_DeferredInvoke False", "10.1.1.1 sc-no", "module"]


# -- listings -------------------------------------------------------------------------


def make_pool(root: Path, make_image: MakeImage) -> Path:
    pool = root / "pool"
    pool.mkdir()
    make_image(pool / "base.raw", "raw", "4M")
    make_image(pool / "mid.qcow2", "qcow2", "4M", backing="base.raw", backing_fmt="raw")
    make_image(pool / "top.qcow2", "qcow2", "4M", backing="mid.qcow2", backing_fmt="qcow2")
    make_image(pool / "undeclared.qcow2", "qcow2", "4M", backing="base.raw", backing_fmt="raw")
    strip_backing_format(pool / "undeclared.qcow2")
    make_image(root / "outside.raw", "raw", "1M")
    make_image(pool / "escape.qcow2", "qcow2", "1M", backing=str(root / "outside.raw"),
               backing_fmt="raw")
    (pool / "iso-ish.img").write_bytes(b"\0" * 40000)
    os.mkfifo(pool / "fifo")
    (pool / "subdir").mkdir()
    # A link to a file the listing has under its own name too loses its probe in the
    # local scanner (both entries share one key): a link into a sub-directory instead.
    make_image(pool / "subdir" / "inner.qcow2", "qcow2", "2M")
    (pool / "link.qcow2").symlink_to("subdir/inner.qcow2")
    (pool / "dangling").symlink_to("nowhere")
    (pool / ".sc-tmp-1-x").write_bytes(b"half")
    return pool


def scans(pool: Path, t: SshTransport) -> tuple[PoolScan, PoolScan]:
    local = DirDriver(LocalTransport("h")).scan_pool(Pool("h", "p", "dir", str(pool)))
    remote = DirDriver(t).scan_pool(Pool("h", "p", "dir", str(pool)))
    return local, remote


def test_remote_scan_equals_local_scan(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
                                       make_image: MakeImage) -> None:
    pool = make_pool(tmp_path, make_image)
    local, remote = scans(pool, transport(sshd_fleet, "a"))
    assert len(local.volumes) >= 6
    assert [v.name for v in remote.volumes] == [v.name for v in local.volumes]
    for lv, rv in zip(local.volumes, remote.volumes, strict=True):
        assert rv == lv, lv.name
    assert remote.skipped == local.skipped
    assert remote.pool.capacity is not None and local.pool.capacity is not None
    assert remote.pool.capacity.capacity == local.pool.capacity.capacity


def test_big_listing_comes_in_parts_in_order(ssh_home: Path, sshd_fleet: Fleet,
                                             tmp_path: Path) -> None:
    # The agent sends a listing's entries a part at a time ahead of its result; the
    # transport puts them back in order.
    pool = tmp_path / "pool"
    pool.mkdir()
    count = 2 * ENTRIES_PER_PART + 7
    for i in range(count):
        (pool / f"v{i:05}.raw").write_bytes(b"\0" * (512 * (i % 3 + 1)))
    local = LocalTransport("h").scan_directory(str(pool), (str(pool),))
    remote = transport(sshd_fleet, "a").scan_directory(str(pool), (str(pool),))
    assert len(remote["entries"]) == count
    assert remote["entries"] == local["entries"]  # (free space moves on a shared disk)


def assert_same_listing(local: PoolScan, remote: PoolScan) -> None:
    """Field by field; mtime to the microsecond (find prints it in decimal) and "in use"
    unknown without python3."""
    assert [v.name for v in remote.volumes] == [v.name for v in local.volumes]
    for lv, rv in zip(local.volumes, remote.volumes, strict=True):
        for f in dataclasses.fields(lv):
            a, b = getattr(lv, f.name), getattr(rv, f.name)
            if f.name == "mtime":
                assert abs(a - b) < 1e-5, lv.name
            else:
                assert a == b, (lv.name, f.name)
    assert remote.skipped == local.skipped


@pytest.mark.parametrize("how", ["host without python3", "forced"])
def test_fallback_scan_without_python(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
                                      make_image: MakeImage, how: str) -> None:
    pool = make_pool(tmp_path, make_image)
    t = (transport(sshd_fleet, "nopy") if how == "host without python3"
         else transport(sshd_fleet, "a", python=None))
    local, remote = scans(pool, t)
    assert_same_listing(local, remote)
    assert t.python is None  # found out once, remembered
    vol = DirDriver(t).probe_volume(Pool("h", "p", "dir", str(pool)), "top.qcow2")
    assert [link.path for link in vol.chain.links][1:] == [str(pool / "mid.qcow2"),
                                                          str(pool / "base.raw")]
    assert vol.chain == next(v for v in local.volumes if v.name == "top.qcow2").chain
    assert t.read_bytes(str(pool / "top.qcow2"), 0, 4) == b"QFI\xfb"
    assert t.lstat(str(pool / "base.raw")).st_size == 4 << 20
    with pytest.raises(CommandFailed, match="no python3"):
        t.remove_file(str(pool / "base.raw"))


@pytest.mark.parametrize("python", ["python3", None])
def test_hostile_names_over_ssh(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
                                make_image: MakeImage, python: str | None) -> None:
    pwned = [sshd_fleet["a"].dir / "home" / "pwned", Path(pwd.getpwuid(0).pw_dir) / "pwned"]
    pool = tmp_path / "pool"
    pool.mkdir()
    for name in HOSTILE:
        make_image(pool / name, "qcow2" if name.endswith("qcow2") else "raw", "1M")
    bytes_path = os.fsencode(pool) + b"/" + HOSTILE_BYTES
    subprocess.run([b"qemu-img", b"create", b"-q", b"-f", b"raw", bytes_path, b"1M"],
                   check=True)
    t = transport(sshd_fleet, "a", python=python)
    local, remote = scans(pool, t)
    assert_same_listing(local, remote)
    assert os.fsdecode(HOSTILE_BYTES) in [v.name for v in remote.volumes]
    for vol in remote.volumes:
        info = t.run(["qemu-img", "info", "-f", vol.format, "--output=json", vol.path])
        assert info.returncode == 0, (vol.name, info.stderr)
    if python:
        for vol in remote.volumes:
            t.remove_file(vol.path)
        assert os.listdir(pool) == []
    assert not any(p.exists() for p in pwned)


# -- commands -------------------------------------------------------------------------


def test_read_only_refused_at_the_transport(ssh_home: Path, sshd_fleet: Fleet,
                                            tmp_path: Path, make_image: MakeImage) -> None:
    image = make_image(tmp_path / "v.qcow2", "qcow2", "1M")
    t = transport(sshd_fleet, "a", read_only=True)
    with pytest.raises(ReadOnlyViolation, match="refused to run 'rm'"):
        t.run(["rm", "-f", str(image)])
    with pytest.raises(ReadOnlyViolation):
        t.run(["qemu-img", "resize", "-f", "qcow2", str(image), "2M"])
    for call in (lambda: t.remove_file(str(image)),
                 lambda: t.publish(str(image), str(tmp_path / "w")),
                 lambda: t.write_new_file(str(tmp_path / "new"), b"x"),
                 lambda: t.wipe_file(str(image), "zero")):
        with pytest.raises(ReadOnlyViolation):
            call()
    assert image.exists() and not (tmp_path / "new").exists()
    assert t.run(["qemu-img", "info", "-f", "qcow2", str(image)]).returncode == 0
    assert t.scan_directory(str(tmp_path), ())["entries"][0]["name"] == "v.qcow2"


def test_run_streams_observes_and_maps_failures(ssh_home: Path, sshd_fleet: Fleet) -> None:
    heard: list[tuple[str, tuple[str, ...], int]] = []
    t = transport(sshd_fleet, "a")
    t.observer = lambda host, argv, code, secs: heard.append((host, argv, code))
    times: list[float] = []
    started = time.monotonic()
    result = t.run(["sh", "-c", "echo one; sleep 0.5; echo two; echo oops >&2; exit 3"],
                   on_output=lambda chunk: times.append(time.monotonic() - started))
    assert (result.returncode, result.stdout, result.stderr) == (3, b"one\ntwo\n", b"oops\n")
    assert len(times) == 2 and times[1] - times[0] > 0.3  # as it came, not at the end
    assert heard[-1] == ("a", result.argv, 3)
    with pytest.raises(CommandFailed, match="cannot run no-such-program"):
        t.run(["no-such-program", "x"])
    with pytest.raises(CommandFailed, match=r"did not finish within 0\.5 s"):
        t.run(["sleep", "30"], timeout=0.5)


def remote_processes(pattern: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pattern.encode() in cmdline:
            found.append(int(pid))
    return found


def test_cancel_kills_the_remote_process_quickly(ssh_home: Path, sshd_fleet: Fleet) -> None:
    t = transport(sshd_fleet, "a")
    flipped: list[float] = []

    def on_output(chunk: bytes) -> None:
        if b"started" in chunk:
            flipped.append(time.monotonic())

    stopped: list[tuple[str, ...]] = []
    t.observer = lambda host, argv, code, secs: stopped.append(argv) if code == -1 else None
    # A shell with a child: the whole process group goes. Only a kill ends them.
    script = "echo started; sleep 41414.1; echo never"
    with pytest.raises(Cancelled):
        t.run(["sh", "-c", script], on_output=on_output, should_cancel=lambda: bool(flipped))
    assert stopped == [("sh", "-c", script)]
    deadline = time.monotonic() + PATIENCE  # the kill is sent; the kernel reaps them
    while remote_processes("41414.1"):
        assert time.monotonic() < deadline, "the remote sleep outlived the cancel"
        time.sleep(0.05)


def test_host_that_dies_or_hangs_fails_fast(ssh_home: Path, sshd_fleet: Fleet,
                                            tmp_path: Path) -> None:
    sshd = sshd_fleet["doomed"]
    t = transport(sshd_fleet, "doomed", keepalive=0.5, connect_timeout=2)
    errors: list[BaseException] = []
    # This run's own: an earlier run's sleep outlives its session (orphaned, not killed).
    seconds = f"300.{time.time_ns() % 10**9:09d}"

    def long_command() -> None:
        try:
            t.run(["sleep", seconds])
        except BaseException as err:
            errors.append(err)

    # Paused, the host never ends the command (its sleep is stopped too): only the
    # keepalive's verdict ends the call. How fast is not for a test on a busy machine.
    worker = threading.Thread(target=long_command)
    worker.start()
    deadline = time.monotonic() + PATIENCE
    while not remote_processes(seconds) and worker.is_alive():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    sshd.pause()  # hangs: connections open, nothing answers
    try:
        worker.join(PATIENCE)
        assert not worker.is_alive()
        assert isinstance(errors[0], HostUnreachable), errors
        with pytest.raises(HostUnreachable):
            t.scan_directory(str(tmp_path), ())  # reconnecting to a hung host times out
    finally:
        sshd.resume()
        for pid in remote_processes(seconds):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # A host killed in the middle of a scan: the connection resets at once.
    (tmp_path / "many").mkdir()
    for i in range(3000):
        (tmp_path / "many" / f"v{i}.raw").write_bytes(b"")
    t = transport(sshd_fleet, "doomed", keepalive=0.5, connect_timeout=2)
    t.connect()
    killer = threading.Timer(0.05, sshd.kill)
    killer.start()
    try:
        with pytest.raises(HostUnreachable):
            for _ in range(50):
                t.scan_directory(str(tmp_path / "many"), ())
    finally:
        killer.join()
        sshd.start()
    assert t.run(["echo", "back"]).stdout == b"back\n"  # reconnected


def test_threads_share_one_transport(ssh_home: Path, sshd_fleet: Fleet) -> None:
    t = transport(sshd_fleet, "a")
    results: list[bytes] = []

    def work(i: int) -> None:
        results.append(t.run(["echo", str(i)]).stdout)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(f"{i}\n".encode() for i in range(24))


# -- locks ----------------------------------------------------------------------------


def test_lock_held_on_the_host_until_the_channel_closes(ssh_home: Path, sshd_fleet: Fleet,
                                                        tmp_path: Path) -> None:
    path = str(tmp_path / ".storage-console" / "locks" / "v.lock")
    first, second = transport(sshd_fleet, "a"), transport(sshd_fleet, "a")
    with first.lock_file(path, "job 1 (alice)"):
        assert Path(path).read_text() == "job 1 (alice)"
        with pytest.raises(VolumeBusy, match=r"locked by job 1 \(alice\)"), \
                second.lock_file(path, "job 2"):
            pass
        with pytest.raises(VolumeBusy), LocalTransport().lock_file(path, "job 3"):
            pass  # the same file on the same machine: the host's lock, seen locally
    with second.lock_file(path, "job 2"):
        pass  # released when the first holder left
    # A console that dies: its connection goes, and the host lets go of the lock.
    lock = first.lock_file(path, "job 4")
    lock.__enter__()
    with pytest.raises(VolumeBusy):
        second.lock_file(path, "job 5").__enter__()
    first.close()
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            with second.lock_file(path, "job 5"):
                break
        except VolumeBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)


# -- the agent ------------------------------------------------------------------------


def test_agent_modules_are_stdlib_only() -> None:
    root = Path(__file__).resolve().parent.parent
    for module in AGENT_MODULES:
        relative = module.replace(".", "/")
        path = root / (f"{relative}/__init__.py" if module in ("backends", "backends.transport")
                       else f"{relative}.py")
        tree = ast.parse(path.read_text())
        # Imports for type checkers only (``if TYPE_CHECKING:``) never run on the host.
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                assert name in AGENT_MODULES or top in sys.stdlib_module_names \
                    or top == "__future__", f"{module} imports {name}"


def agent_cache(fleet: Fleet, name: str) -> Path:
    """Where the host keeps the compiled agent (its sessions' HOME, from SetEnv)."""
    return fleet[name].dir / "home" / ".cache" / "storage-console" / "agent"


def counting_shipments(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the console sent the agent's sources (one item per shipment)."""
    shipped: list[int] = []
    real = ssh_module.shipment

    def counted(request: bytes) -> bytes:
        shipped.append(1)
        return real(request)

    monkeypatch.setattr(ssh_module, "shipment", counted)
    return shipped


def test_agent_is_cached_on_the_host_privately(ssh_home: Path, sshd_fleet: Fleet,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(agent_cache(sshd_fleet, "a"), ignore_errors=True)
    shipped = counting_shipments(monkeypatch)
    t = transport(sshd_fleet, "a")
    assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
    assert len(shipped) == 1
    cache = agent_cache(sshd_fleet, "a")
    [cached] = list(cache.iterdir())
    assert cached.name.startswith(f"agent-{agent_digest()}-")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    # Later requests, from this transport or another, run it without shipping it.
    assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
    assert transport(sshd_fleet, "a").statvfs(str(tmp_path)).f_bsize > 0
    assert len(shipped) == 1


def test_read_only_console_uses_the_cache_but_never_writes_it(
        ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = agent_cache(sshd_fleet, "a")
    shutil.rmtree(cache.parent, ignore_errors=True)
    shipped = counting_shipments(monkeypatch)
    watcher = transport(sshd_fleet, "a", read_only=True)
    assert watcher.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
    assert len(shipped) == 1 and not cache.parent.exists()  # nothing made on the host
    transport(sshd_fleet, "a").statvfs(str(tmp_path))  # a writing console caches it
    assert len(shipped) == 2 and len(list(cache.iterdir())) == 1
    assert transport(sshd_fleet, "a", read_only=True).lstat(str(tmp_path)).st_ino
    assert len(shipped) == 2  # ... which a read-only one then runs


def test_a_session_starts_on_a_host_without_the_cached_agent(
        ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The sources are shipped to the session's agent before its first request goes:
    # the bootstrap reading stdin for them must not swallow that request.
    shutil.rmtree(agent_cache(sshd_fleet, "a"), ignore_errors=True)
    shipped = counting_shipments(monkeypatch)
    t = transport(sshd_fleet, "a")
    with t.session():
        assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
        assert t.statvfs(str(tmp_path)).f_bsize > 0
    assert len(shipped) == 1


def test_tampered_cached_agent_is_not_run(ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(agent_cache(sshd_fleet, "a"), ignore_errors=True)
    t = transport(sshd_fleet, "a")
    t.statvfs(str(tmp_path))
    [cached] = list(agent_cache(sshd_fleet, "a").iterdir())
    marker = tmp_path / "tampered-agent-ran"
    # An agent that would run (it leaves a mark and answers 42), were it trusted.
    evil = marshal.dumps([
        ("backends", compile("", "evil", "exec")),
        ("backends.transport", compile("", "evil", "exec")),
        ("backends.transport.agent", compile(f"open({str(marker)!r}, 'w').close()\n"
                                             "def main(): print('{\"result\": 42}')",
                                             "evil", "exec"))])
    check = cached.read_bytes().partition(b"\n")[0]
    shipped = counting_shipments(monkeypatch)

    # Its code changed, under the checksum of the real one: not run, shipped again,
    # and the cache mended.
    cached.write_bytes(check + b"\n" + evil)
    assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
    assert not marker.exists() and len(shipped) == 1
    assert cached.read_bytes().partition(b"\n")[0] == check

    # A checksum that matches, in a file or directory others could write, or a link:
    # not trusted either.
    good = cached.read_bytes()
    cached.write_bytes(hashlib.sha256(evil).hexdigest().encode() + b"\n" + evil)
    for loosen in (lambda: cached.chmod(0o666), lambda: cached.parent.chmod(0o777)):
        loosen()
        assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
        assert not marker.exists()
        cached.chmod(0o600)
        cached.parent.chmod(0o700)
        cached.write_bytes(hashlib.sha256(evil).hexdigest().encode() + b"\n" + evil)
    cached.unlink()
    evil_file = tmp_path / "evil-agent"
    evil_file.write_bytes(hashlib.sha256(evil).hexdigest().encode() + b"\n" + evil)
    evil_file.chmod(0o600)
    cached.symlink_to(evil_file)
    assert t.lstat(str(tmp_path)).st_ino == tmp_path.stat().st_ino
    assert not marker.exists()
    assert len(shipped) == 4
    assert cached.read_bytes() == good  # the link was replaced by the real agent


def test_host_errors_come_back_as_local_ones(ssh_home: Path, sshd_fleet: Fleet,
                                             tmp_path: Path) -> None:
    t = transport(sshd_fleet, "a")
    with pytest.raises(PoolUnavailable):
        DirDriver(t).scan_pool(Pool("a", "p", "dir", str(tmp_path / "missing")))
    with pytest.raises(FileNotFoundError):
        t.lstat(str(tmp_path / "missing"))
    t.write_new_file(str(tmp_path / "one"), b"\x00\xffdata")
    assert (tmp_path / "one").read_bytes() == b"\x00\xffdata"
    with pytest.raises(FileExistsError):
        t.write_new_file(str(tmp_path / "one"), b"again")
    (tmp_path / "two").write_bytes(b"2")
    with pytest.raises(FileExistsError):
        t.publish(str(tmp_path / "two"), str(tmp_path / "one"))
    t.publish(str(tmp_path / "two"), str(tmp_path / "one"), replace=True)
    assert (tmp_path / "one").read_bytes() == b"2" and not (tmp_path / "two").exists()
    st = t.lstat(str(tmp_path / "one"))
    assert (st.st_size, st.st_ino, st.st_mtime_ns) == (1, (tmp_path / "one").stat().st_ino,
                                                       (tmp_path / "one").stat().st_mtime_ns)
    assert t.sha256_file(str(tmp_path / "one"))[1] == 1
    assert not t.qemu_write_locked(str(tmp_path / "one"))


def test_more_channels_than_sshds_max_sessions(ssh_home: Path, sshd_fleet: Fleet,
                                               tmp_path: Path) -> None:
    # sshd's default MaxSessions is 10 per connection: 14 held locks and a command more.
    t = transport(sshd_fleet, "a")
    with contextlib.ExitStack() as stack:
        for i in range(14):
            stack.enter_context(t.lock_file(str(tmp_path / f"{i}.lock"), f"job {i}"))
        assert t.run(["echo", "still"]).stdout == b"still\n"
        with pytest.raises(VolumeBusy, match="job 13"), \
                LocalTransport().lock_file(str(tmp_path / "13.lock"), "x"):
            pass
    t.close()
