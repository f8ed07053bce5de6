"""What the main screen does with hosts: their state as it changes, and adding,
removing and trusting one. A base class of ``MainScreen``, so that screen stays about
pools and volumes.

Writing the config, connecting a host and fetching its key run in thread workers; the
key trusted is the one whose fingerprint the user was shown (checked again when it is
fetched), and a changed key is never trusted here.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import partial
from typing import ClassVar

from textual import on, work
from textual.binding import Binding, BindingType
from textual.screen import Screen

from backends.contract import StorageError
from backends.model import Host, Pool
from console.config import ConfigError, known_hosts_path
from console.hosts import HostState, UriKind
from console.inventory import Inventory
from console.ui.commands import PaletteCommand
from console.ui.messages import HostChanged, PoolEvent, PoolRefreshed
from console.ui.screens.add_host import AddHostScreen
from console.ui.screens.confirm import ConfirmScreen
from console.ui.screens.define_pool import DefinePoolScreen
from console.ui.screens.delete_pool import DeletePoolScreen
from console.ui.widgets.pool_tree import PoolEntry, PoolTree
from console.ui.widgets.volume_table import VolumeTable

HOST_ACTIONS = frozenset({"add_host", "remove_host", "trust_host", "define_pool",
                          "delete_pool"})


class HostActions(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("H", "add_host", "Add a host", show=False),
        Binding("X", "remove_host", "Remove the host", show=False),
        Binding("t", "trust_host", "Trust the host's key", show=False),
        Binding("P", "define_pool", "Define a libvirt pool", show=False),
        Binding("E", "delete_pool", "Delete a libvirt pool's storage", show=False),
    ]

    inventory: Inventory
    current: PoolEntry | None
    current_host: str | None  # the tree's cursor is on this host's node
    host_asked: dict[str, bool]  # hosts this session has tried to reach
    watched: set[str]  # hosts whose pool events come in
    cursor_blink: bool

    @property
    @abstractmethod
    def pool_tree(self) -> PoolTree: ...

    @property
    @abstractmethod
    def volume_table(self) -> VolumeTable: ...

    @abstractmethod
    def load_tree(self) -> None: ...

    @abstractmethod
    def open_pool(self, host: str, pool: str) -> None: ...

    @work(thread=True, group="hosts")
    def watch_host(self, name: str) -> None:
        """Pool events of a libvirt host (another virsh defined, started or refreshed a
        pool) re-read the host live."""
        def on_event(host: str, pool: str, kind: str) -> None:
            self.post_message(PoolEvent(host, pool, kind))  # libvirt's thread: only post

        try:
            self.inventory.watch_pools(name, on_event)
        except StorageError:
            self.watched.discard(name)  # tried again when the host is back online

    @on(PoolEvent)
    def pool_event(self, message: PoolEvent) -> None:
        self.rediscover(message.host)

    @work(thread=True, group="rediscover", exclusive=True)
    def rediscover(self, name: str) -> None:
        self.discover(name)

    # -- a libvirt pool's lifecycle --------------------------------------------------------

    def pool_lifecycle_commands(self) -> list[tuple[str, str, str]]:
        """(verb, title, help) for the libvirt pool under the cursor: start or stop it,
        let libvirt re-read it, autostart on or off."""
        pool = self.inventory.known_pool(*self.current.key) if self.current else None
        if pool is None or pool.kind != "libvirt" or self.inventory.read_only:
            return []
        name = pool.name
        if not pool.active:
            return [("start", f"Start pool {name}", "libvirt starts it (mounts, activates)")]
        return [("stop", f"Stop pool {name}", "libvirt stops it; its volumes stay"),
                ("refresh", f"Re-read pool {name} in libvirt",
                 "libvirt looks at its storage again (files added behind its back)"),
                ("autostart-on", f"Autostart pool {name}", "started with libvirtd"),
                ("autostart-off", f"Do not autostart pool {name}", "")]

    @work(thread=True, group="hosts")
    def pool_lifecycle(self, host: str, name: str, verb: str) -> None:
        """One lifecycle call on libvirt's connection, then the host read again."""
        pool = self.inventory.known_pool(host, name)
        if pool is None:
            return
        from backends.drivers.libvirt.driver import LibvirtDriver

        try:
            driver = self.inventory.driver(pool)
            assert isinstance(driver, LibvirtDriver)
            if verb.startswith("autostart-"):
                driver.set_autostart(name, verb == "autostart-on")
            else:
                {"start": driver.start_pool, "stop": driver.stop_pool,
                 "refresh": driver.refresh_pool}[verb](name)
        except StorageError as err:
            self.post_message(HostChanged(host, str(err)))
            return
        self.discover(host)

    def host_action_allowed(self, action: str) -> bool:
        if self.inventory.read_only:
            return False
        if action == "add_host":
            return True
        if action == "define_pool":
            return self.libvirt_host() is not None
        if action == "delete_pool":
            return self.libvirt_pool() is not None
        if self.current_host is None:
            return False
        status = self.inventory.host_status(self.current_host)
        return action == "remove_host" or (
            status.state == HostState.UNTRUSTED and status.fingerprint is not None)

    # -- defining and deleting libvirt pools -------------------------------------------

    def libvirt_host(self) -> str | None:
        """The libvirt host under the cursor (its node, or one of its pools)."""
        host = self.current.key[0] if self.current is not None else self.current_host
        if host is None:
            return None
        try:
            link = self.inventory.host_link(host)
        except KeyError:  # a host no longer in the config
            return None
        return host if link.kind == UriKind.LIBVIRT else None

    def libvirt_pool(self) -> Pool | None:
        """The libvirt pool under the cursor."""
        pool = self.inventory.known_pool(*self.current.key) if self.current else None
        return pool if pool is not None and pool.kind == "libvirt" else None

    def pool_admin_commands(self) -> list[PaletteCommand]:
        """Palette entries for defining a pool on this libvirt host and deleting the
        pool under the cursor; none in read-only mode."""
        commands = []
        host = self.libvirt_host()
        if host is not None and self.host_action_allowed("define_pool"):
            commands.append(PaletteCommand(
                f"Define a pool on {host}", "dir, fs, netfs, logical, iscsi, or raw XML "
                "for any libvirt pool type", self.action_define_pool))
        if self.current is not None and self.host_action_allowed("delete_pool"):
            commands.append(PaletteCommand(
                f"Delete pool {self.current.key[1]}'s storage", "Destroys its directory "
                "or volume group and every volume in it; asks for its name",
                self.action_delete_pool))
        return commands

    def action_define_pool(self) -> None:
        host = self.libvirt_host()
        if host is None or self.inventory.read_only:
            return
        self.app.push_screen(DefinePoolScreen(self.inventory, host,
                                              cursor_blink=self.cursor_blink),
                             partial(self.pool_defined, host))

    def pool_defined(self, host: str, name: str | None) -> None:
        if name is None:
            return
        self.notify(f"pool {name} is defined on {host}", title="pools")
        self.rediscover(host)  # the "defined" event does too, when the host is watched

    def action_delete_pool(self) -> None:
        pool = self.libvirt_pool()
        if pool is None or self.inventory.read_only:
            return
        if pool.active:
            self.notify(f"host {pool.host!r}, pool {pool.name!r}: the pool is running; "
                        "libvirt deletes only a stopped pool's storage. Stop it first "
                        "(the palette: Stop pool).", title="delete pool",
                        severity="warning", timeout=10)
            return
        self.app.push_screen(DeletePoolScreen(self.inventory, pool,
                                              cursor_blink=self.cursor_blink),
                             partial(self.pool_deleted, pool.host, pool.name))

    def pool_deleted(self, host: str, name: str, done: bool | None) -> None:
        if done:
            self.notify(f"the storage of pool {name} on {host} is deleted", title="pools")
            self.rediscover(host)

    @on(HostChanged)
    def host_changed(self, message: HostChanged) -> None:
        """Repaint the host; rebuild the tree when its pools are not the ones shown."""
        if message.host not in {h.name for h in self.inventory.hosts()}:
            self.rebuild_tree()
            return
        self.host_asked[message.host] = True
        status = self.inventory.host_status(message.host)
        shown = {name for host, name in self.pool_tree.pool_keys() if host == message.host}
        if self.pool_tree.host_entry(message.host) is None \
                or shown != {p.name for p in self.inventory.host_pools(message.host)}:
            self.rebuild_tree()
        else:
            self.pool_tree.update_host(message.host, status)
        if status.state == HostState.ONLINE and message.host not in self.watched:
            self.watched.add(message.host)
            self.watch_host(message.host)
        if message.error and status.state == HostState.UNTRUSTED:
            self.notify(f"{message.error}. Select the host and press t to trust its key.",
                        title=f"host {message.host}: key not trusted", severity="warning",
                        timeout=10)
        elif message.error:
            self.notify(message.error, title=f"host {message.host}: {status.state.value}",
                        severity="error", timeout=10)
        if self.current_host == message.host:
            self.show_host(message.host)

    def rebuild_tree(self) -> None:
        """Populate again, keeping the cursor on the pool (or host) it was on."""
        keep = self.current.key if self.current is not None else None
        host = self.current_host
        self.load_tree()
        if keep is not None and keep in self.pool_tree.pool_keys():
            self.current = None
            self.pool_tree.select_pool(*keep)
            self.open_pool(*keep)
        elif host is not None:
            self.pool_tree.select_host(host)



    def show_host(self, name: str) -> None:
        """The cursor is on a host: its state (and what to do) where volumes would be."""
        entry = self.pool_tree.host_entry(name)
        if entry is None:
            return
        status = self.inventory.host_status(name) if self.host_asked.get(name) else None
        state = entry.state or "not asked yet (r refreshes)"
        pools = self.inventory.host_pools(name)
        lines = [f"host {name} ({entry.host.uri}): {state}, {len(pools)} pool(s)"]
        if entry.error:
            lines.append(entry.error)
        if status is not None and status.state == HostState.UNTRUSTED:
            lines.append("t trusts its key (after showing it again); X removes the host")
        elif entry.host.uri != "local" and not self.inventory.read_only:
            lines.append("X removes the host from the config; H adds one")
        self.volume_table.show_pool(None, None, empty_text="\n".join(lines))
        self.refresh_bindings()

    def action_add_host(self) -> None:
        taken = {h.name for h in self.inventory.hosts()}
        self.app.push_screen(AddHostScreen(taken), self.host_added)

    def host_added(self, answer: tuple[str, str] | None) -> None:
        if answer is not None:
            self.write_host(*answer)

    @work(thread=True, group="hosts")
    def write_host(self, name: str, uri: str) -> None:
        from console.config import HostConfig, add_host

        try:
            add_host(name, uri, self.inventory.config.source, current=self.inventory.config)
        except ConfigError as err:
            self.post_message(HostChanged(name, str(err)))
            return
        self.inventory.add_host(HostConfig(Host(name, uri)))
        self.post_message(HostChanged(name))
        self.discover(name)

    def discover(self, name: str) -> None:
        """Connect one host and scan its pools (in the calling worker thread), as a
        refresh of every host does."""
        self.inventory.refresh(self.post_pool_refreshed, self.post_host_changed,
                               hosts=[name])

    def post_pool_refreshed(self, pool: Pool, error: StorageError | None) -> None:
        """From a worker: the pool was re-read (or failed)."""
        self.post_message(PoolRefreshed(pool.host, pool.name,
                                        str(error) if error is not None else None))

    def post_host_changed(self, host: str, error: StorageError | None) -> None:
        """From a worker: the host's state changed."""
        self.post_message(HostChanged(host, str(error) if error is not None else None))

    def action_remove_host(self) -> None:
        name = self.current_host
        if name is None:
            return
        self.app.push_screen(ConfirmScreen(
            f"Remove host {name}",
            f"Remove host {name!r} from {self.inventory.config.source or 'the config'}? "
            "Nothing on the host is touched; its cached rows are forgotten.", "Remove"),
            partial(self.host_removed, name))

    def host_removed(self, name: str, yes: bool | None) -> None:
        if yes:
            self.forget_host(name)

    @work(thread=True, group="hosts")
    def forget_host(self, name: str) -> None:
        from console.config import remove_host

        try:
            remove_host(name, self.inventory.config.source)
        except ConfigError as err:
            self.post_message(HostChanged(name, str(err)))
            return
        self.inventory.remove_host(name)
        self.post_message(HostChanged(name))

    def action_trust_host(self) -> None:
        name = self.current_host
        status = self.inventory.host_status(name) if name is not None else None
        if name is None or status is None or status.state != HostState.UNTRUSTED \
                or status.fingerprint is None:
            return
        uri = self.inventory.config.host(name).host.uri
        self.app.push_screen(ConfirmScreen(
            f"Trust host {name}",
            f"{status.error}\n\nTrust the key {status.fingerprint} for {uri}? It is "
            f"recorded in {known_hosts_path()} and checked on every connection. Compare "
            "it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*.pub) first.",
            "Trust"), partial(self.trust_answered, name, status.fingerprint))

    def trust_answered(self, name: str, shown: str, yes: bool | None) -> None:
        if yes:
            self.trust_host(name, shown)

    @work(thread=True, group="hosts")
    def trust_host(self, name: str, shown: str) -> None:
        from backends.transport.ssh import trust_host_key

        uri = self.inventory.config.host(name).host.uri
        try:
            # The key trusted must be the one whose fingerprint the user saw.
            trust_host_key(uri, str(known_hosts_path()), expected=shown)
        except StorageError as err:
            self.post_message(HostChanged(name, str(err)))
            return
        self.discover(name)
