"""Real sshd instances on a loopback address for the SSH transport's tests.

Each instance has its own port (22200-22299, the range these tests may use on a shared
machine), its own generated ed25519 host key and config, and runs ``sshd -D -e`` with
its log in a file. A generated client key is the only authorized one. ``SetEnv`` gives
the sessions a HOME and PATH of the tests' own, so the machine's root shell start-up
files (and their python) stay out; a PATH without python3 makes a host without it.

A test session's fleet listens on a loopback address of its own (``session_address``):
a host a test stops frees its port, and when every fleet was on 127.0.0.1 another
session's fleet could take it meanwhile (the stopped host then answered with another
key, "host key changed", and could not start again on its port).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PORTS = range(22200, 22300)
START_SECONDS = 10.0


def skip_reason() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "sshd tests need root (sshd must switch to the session user)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed"
    if subprocess.run(["which", "ssh-keygen"], capture_output=True).returncode != 0:
        return "ssh-keygen is not installed"
    return None


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name,
                    "-f", str(path)], check=True, capture_output=True)


def session_address() -> str:
    """A loopback address no other running process derives: 127.0.0.0/8 is all
    loopback on Linux, and a pid (at most 22 bits) is unique while its process runs."""
    pid = os.getpid()
    return f"127.{(pid >> 16) & 0xFF}.{(pid >> 8) & 0xFF}.{pid & 0xFF}"


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (sshd's per-connection processes and their commands)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append(child)
                todo.append(child)
    return found


@dataclass
class Sshd:
    """One sshd: ``start``, ``stop``, ``kill`` (it and every session, as a host that
    died), ``pause``/``resume`` (a host that hangs), ``new_host_key``."""

    name: str
    root: Path
    authorized_keys: Path
    env_path: str
    address: str = "127.0.0.1"  # a fleet's: ``session_address``
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    paused: list[int] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def host_key_fields(self) -> tuple[str, str]:
        kind, data = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return kind, data

    def known_hosts_line(self) -> str:
        kind, data = self.host_key_fields()
        return f"[{self.address}]:{self.port} {kind} {data}\n"

    def new_host_key(self) -> None:
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        keygen(self.host_key)

    def _config(self) -> Path:
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {self.host_key}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nPermitRootLogin prohibit-password\n"
            f"AuthorizedKeysFile {self.authorized_keys}\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "AllowTcpForwarding yes\nLogLevel VERBOSE\nMaxStartups 50\n"
            f"SetEnv HOME={home} PATH={self.env_path}\n")
        return config

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        candidates = [self.port] if self.port else [
            p for p in PORTS if _port_free(self.address, p)]
        for port in candidates:
            self.port = port
            config = self._config()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                             stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError(f"sshd {self.name} did not start: {self.log.read_text()[-2000:]}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False  # the port was taken in between, most likely
            with socket.socket() as s, contextlib.suppress(OSError):
                s.settimeout(0.5)
                s.connect((self.address, self.port))
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Kill the listener first, then every session: SIGKILL also ends a stopped
        (paused) process, so nothing is resumed that could accept one more login."""
        if self.proc is None:
            self.paused = []
            return
        children = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid in (*children, *self.paused, *_children(self.proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.paused = []
        self.proc = None

    kill = stop  # a host that died: the listener and every session go at once

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Stop every process of this sshd (SIGSTOP): a host that hangs, its TCP
        connections open and silent."""
        assert self.proc is not None
        self.paused = [self.proc.pid, *_children(self.proc.pid)]
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused = []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def path_without_python(directory: Path) -> str:
    """A PATH directory holding every program of the bin and sbin directories but python's."""
    return path_without(directory, "python")


def path_without(directory: Path, prefix: str) -> str:
    """A PATH directory holding every program of the bin and sbin directories but those
    whose names start with ``prefix``."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in (Path("/usr/bin"), Path("/bin"), Path("/usr/sbin"), Path("/sbin")):
        for program in source.iterdir():
            target = directory / program.name
            if program.name.startswith(prefix) or target.exists():
                continue
            with contextlib.suppress(OSError):
                target.symlink_to(program)
    return str(directory)


@dataclass
class Fleet:
    """The test hosts, a client key, and a HOME with ~/.ssh/config and known_hosts."""

    root: Path
    home: Path
    hosts: dict[str, Sshd]
    address: str

    def __getitem__(self, name: str) -> Sshd:
        return self.hosts[name]

    def uri(self, name: str) -> str:
        return f"ssh://root@{self.address}:{self.hosts[name].port}"

    def stop(self) -> None:
        for sshd in self.hosts.values():
            sshd.stop()


# known: in the test HOME's known_hosts. "unknown" is not; "rekey" gets a new host key
# in its test; "doomed" is killed and hung; "nopy" has no python3 on its PATH, "nozstd"
# no zstd.
HOSTS = {"a": True, "b": True, "nopy": True, "nozstd": True, "unknown": False, "rekey": True,
         "doomed": True}


def start_fleet(root: Path, address: str | None = None) -> Fleet:
    client_key = root / "client" / "id_ed25519"
    client_key.parent.mkdir(parents=True)
    keygen(client_key)
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    normal_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    nopy_path = path_without_python(root / "nopy-bin")
    paths = {"nopy": nopy_path, "nozstd": path_without(root / "nozstd-bin", "zstd")}
    fleet = Fleet(root, root / "home", {}, address or session_address())
    try:
        for name in HOSTS:
            sshd = Sshd(name, root, authorized, paths.get(name, normal_path), fleet.address)
            fleet.hosts[name] = sshd
            sshd.start()
        ssh_dir = fleet.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        (ssh_dir / "id_ed25519").write_bytes(client_key.read_bytes())
        (ssh_dir / "id_ed25519").chmod(0o600)
        (ssh_dir / "known_hosts").write_text("".join(
            fleet[name].known_hosts_line() for name, known in HOSTS.items() if known))
        a, b = fleet["a"], fleet["b"]
        (ssh_dir / "config").write_text(
            f"Host sc-a\n  HostName {a.address}\n  Port {a.port}\n  User root\n"
            f"  IdentityFile ~/.ssh/id_ed25519\n\n"
            f"Host sc-b-via-a\n  HostName {b.address}\n  Port {b.port}\n  User root\n"
            f"  ProxyJump root@{a.address}:{a.port}\n")
    except BaseException:
        fleet.stop()
        raise
    return fleet
