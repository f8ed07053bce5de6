"""A host over SSH (paramiko): commands through exec channels, files through a small
stdlib agent shipped to the host's python3 on stdin.

One connection per transport, shared by the console's worker threads (paramiko opens
channels from any thread); each request is a channel of its own, and when sshd's
``MaxSessions`` are all taken another connection to the host carries the next. A watchdog pings the
host every ``keepalive`` seconds and drops a connection that stops answering, so no call
hangs on a host that died; the next call reconnects, with backoff.

Host keys are checked before authentication against the user's known_hosts and the
console's own (``hostkeys``); an unknown or changed key stops the connection before
anything runs. ``trust_host_key`` is the explicit way to accept a new one.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import getpass
import json
import os
import shlex
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from backends.archive import ArchiveInfo, StreamResult
from backends.contract import (
    ByteProgress,
    CancelCheck,
    Cancelled,
    ChecksumMismatch,
    CommandFailed,
    CommandResult,
    HostKeyChanged,
    HostUnreachable,
    Process,
    ReadOnlyViolation,
    StorageError,
    Transport,
)
from backends.transport import shellscan
from backends.transport.agent import error_from_record
from backends.transport.bundle import SHIP, cached_agent_argv, shipment
from backends.transport.hostkeys import (
    CheckingPolicy,
    KnownHosts,
    append_key,
    entry_name,
    fingerprint,
    key_family,
)
from backends.transport.local import command_key, record_command, refuse_unless_read_only
from backends.transport.sshlib import paramiko

POLL_SECONDS = 0.1
CANCEL_GRACE_SECONDS = 2.0  # for the host to confirm a stop before the channel is dropped
KILL_GRACE_SECONDS = 0.5  # SIGTERM, then SIGKILL, as LocalTransport does
MISSING = 127  # the shell's exit status for a command it cannot find

# ``$$`` is the command's own pid once ``exec`` replaced the shell: what a cancel kills.
RUN_WRAPPER = 'echo "$$" && exec "$@"'
# The command leads its own process group (sshd starts a session with setsid, and each
# shell on the way execs the next), so the group goes: a shell's children too.
KILL_SCRIPT = ('kill -TERM -"$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || exit 0; i=0; '
               'while kill -0 "$1" 2>/dev/null && [ "$i" -lt 5 ]; do sleep 0.1; i=$((i+1)); '
               'done; kill -KILL -"$1" 2>/dev/null; kill -KILL "$1" 2>/dev/null; exit 0')



@dataclasses.dataclass(frozen=True)
class Target:
    """Where a host alias leads once ~/.ssh/config is applied."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    known_hosts: tuple[str, ...] = ()

    @property
    def key_name(self) -> str:
        return entry_name(self.hostname, self.port)


