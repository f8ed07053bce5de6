"""A real libvirtd for the tests, isolated from the machine's own libvirt.

libvirtd runs as root inside a private mount namespace (``unshare -m``) where tmpfs
hides /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
/var/log/libvirt: every pool it defines, every state file it writes, lives in memory
that vanishes with the daemon, and the machine's own definitions are invisible to it.
Its sockets go to a temporary directory outside those mounts (a generated
libvirtd.conf: ``unix_sock_dir``), reached as ``qemu+unix:///system?socket=...``. The
daemon gets SIGTERM when the test process dies (``setpriv --pdeathsig``), so a killed
test run leaves nothing behind either. Pool directories are the tests' own tmp dirs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HIDDEN = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
          "/var/log/libvirt")
CONF = """\
unix_sock_dir = "{sock}"
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{log}"
"""
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Libvirtd:
    uri: str
    socket: str
    log: Path

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """virsh against this daemon (never the machine's)."""
        return subprocess.run(["virsh", "-q", "-c", self.uri, *args], check=check,
                              capture_output=True, text=True, timeout=60)


def why_not() -> str | None:
    """Why a test libvirtd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a test libvirtd runs as root in a private mount namespace: not root"
    for tool in ("libvirtd", "unshare", "setpriv", "virsh"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    return None


def start(directory: Path) -> tuple[Libvirtd, subprocess.Popen[bytes]]:
    sock = directory / "sock"
    sock.mkdir()
    log = directory / "libvirtd.log"
    conf = directory / "libvirtd.conf"
    conf.write_text(CONF.format(sock=sock, log=log))
    mounts = "; ".join(f"mount -t tmpfs -o mode=0755 tmpfs {d}" for d in HIDDEN
                       if os.path.isdir(d))
    libvirtd = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
    script = (f"set -e; {mounts}; exec {libvirtd} -f {conf} "
              f"-p {directory / 'libvirtd.pid'}")
    out = open(directory / "libvirtd.out", "wb")  # noqa: SIM115 - owned by the daemon
    proc = subprocess.Popen(
        ["setpriv", "--pdeathsig", "TERM", "unshare", "-m", "--propagation", "private",
         "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    socket = str(sock / "libvirt-sock")
    daemon = Libvirtd(f"qemu+unix:///system?socket={socket}", socket, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if os.path.exists(socket) and daemon.virsh("uri", check=False).returncode == 0:
            return daemon, proc
        time.sleep(0.1)
    stop(proc)
    output = (directory / "libvirtd.out").read_text(errors="replace")[-400:]
    raise RuntimeError(f"libvirtd did not start: {output.strip()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A real libvirtd of this test session only (see the module's docstring)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("libvirtd")
    try:
        daemon, proc = start(directory)
    except (RuntimeError, OSError) as err:
        pytest.skip(f"cannot start an isolated libvirtd here: {err}")
    try:
        yield daemon
    finally:
        stop(proc)
