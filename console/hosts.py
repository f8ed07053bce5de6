"""Connected hosts: how each host of the config is reached, and in what state it is.

A host's ``uri`` says how it is reached: ``local`` (this machine), ``ssh://user@h:port``
(commands and bytes over SSH, the dir and LVM drivers on top), or a libvirt URI
(``qemu:///system``, ``qemu+ssh://...``, ``test:///default``: every pool libvirt
reports, through its API). A ``HostLink`` builds the transport and drivers once and
hands out the driver for each pool kind; its ``state`` is what the tree shows.

Backend modules are imported when a host needs them, so ``ls`` of a local directory
loads neither paramiko nor libvirt.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from backends.contract import (
    Driver,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    PoolUnavailable,
    StorageError,
    Transport,
)
from backends.model import Pool

if TYPE_CHECKING:
    from console.config import HostConfig

POOL_KINDS = ("dir", "lvm", "libvirt")


class HostState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    UNTRUSTED = "key not trusted"
    ERROR = "error"


class UriKind(StrEnum):
    LOCAL = "local"
    SSH = "ssh"
    LIBVIRT = "libvirt"


def uri_kind(uri: str) -> UriKind:
    """``local``, ``ssh://...``, or anything else with a scheme: a libvirt URI."""
    if uri == "local":
        return UriKind.LOCAL
    scheme, sep, _ = uri.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{uri!r} is not 'local', ssh://user@host:port or a libvirt URI")
    return UriKind.SSH if scheme == "ssh" else UriKind.LIBVIRT


def state_of(err: StorageError) -> HostState:
    """The host state an error while connecting or listing puts a host in."""
    if isinstance(err, HostKeyUnknown):
        return HostState.UNTRUSTED
    if isinstance(err, HostUnreachable):
        return HostState.OFFLINE
    if isinstance(err, HostKeyChanged):
        return HostState.ERROR
    return HostState.ERROR


@dataclass(frozen=True)
class HostStatus:
    state: HostState
    error: str | None = None
    since: float = 0.0
    fingerprint: str | None = None  # the key offered, when it is not trusted


def status_of(err: StorageError) -> HostStatus:
    fingerprint = err.fingerprint if isinstance(err, HostKeyUnknown) else None
    return HostStatus(state_of(err), str(err), time.time(), fingerprint)


class HostLink:
    """One host's transport and drivers, built on first use and shared by threads."""

    def __init__(self, config: HostConfig, *, read_only: bool = False,
                 observer: Any = None, known_hosts: str | None = None) -> None:
        self.config = config
        self.name = config.host.name
        self.uri = config.host.uri
        self.kind = uri_kind(self.uri)
        self.read_only = read_only
        self.observer = observer
        self.known_hosts = known_hosts
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._drivers: dict[str, Driver] = {}
        self.status = HostStatus(HostState.CONNECTING, None, time.time())

    # -- building -----------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """The host's transport (local or SSH); libvirt hosts have none of their own."""
        with self._lock:
            if self._transport is None:
                self._transport = self._make_transport()
            return self._transport

    def _make_transport(self) -> Transport:
        transport: Transport
        if self.kind == UriKind.LOCAL:
            from backends.transport.local import LocalTransport

            transport = LocalTransport(self.name, read_only=self.read_only)
        elif self.kind == UriKind.SSH:
            from backends.transport.ssh import SshTransport

            transport = SshTransport(self.name, self.uri, read_only=self.read_only,
                                     known_hosts=self.known_hosts)
        else:
            raise PoolUnavailable("a libvirt host is reached through libvirt's API only",
                                  host=self.name)
        transport.observer = self.observer
        return transport

    def driver(self, kind: str) -> Driver:
        """The driver for pools of ``kind`` on this host."""
        with self._lock:
            driver = self._drivers.get(kind)
        if driver is not None:
            return driver
        driver = self._make_driver(kind)
        _ = driver.capabilities  # some ask the host (LVM: device-mapper): here, not in the UI
        with self._lock:
            return self._drivers.setdefault(kind, driver)

    def built_driver(self, kind: str) -> Driver | None:
        """The driver when it exists (a local dir driver is built now: that costs no
        I/O; others ask their host what they can do, so workers build them)."""
        with self._lock:
            driver = self._drivers.get(kind)
        if driver is None and self.kind == UriKind.LOCAL and kind == "dir":
            try:
                driver = self.driver(kind)
            except StorageError:
                return None
        return driver

    def _make_driver(self, kind: str) -> Driver:
        if kind == "libvirt":
            if self.kind != UriKind.LIBVIRT:
                raise PoolUnavailable(f"libvirt pools need a libvirt URI, not {self.uri!r}",
                                      host=self.name)
            from backends.drivers.libvirt.driver import LibvirtDriver

            return LibvirtDriver(self.uri, read_only=self.read_only, host=self.name)
        if self.kind == UriKind.LIBVIRT:
            raise PoolUnavailable(f"{kind} pools are not reached through a libvirt URI: "
                                  "give this host an ssh:// URI for them", host=self.name)
        if kind == "dir":
            from backends.drivers.dir.driver import DirDriver

            return DirDriver(self.transport, self.config.allowed_roots)
        if kind == "lvm":
            from backends.drivers.lvm import LvmDriver

            return LvmDriver(self.transport)
        raise PoolUnavailable(f"no driver for pools of type {kind!r}", host=self.name)

    # -- what the host has --------------------------------------------------------

    def discover(self) -> list[Pool]:
        """Connect (when remote) and list the pools this host has now: the configured
        ones, plus every libvirt pool (libvirt URIs) or volume group (``lvm = true``).

        Raises the StorageError that stopped it; ``status`` tells the tree either way.
        """
        self.status = HostStatus(HostState.CONNECTING, None, time.time())
        try:
            found: list[Pool] = []
            if self.kind == UriKind.SSH:
                connect = getattr(self.transport, "connect", None)
                if connect is not None:
                    connect()
            if self.kind == UriKind.LIBVIRT:
                found += self._discovered("libvirt")
            elif self.config.lvm:
                found += self._discovered("lvm")
        except StorageError as err:
            self.status = status_of(err)
            raise
        self.status = HostStatus(HostState.ONLINE, None, time.time())
        configured = {p.name for p in self.config.pools}
        return [*self.config.pools, *(p for p in found if p.name not in configured)]

    def _discovered(self, kind: str) -> list[Pool]:
        driver = self.driver(kind)
        discover = getattr(driver, "discover_pools", None)
        if discover is None:
            return []
        pools: list[Pool] = discover(self.name)
        return pools

    def mark_failed(self, err: StorageError) -> bool:
        """Whether ``err`` says the host itself went away (its state then says so)."""
        if isinstance(err, HostUnreachable | HostKeyUnknown | HostKeyChanged):
            self.status = status_of(err)
            return True
        return False

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            drivers, self._drivers = list(self._drivers.values()), {}
        for thing in (transport, *drivers):
            close = getattr(thing, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # a dead connection is gone anyway
                    close()