def parse_uri(uri: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of ``ssh://[user@]host[:port]``."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError(f"not an ssh://[user@]host[:port] address: {uri!r}")
    return parts.username, parts.hostname, parts.port


def resolve(alias: str, user: str | None = None, port: int | None = None) -> Target:
    """Apply ~/.ssh/config (HostName, Port, User, IdentityFile, ProxyJump,
    UserKnownHostsFile) to ``alias``; ``user`` and ``port`` given win, as on ssh's
    command line."""
    path = os.path.expanduser("~/.ssh/config")
    config = (paramiko.SSHConfig.from_path(path) if os.path.exists(path)
              else paramiko.SSHConfig())
    found = config.lookup(alias)
    identity = tuple(os.path.expanduser(p) for p in found.get("identityfile", []))
    jump = found.get("proxyjump")
    known = str(found.get("userknownhostsfile", "~/.ssh/known_hosts"))
    return Target(
        alias=alias,
        hostname=str(found.get("hostname", alias)),
        port=port or int(found.get("port", 22)),
        user=user or str(found.get("user") or getpass.getuser()),
        identity_files=identity,
        proxy_jump=None if jump in (None, "none") else str(jump),
        known_hosts=tuple(os.path.expanduser(p) for p in known.split()),
    )


def _unreachable(target: Target, host: str, err: BaseException) -> HostUnreachable:
    if isinstance(err, paramiko.AuthenticationException) or (
            isinstance(err, paramiko.SSHException) and "authentication" in str(err)):
        return HostUnreachable(
            f"{target.user}@{target.hostname}:{target.port} refused our keys ({err})",
            host=host, hint="add the console's public key to the host's authorized_keys, "
                            "or load the right key into ssh-agent")
    reason = "timed out" if isinstance(err, TimeoutError | socket.timeout) else (
        str(err) or type(err).__name__)
    return HostUnreachable(f"cannot connect to {target.hostname}:{target.port}: {reason}",
                           host=host, hint="check that the host is up, sshd runs and the "
                                           "address in hosts.toml or ~/.ssh/config is right")


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it reads at once.

    sshd leaves Nagle's algorithm on for a session without a terminal, so its small
    messages wait for our acknowledgement of the one before, which Linux delays up to
    40 ms: the first channel of every connection waited that long. TCP_QUICKACK does
    not stick, so it is set again after each read (one cheap syscall).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


def _dial_tcp(target: Target, host: str, timeout: float) -> socket.socket:
    """A TCP connection to ``target`` for SSH's request/answer traffic."""
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except OSError as err:
        raise _unreachable(target, host, err) from None
    # Our own small messages go at once (the handshake sends two in a row: the second
    # waited 40 ms for the host's delayed acknowledgement of the first).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not hasattr(socket, "TCP_QUICKACK"):  # Linux only
        return sock
    quick = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    quick.settimeout(timeout)
    return quick


def _transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    """paramiko's transport, preferring AES-GCM: an AEAD costs both ends about half the
    CPU of paramiko's first choice, AES-CTR with HMAC-SHA2 (a big listing is megabytes)."""
    transport = paramiko.Transport(sock, **kwargs)  # what SSHClient passes differs by version
    options = transport.get_security_options()
    gcm = tuple(c for c in options.ciphers if c.endswith("-gcm@openssh.com"))
    options.ciphers = gcm + tuple(c for c in options.ciphers if c not in gcm)
    return transport


def _client(target: Target, host: str, known: KnownHosts, timeout: float,
            sock: paramiko.Channel | None = None) -> paramiko.SSHClient:
    """An authenticated client for ``target``; the host key is checked first."""
    conn: paramiko.Channel | socket.socket = (
        sock if sock is not None else _dial_tcp(target, host, timeout))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(CheckingPolicy(known, host))
    # Negotiate a key type known_hosts records, as OpenSSH does: a host with an
    # ed25519 and an RSA key is not "changed" because paramiko prefers another.
    families = known.known_families(target.key_name)
    offered = getattr(paramiko.Transport, "_preferred_keys", ())
    disabled = None
    if families & {key_family(a) for a in offered}:
        disabled = {"keys": [a for a in offered if key_family(a) not in families]}
    try:
        client.connect(target.hostname, target.port, username=target.user,
                       key_filename=[p for p in target.identity_files  # type: ignore[arg-type]
                                     if os.path.exists(p)] or None,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       channel_timeout=timeout, sock=conn, disabled_algorithms=disabled,
                       transport_factory=_transport)
    except StorageError:
        client.close()
        raise
    except (paramiko.SSHException, OSError, EOFError) as err:
        client.close()
        raise _unreachable(target, host, err) from None
    return client


def _hops(spec: str) -> list[tuple[str | None, str, int | None]]:
    hops = []
    for hop in spec.split(","):
        user, _, rest = hop.strip().rpartition("@")
        name, _, port = rest.partition(":")
        hops.append((user or None, name, int(port) if port else None))
    return hops


def _through_jumps(target: Target, host: str, known_extra: tuple[str, ...],
                   timeout: float) -> tuple[paramiko.Channel | None,
                                            list[paramiko.SSHClient]]:
    """The socket to reach ``target`` through its ProxyJump hosts (a direct-tcpip
    channel of the last hop; None when there is none) and the hops' clients."""
    jumps: list[paramiko.SSHClient] = []
    sock: paramiko.Channel | None = None
    try:
        hops = [resolve(name, user, port) for user, name, port
                in (_hops(target.proxy_jump) if target.proxy_jump else [])]
        for i, hop in enumerate(hops):
            client = _client(hop, host, KnownHosts(hop.known_hosts + known_extra), timeout,
                             sock)
            jumps.append(client)
            sock = _tunnel(client, hop, hops[i + 1] if i + 1 < len(hops) else target, host,
                           timeout)
        return sock, jumps
    except BaseException:
        for client in jumps:
            client.close()
        raise


def _open_chain(target: Target, host: str, known_extra: tuple[str, ...],
                timeout: float) -> tuple[paramiko.SSHClient, list[paramiko.SSHClient]]:
    """The client for ``target`` and the jump hosts' clients it goes through."""
    sock, jumps = _through_jumps(target, host, known_extra, timeout)
    try:
        return _client(target, host, KnownHosts(target.known_hosts + known_extra), timeout,
                       sock), jumps
    except BaseException:
        for client in jumps:
            client.close()
        raise


def _tunnel(client: paramiko.SSHClient, hop: Target, target: Target, host: str,
            timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    assert transport is not None
    try:
        return transport.open_channel("direct-tcpip", (target.hostname, target.port),
                                      ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as err:
        raise HostUnreachable(f"jump host {hop.hostname} cannot reach "
                              f"{target.hostname}:{target.port}: {err}", host=host,
                              hint="check ProxyJump in ~/.ssh/config") from None


class _Connection:
    """One authenticated connection and the watchdog that drops it when the host stops
    answering (``dead_after`` seconds without a reply to a ping)."""

    def __init__(self, client: paramiko.SSHClient, jumps: list[paramiko.SSHClient],
                 keepalive: float) -> None:
        self.client = client
        self.jumps = jumps
        transport = client.get_transport()
        assert transport is not None
        self.transport = transport
        self.keepalive = keepalive
        self.dead = threading.Event()
        if keepalive > 0:
            threading.Thread(target=self._watch, daemon=True,
                             name="ssh-keepalive").start()

    def _watch(self) -> None:
        while not self.dead.is_set() and self.transport.is_active():
            answered = threading.Event()
            threading.Thread(target=self._ping, args=(answered,), daemon=True,
                             name="ssh-ping").start()
            # Three missed answers, as OpenSSH's ServerAliveCountMax.
            if not answered.wait(self.keepalive * 3) or not self.transport.is_active():
                self.close()
                return
            self.dead.wait(self.keepalive)

    def _ping(self, answered: threading.Event) -> None:
        with contextlib.suppress(Exception):  # a dead transport: seen by the watchdog
            self.transport.global_request("keepalive@openssh.com", wait=True)
        answered.set()

    def alive(self) -> bool:
        return not self.dead.is_set() and self.transport.is_active()

    def close(self) -> None:
        self.dead.set()
        self.client.close()  # every channel on it is closed, so every waiter wakes
        for jump in self.jumps:
            jump.close()


class _Stream:
    """Reads one channel: stdout as it comes, stderr kept, the exit status."""

    def __init__(self, chan: paramiko.Channel, conn: _Connection, host: str) -> None:
        self.chan = chan
        self.conn = conn
        self.host = host
        self.stderr = bytearray()
        self.eof = False
        self.request = b""  # an agent's request, sent again after the agent if it asks
        chan.settimeout(POLL_SECONDS)

    def read(self) -> bytes | None:
        """Next stdout bytes, b"" at the end, None when nothing came in POLL_SECONDS."""
        self._drain_stderr()
        if self.eof:
            return b""
        try:
            data = self.chan.recv(65536)
        except TimeoutError:
            if not self.conn.alive():
                raise self.lost() from None
            return None
        if not data:
            self.eof = True
            self._drain_stderr()
        return data

    def _drain_stderr(self) -> None:
        # After the end of stdout paramiko has closed the stderr buffer too: what is left
        # in it comes at once, then b"".
        while self.chan.recv_stderr_ready() or (self.eof and not self.chan.closed):
            try:
                data = self.chan.recv_stderr(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.stderr += data

    def exit_status(self) -> int:
        while not self.chan.exit_status_ready():
            if not self.conn.alive():
                raise self.lost()
            self.chan.status_event.wait(POLL_SECONDS)
        status = self.chan.recv_exit_status()
        self._drain_stderr()
        if status == -1 and not self.conn.alive():
            raise self.lost()
        return status

    def end_input(self) -> None:
        """End the command's input, give it ``CANCEL_GRACE_SECONDS`` to exit, then close
        the channel."""
        with contextlib.suppress(OSError, EOFError):
            self.chan.shutdown_write()
            deadline = time.monotonic() + CANCEL_GRACE_SECONDS
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                self.chan.status_event.wait(POLL_SECONDS)
        self.chan.close()

    def lost(self) -> HostUnreachable:
        return HostUnreachable("the connection dropped in the middle of a request",
                               host=self.host, hint="the host stopped answering; it is "
                               "reconnected on the next refresh")

    def last_error(self) -> str:
        lines = bytes(self.stderr).decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""


class _SshProcess(Process):
    """A command on the host with its stdin and stdout as the channel's streams
    (``SshTransport.spawn``). It leads its own process group there (see ``RUN_WRAPPER``),
    which a kill stops from a second channel."""

    def __init__(self, transport: SshTransport, argv: list[str],
                 audit_as: list[str] | None) -> None:
        self.argv = tuple(argv)
        self._transport = transport
        self._audit = tuple(audit_as or argv)
        self._started = time.monotonic()
        self._closed = False
        self._killed = False
        self._pending = b""
        self._stream = transport._exec(["sh", "-c", RUN_WRAPPER, "sc-run", *argv])
        self.pid: int | None = None
        try:
            head = b""
            deadline = time.monotonic() + transport.connect_timeout
            while b"\n" not in head:
                data = self._stream.read()
                if data == b"" or time.monotonic() > deadline:
                    raise CommandFailed(f"cannot run {argv[0]}: {self._stream.last_error()}",
                                        host=transport.host)
                head += data or b""
            line, _, self._pending = head.partition(b"\n")
            self.pid = int(line)
        except BaseException:
            self._stream.chan.close()
            self._closed = True
            self._record(-1)
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        chan = self._stream.chan
        while view:
            try:
                # One packet at most goes per send: slicing more would copy it again.
                n = chan.send(bytes(view[:chan.out_max_packet_size]))
            except TimeoutError:
                if not self._stream.conn.alive():
                    raise self._stream.lost() from None
                continue
            except OSError as err:  # paramiko: "Socket is closed"
                raise BrokenPipeError(str(err)) from None
            if n <= 0:
                raise BrokenPipeError("the command on the host stopped reading")
            view = view[n:]

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._stream.chan.shutdown_write()

    def read(self, timeout: float | None = None) -> bytes | None:
        if self._pending:
            pending, self._pending = self._pending, b""
            return pending
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = self._stream.read()
            if data is not None:
                return data
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        chan = self._stream.chan
        while not chan.exit_status_ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise CommandFailed(f"{command_key(list(self.argv))} did not end within "
                                    f"{timeout} s", host=self._transport.host)
            if not self._stream.conn.alive():
                raise self._stream.lost()
            chan.status_event.wait(POLL_SECONDS)
        return self._stream.exit_status()

    def kill(self) -> None:
        if self._stream.chan.exit_status_ready():
            return
        self._killed = True
        self._transport._kill(self.pid)

    @property
    def stderr(self) -> bytes:
        return bytes(self._stream.stderr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        status = -1
        try:
            self.kill()
            if not self._killed:
                with contextlib.suppress(StorageError):
                    status = self.wait(CANCEL_GRACE_SECONDS)
        finally:
            self._stream.chan.close()
            self._record(status)

    def _record(self, status: int) -> None:
        record_command(self._transport, self._audit, status, self._started)


class _NoPython(Exception):
    """The host has no python3: the agent cannot run there."""


# The agent sessions bound to the running code (a job's thread, and the contexts it
# copies into its helper threads), by transport.
_BOUND: contextvars.ContextVar[dict[int, _AgentSession] | None] = contextvars.ContextVar(
    "sc_agent_sessions", default=None)


class _AgentSession:
    """One agent on the host serving one request at a time over one channel (the
    agent's ``session``); volume locks taken through it are held by that agent until
    unlocked or the session ends. It starts in the background at once (the sessions of
    a job's hosts start together); the first request waits for it."""

    def __init__(self, transport: SshTransport) -> None:
        self.transport = transport
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._failed: BaseException | None = None
        self._starting = threading.Thread(target=self._start, daemon=True,
                                          name="ssh-agent-session")
        self._starting.start()

    def _start(self) -> None:
        try:
            stream = self.transport._start_agent("session", {})
            # Its "serving" answer (after the sources were shipped, on a cache miss):
            # a request sent before it could be read by the bootstrap and lost.
            try:
                self.transport._answer(stream)
            except BaseException:
                stream.chan.close()
                raise
            self._stream = stream
        except BaseException as err:  # raised to the first request
            self._failed = err

    def call(self, op: str, args: dict[str, Any], *, progress: ByteProgress | None = None,
             should_cancel: CancelCheck | None = None) -> Any:
        self._starting.join()
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._stream is None or self._stream.chan.closed or self._stream.eof:
                # Its locks went with it: the job must not go on as if it held them.
                raise CommandFailed("the job's agent on the host stopped (its volume "
                                    "locks were released)", host=self.transport.host,
                                    hint="run the job again")
            line = json.dumps({"op": op, "args": args}) + "\n"
            with contextlib.suppress(OSError):  # the agent is gone: reading says why
                self._stream.chan.sendall(line.encode("utf-8", "surrogateescape"))
            return self.transport._answer(self._stream, progress, should_cancel)

    def close(self) -> None:
        """End of input: the agent lets its locks go and exits."""
        self._starting.join()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.end_input()


class SshTransport(Transport):
    """A host reached over SSH at ``uri`` (``ssh://[user@]host[:port]``; the host part
    may be an alias of ~/.ssh/config).

    Args:
        host: the console's name for the host (messages, the audit log).
        read_only: refuse every command outside ``READ_ONLY_COMMANDS`` and every
            mutating file primitive, here and again in the agent on the host.
        known_hosts: the console's own known_hosts file, read besides the user's.
        connect_timeout: seconds for TCP, the SSH banner, authentication, a channel.
        keepalive: seconds between pings; three unanswered drop the connection (0: off).
        python: the host's python; None lists pools with shell commands instead.
    """

    def __init__(self, host: str, uri: str, *, read_only: bool = False,
                 known_hosts: str | None = None, connect_timeout: float = 10.0,
                 keepalive: float = 15.0, python: str | None = "python3") -> None:
        self.host = host
        self.uri = uri
        self.read_only = read_only
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.python = python
        self._user, self._alias, self._port = parse_uri(uri)
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._extra: list[_Connection] = []  # more connections when sessions run out
        self._ever_connected = False

    # -- the connection -------------------------------------------------------------

    def target(self) -> Target:
        return resolve(self._alias, self._user, self._port)

    def connect(self) -> None:
        """Connect now (else the first request does): raises ``HostKeyUnknown``,
        ``HostKeyChanged`` or ``HostUnreachable``."""
        self._connection()

    def close(self) -> None:
        with self._lock:
            for conn in [self._conn, *self._extra]:
                if conn is not None:
                    conn.close()
            self._conn = None
            self._extra = []

    def _dial(self) -> _Connection:
        client, jumps = _open_chain(self.target(), self.host, self._extra_known_hosts(),
                                    self.connect_timeout)
        return _Connection(client, jumps, self.keepalive)

    def _connection(self) -> _Connection:
        with self._lock:
            if self._conn is not None and self._conn.alive():
                return self._conn
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            # A connection that dropped is retried with backoff (a host rebooting, a
            # network blip); a host never reached fails at once, with why.
            delays = [0.5, 1.0, 2.0] if self._ever_connected else []
            while True:
                try:
                    self._conn = self._dial()
                    break
                except HostUnreachable:
                    if not delays:
                        raise
                    time.sleep(delays.pop(0))
            self._ever_connected = True
            return self._conn

    def _extra_known_hosts(self) -> tuple[str, ...]:
        return (self.known_hosts,) if self.known_hosts else ()

    def _open_session(self) -> tuple[_Connection, paramiko.Channel]:
        """A new channel, on a connection that has room for it.

        sshd allows ``MaxSessions`` (10 by default) channels per connection, and every
        held lock and running command takes one: when they are all taken, another
        connection to the same host carries the next.
        """
        primary = self._connection()
        with self._lock:
            self._extra = [c for c in self._extra if c.alive()]
            conns = [primary, *self._extra]
        for conn in conns:
            try:
                return conn, conn.transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as err:
                if conn.transport.is_active():
                    # Refused, the connection alive: its sessions are all in use
                    # (paramiko keeps one failure per connection, so concurrent refusals
                    # may come as a plain SSHException rather than ChannelException).
                    continue
                conn.close()
                raise HostUnreachable(f"cannot start a command: {err}", host=self.host,
                                      hint="the connection dropped; try again") from None
        conn = self._dial()
        with self._lock:
            self._extra.append(conn)
        try:
            return conn, conn.transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise HostUnreachable(f"cannot start a command: {err}", host=self.host) from None

    def _exec(self, argv: list[str]) -> _Stream:
        conn, chan = self._open_session()
        # Bytes, not str: a file name's non-UTF-8 bytes (surrogates here) go as they are.
        command = shlex.join(argv).encode("utf-8", "surrogateescape")
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as err:
            chan.close()
            raise HostUnreachable(f"cannot start a command: {err}", host=self.host,
                                  hint="the connection dropped; try again") from None
        return _Stream(chan, conn, self.host)

    @property
    def agent_python(self) -> str | None:  # type: ignore[override]
        return self.python

    # -- commands ---------------------------------------------------------------------

    def spawn(self, argv: list[str], *, audit_as: list[str] | None = None) -> Process:
        refuse_unless_read_only(self, argv)
        if not argv:
            raise CommandFailed("cannot run an empty command", host=self.host)
        return _SshProcess(self, argv, audit_as)

    def run(
        self,
        argv: list[str],
        *,
        on_output: Callable[[bytes], None] | None = None,
        timeout: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> CommandResult:
        refuse_unless_read_only(self, argv)
        started = time.monotonic()
        returncode = -1
        try:
            result = self._run(argv, on_output, timeout, should_cancel)
            returncode = result.returncode
            return result
        finally:
            record_command(self, argv, returncode, started)

    def _run(self, argv: list[str], on_output: Callable[[bytes], None] | None,
             timeout: float | None, should_cancel: CancelCheck | None) -> CommandResult:
        if not argv:
            raise CommandFailed("cannot run an empty command", host=self.host)
        stream = self._exec(["sh", "-c", RUN_WRAPPER, "sc-run", *argv])
        deadline = None if timeout is None else time.monotonic() + timeout
        pid: int | None = None
        head = b""
        chunks: list[bytes] = []
        next_poll = 0.0
        try:
            while True:
                now = time.monotonic()
                if should_cancel is not None and now >= next_poll:
                    next_poll = now + POLL_SECONDS
                    if should_cancel():
                        self._kill(pid)
                        raise Cancelled(f"{command_key(argv)} was stopped", host=self.host)
                if deadline is not None and now >= deadline:
                    self._kill(pid)
                    raise CommandFailed(f"{command_key(argv)} did not finish within "
                                        f"{timeout} s and was stopped", host=self.host)
                data = stream.read()
                if data is None:
                    continue
                if not data:
                    break
                if pid is None:
                    head += data
                    line, newline, data = head.partition(b"\n")
                    if not newline:
                        continue
                    pid, head = int(line), b""
                if data:
                    chunks.append(data)
                    if on_output is not None:
                        on_output(data)
            status = stream.exit_status()
        finally:
            stream.chan.close()
        if status == MISSING and not chunks and b"not found" in stream.stderr:
            raise CommandFailed(f"cannot run {argv[0]}: {stream.last_error()}",
                                host=self.host, hint="is it installed?")
        return CommandResult(tuple(argv), status, b"".join(chunks), bytes(stream.stderr))

    def _kill(self, pid: int | None) -> None:
        """Stop the remote process ``pid`` (SIGTERM, SIGKILL half a second later)."""
        if pid is None:
            return
        with contextlib.suppress(StorageError):
            stream = self._exec(["sh", "-c", KILL_SCRIPT, "sc-kill", str(pid)])
            try:
                deadline = time.monotonic() + CANCEL_GRACE_SECONDS
                while time.monotonic() < deadline and stream.read() != b"":
                    pass
            finally:
                stream.chan.close()

    # -- the agent --------------------------------------------------------------------

    def _start_agent(self, op: str, args: dict[str, Any]) -> _Stream:
        if self.python is None:
            raise _NoPython
        # The request goes at once: a host with the agent cached runs it without
        # waiting for us; one without asks for it ("ship", in ``_answer``).
        stream = self._exec(cached_agent_argv(self.python, read_only=self.read_only))
        stream.request = (json.dumps({"op": op, "args": args, "read_only": self.read_only,
                                      "host": self.host}) + "\n").encode()
        with contextlib.suppress(OSError):  # a shell that already gave up: read why
            stream.chan.sendall(stream.request)
        return stream

    def _answer(self, stream: _Stream, progress: ByteProgress | None = None,
                should_cancel: CancelCheck | None = None) -> Any:
        """Read the agent's lines up to its answer; its error raised as ours."""
        # A listing's parts are lines of hundreds of KB: keep the chunks and look for the
        # end of a line in each new one only (joining as we go is quadratic).
        chunks: list[bytes] = []
        entries: list[Any] = []  # a listing's parts, sent ahead of its result
        cancelled_at: float | None = None
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if should_cancel is not None and cancelled_at is None and now >= next_poll:
                next_poll = now + POLL_SECONDS
                if should_cancel():
                    cancelled_at = now
                    with contextlib.suppress(OSError):
                        stream.chan.sendall(b"cancel\n")
            if cancelled_at is not None and now - cancelled_at > CANCEL_GRACE_SECONDS:
                stream.chan.close()  # the agent sees its input end and stops anyway
                raise Cancelled("stopped", host=self.host)
            data = stream.read()
            if data is None:
                continue
            if not data:
                break
            if b"\n" not in data:
                chunks.append(data)
                continue
            chunks.append(data)
            buffer = b"".join(chunks)
            chunks.clear()
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                record = json.loads(line)
                if "entries" in record:
                    entries += record["entries"]
                elif SHIP in record:
                    with contextlib.suppress(OSError):  # gone: its exit status says why
                        stream.chan.sendall(shipment(stream.request))
                elif "progress" in record:
                    if progress is not None:
                        progress(*record["progress"])
                elif "error" in record:
                    raise self._remote_error(record["error"])
                else:
                    result = record.get("result")
                    if entries:
                        result["entries"][:0] = entries
                    return result
            if buffer:
                chunks.append(buffer)
        status = stream.exit_status()
        if status == MISSING:
            self.python = None  # remembered: listings take the shell's way from now on
            raise _NoPython
        raise CommandFailed(f"the console's agent failed (exit status {status}): "
                            f"{stream.last_error()}", host=self.host)

    def _remote_error(self, record: dict[str, Any]) -> BaseException:
        return error_from_record(record, self.host)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        # Every agent start is an SSH session and a python3 start (~90 ms on loopback):
        # a job's requests to this host go through one agent instead.
        bound = _BOUND.get() or {}
        if self.python is None or id(self) in bound:
            yield
            return
        session = _AgentSession(self)
        token = _BOUND.set({**bound, id(self): session})
        try:
            yield
        finally:
            _BOUND.reset(token)
            session.close()

    def _bound_session(self) -> _AgentSession | None:
        return (_BOUND.get() or {}).get(id(self))

    def _agent(self, op: str, args: dict[str, Any], *, progress: ByteProgress | None = None,
               should_cancel: CancelCheck | None = None) -> Any:
        session = self._bound_session()
        if session is not None and op != "scan_directory":  # a scan forks best alone
            return session.call(op, args, progress=progress, should_cancel=should_cancel)
        stream = self._start_agent(op, args)
        try:
            return self._answer(stream, progress, should_cancel)
        finally:
            stream.chan.close()

    def _needs_python(self, what: str) -> CommandFailed:
        return CommandFailed(f"cannot {what}: the host has no python3", host=self.host,
                             hint="install python3 on the host: listing works without it, "
                                  "jobs need it")

    def _read_call(self, op: str, args: dict[str, Any],
                   fallback: Callable[[], Any]) -> Any:
        """A read-only request: the agent's answer, or without python3 the shell's."""
        try:
            return self._agent(op, args)
        except _NoPython:
            return fallback()

    def _write_call(self, op: str, args: dict[str, Any], what: str, *,
                    progress: ByteProgress | None = None,
                    should_cancel: CancelCheck | None = None) -> Any:
        self._refuse_if_read_only(what)
        try:
            return self._agent(op, args, progress=progress, should_cancel=should_cancel)
        except _NoPython:
            raise self._needs_python(what) from None

    def _shell(self) -> shellscan.ShellScanner:
        return shellscan.ShellScanner(self._shell_run)

    def _shell_run(self, argv: list[str]) -> CommandResult:
        stream = self._exec(argv)
        try:
            chunks = []
            while (data := stream.read()) != b"":
                if data:
                    chunks.append(data)
            return CommandResult(tuple(argv), stream.exit_status(), b"".join(chunks),
                                 bytes(stream.stderr))
        finally:
            stream.chan.close()

    # -- listing ------------------------------------------------------------------------

    def scan_directory(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        result: dict[str, Any] = self._read_call(
            "scan_directory", {"path": path, "roots": list(roots)},
            lambda: self._shell().scan_directory(path, roots))
        return result

    def probe_path(self, path: str, declared: str | None) -> dict[str, Any]:
        result: dict[str, Any] = self._read_call(
            "probe_path", {"path": path, "declared": declared},
            lambda: self._shell().probe_path(path, declared))
        return result

    def probe_volume(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        result: dict[str, Any] = self._read_call(
            "probe_volume", {"path": path, "roots": list(roots)},
            lambda: self._shell().probe_volume(path, roots))
        return result

    def statvfs(self, path: str) -> os.statvfs_result:
        values = self._read_call("statvfs", {"path": path},
                                 lambda: self._shell().statvfs(path))
        return os.statvfs_result(values)

    def lstat(self, path: str) -> os.stat_result:
        values = self._read_call("lstat", {"path": path},
                                 lambda: self._shell().lstat(path))
        return os.stat_result(values)

    def read_bytes(self, path: str, offset: int, length: int) -> bytes:
        encoded = self._read_call(
            "read_bytes", {"path": path, "offset": offset, "length": length},
            lambda: base64.b64encode(self._shell().read_bytes(path, offset, length)).decode())
        return base64.b64decode(encoded)

    def qemu_write_locked(self, path: str) -> bool:
        try:
            return bool(self._agent("qemu_write_locked", {"path": path}))
        except _NoPython:
            raise self._needs_python("tell whether a QEMU holds the volume") from None

    def has_data(self, path: str) -> bool:
        try:
            return bool(self._agent("has_data", {"path": path}))
        except _NoPython:
            return True  # cannot tell: treated as precious, as the contract says

    def zero_blocks(self, path: str, budget: int) -> tuple[int, int, int]:
        try:
            allocated, read, zero = self._agent("zero_blocks", {"path": path,
                                                                "budget": budget})
        except _NoPython:
            raise self._needs_python("count the zero blocks of a volume") from None
        return int(allocated), int(read), int(zero)

    # -- changing files -----------------------------------------------------------------

    def make_directory(self, path: str) -> None:
        self._write_call("make_directory", {"path": path}, "create a directory")

    def remove_file(self, path: str) -> None:
        self._write_call("remove_file", {"path": path}, "remove a file")

    def publish(self, temp: str, final: str, *, replace: bool = False) -> None:
        self._write_call("publish", {"temp": temp, "final": final, "replace": replace},
                         "publish a volume")

    def link(self, existing: str, new: str) -> None:
        self._write_call("link", {"existing": existing, "new": new}, "link a file")

    def make_read_only(self, path: str) -> None:
        self._write_call("make_read_only", {"path": path}, "change a file's mode")

    def copy_attributes(self, source: str, target: str) -> None:
        self._write_call("copy_attributes", {"source": source, "target": target},
                         "change a file's mode")

    def write_new_file(self, path: str, data: bytes) -> None:
        self._write_call("write_new_file",
                         {"path": path, "data": base64.b64encode(data).decode()},
                         "write a file")

    def wipe_file(self, path: str, pattern: str, *, progress: ByteProgress | None = None,
                  should_cancel: CancelCheck | None = None) -> int:
        return int(self._write_call("wipe_file", {"path": path, "pattern": pattern},
                                    "wipe a file", progress=progress,
                                    should_cancel=should_cancel))

    def compress_file(self, source: str, out: str, argv: list[str], *,
                      progress: ByteProgress | None = None,
                      should_cancel: CancelCheck | None = None) -> StreamResult:
        return self._streamed(argv, "write an archive", "compress_file",
                              {"source": source, "out": out, "argv": argv},
                              progress, should_cancel)

    def decompress_file(self, archive_path: str, out: str, argv: list[str], *, length: int,
                        existing: bool, expect: ArchiveInfo,
                        progress: ByteProgress | None = None,
                        should_cancel: CancelCheck | None = None) -> StreamResult:
        return self._streamed(argv, "restore an archive", "decompress_file",
                              {"archive": archive_path, "out": out, "argv": argv,
                               "length": length, "existing": existing,
                               "expect": dataclasses.asdict(expect)},
                              progress, should_cancel)

    def _streamed(self, argv: list[str], what: str, op: str, args: dict[str, Any],
                  progress: ByteProgress | None,
                  should_cancel: CancelCheck | None) -> StreamResult:
        """A zstd stream run by the agent on the host, recorded for the audit."""
        started = time.monotonic()
        returncode = -1
        try:
            record = self._write_call(op, args, what, progress=progress,
                                      should_cancel=should_cancel)
            returncode = 0
            return StreamResult(**record)
        except ChecksumMismatch:
            returncode = 0
            raise
        finally:
            record_command(self, argv, returncode, started)

    def sha256_file(self, path: str, *, progress: ByteProgress | None = None,
                    should_cancel: CancelCheck | None = None) -> tuple[str, int]:
        try:
            digest, size = self._agent("sha256_file", {"path": path}, progress=progress,
                                       should_cancel=should_cancel)
        except _NoPython:
            raise self._needs_python("compute a checksum") from None
        return str(digest), int(size)

    @contextlib.contextmanager
    def lock_file(self, path: str, holder: str) -> Iterator[None]:
        # The flock is held by an agent on the host for as long as this channel is open:
        # if the console dies or the connection drops, sshd closes the agent's stdin,
        # and the agent (or at worst the kernel, when the agent dies) lets go.
        session = self._bound_session()
        if session is not None:  # held by the job's agent session, same rules
            try:
                session.call("lock", {"path": path, "holder": holder})
            except _NoPython:
                raise self._needs_python("lock a volume") from None
            try:
                yield
            finally:
                with contextlib.suppress(StorageError, OSError):
                    session.call("unlock", {"path": path})
            return
        try:
            stream = self._start_agent("lock_file", {"path": path, "holder": holder})
        except _NoPython:
            raise self._needs_python("lock a volume") from None
        try:
            try:
                self._answer(stream)
            except _NoPython:
                raise self._needs_python("lock a volume") from None
            yield
        finally:
            stream.end_input()  # the agent unlocks and exits

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyViolation(f"refused to {what} in read-only mode", host=self.host)


def host_key(uri: str, *, connect_timeout: float = 10.0) -> paramiko.PKey:
    """The key the host at ``uri`` offers (through its ProxyJump, whose own keys must be
    known already). Only the key exchange happens: nothing is authenticated or run."""
    user, alias, port = parse_uri(uri)
    target = resolve(alias, user, port)
    tunnel, jumps = _through_jumps(target, uri, (), connect_timeout)
    try:
        sock: paramiko.Channel | socket.socket = (
            tunnel if tunnel is not None else _dial_tcp(target, uri, connect_timeout))
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = connect_timeout
            transport.start_client(timeout=connect_timeout)
            return transport.get_remote_server_key()
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise _unreachable(target, uri, err) from None
        finally:
            transport.close()
    finally:
        for client in jumps:
            client.close()


def trust_host_key(uri: str, known_hosts_path: str, *, expected: str | None = None,
                   hashed: bool = False, connect_timeout: float = 10.0) -> str:
    """Record the key the host at ``uri`` offers in the console's known_hosts file
    ``known_hosts_path``; returns its SHA256 fingerprint.

    ``expected``: the fingerprint the user was shown (``HostKeyUnknown.fingerprint``);
    a different key now is refused. A host whose recorded key differs is refused
    (``HostKeyChanged``): that needs the old entry removed by hand, after checking.
    A key recorded already is not written twice.
    """
    user, alias, port = parse_uri(uri)
    target = resolve(alias, user, port)
    key = host_key(uri, connect_timeout=connect_timeout)
    offered = fingerprint(key)
    if expected is not None and expected != offered:
        raise HostKeyChanged(
            f"the host now offers {key.get_name()} {offered}, not the {expected} that was "
            "shown; nothing was trusted", key_type=key.get_name(), fingerprint=offered,
            recorded=(expected,), host=uri, hint="look at the host key again before trusting")
    known = KnownHosts((*target.known_hosts, known_hosts_path))
    recorded = known.recorded(target.key_name)
    if any(k == key for k in recorded):
        return offered
    if any(key_family(k.get_name()) == key_family(key.get_name()) for k in recorded):
        known.check(uri, target.key_name, key)  # raises HostKeyChanged, loudly
    append_key(known_hosts_path, target.key_name, key, hashed=hashed)
    return offered
