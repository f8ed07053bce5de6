"""SSH host keys: what known_hosts files record, the check a connection must pass before
anything runs, and the one explicit way to trust a new key.

Two files are read: the user's (``~/.ssh/known_hosts``, or what ``UserKnownHostsFile``
says) and the console's own, the only one the console writes. A host's entry is named
as OpenSSH names it: ``host``, or ``[host]:port`` off port 22; hashed entries match too.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable

from backends.contract import HostKeyChanged, HostKeyUnknown
from backends.transport.sshlib import paramiko


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` and OpenSSH's prompts print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def entry_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def key_family(algorithm: str) -> str:
    """The key type an algorithm signs with: ``rsa-sha2-512`` is an ``ssh-rsa`` key."""
    name = algorithm.removesuffix("-cert-v01@openssh.com")
    return "ssh-rsa" if name.startswith("rsa-sha2-") else name


class KnownHosts:
    """The keys recorded for hosts, from several known_hosts files (missing ones are
    empty)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = tuple(paths)
        self._files: list[paramiko.HostKeys] = []
        for path in self.paths:
            keys = paramiko.HostKeys()
            if os.path.exists(path):
                keys.load(path)
            self._files.append(keys)

    def recorded(self, name: str) -> list[paramiko.PKey]:
        found: list[paramiko.PKey] = []
        for keys in self._files:
            entry = keys.lookup(name)
            if entry is not None:
                found.extend(entry.values())
        return found

    def check(self, host: str, name: str, key: paramiko.PKey) -> None:
        """Pass when ``key`` is recorded for ``name``; else ``HostKeyUnknown`` (nothing
        recorded) or ``HostKeyChanged`` (another key recorded)."""
        recorded = self.recorded(name)
        if any(k == key for k in recorded):
            return
        offered = fingerprint(key)
        if recorded:
            old = tuple(f"{k.get_name()} {fingerprint(k)}" for k in recorded)
            raise HostKeyChanged(
                f"THE HOST KEY OF {name} HAS CHANGED: it offered {key.get_name()} "
                f"{offered}, known_hosts records {', '.join(old)}. Someone may be "
                "intercepting the connection, or the host was reinstalled; nothing was run",
                key_type=key.get_name(), fingerprint=offered, recorded=old, host=host,
                hint="check the new key with the host's administrator, then remove the "
                     f"old entry (ssh-keygen -R '{name}' -f FILE) from {' or '.join(self.paths)}")
        raise HostKeyUnknown(
            f"unknown host key {key.get_name()} {offered} for {name}; nothing was run",
            key_type=key.get_name(), fingerprint=offered, host=host,
            hint="compare the fingerprint with the host's (ssh-keygen -lf "
                 "/etc/ssh/ssh_host_*_key.pub) and trust it explicitly")

    def known_families(self, name: str) -> set[str]:
        return {key_family(k.get_name()) for k in self.recorded(name)}


class CheckingPolicy(paramiko.MissingHostKeyPolicy):
    """Hands every offered key to ``KnownHosts.check``: the client's own key stores are
    left empty, so paramiko asks this for every connection, before authentication."""

    def __init__(self, known: KnownHosts, host: str) -> None:
        self.known = known
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        self.known.check(self.host, hostname, key)


def append_key(path: str, name: str, key: paramiko.PKey, *, hashed: bool = False) -> None:
    """Add ``name``'s key to the known_hosts file ``path`` (created 0600), durably."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    host_field = paramiko.HostKeys.hash_host(name) if hashed else name
    line = f"{host_field} {key.get_name()} {key.get_base64()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size:
            # A file whose last line lacks its newline would glue our entry onto it.
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
