"""The main screen: pools on the left; volumes, filter and details on the right.

Paints from the cache at once, then refreshes from disk in a thread worker that posts
``PoolRefreshed`` per pool; the table re-queries in place, cursor on the same volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from backends.contract import Capabilities, StorageError
from backends.model import Pool
from console.cache import PoolRow
from console.inventory import Inventory
from console.ui.commands import PaletteCommand
from console.ui.messages import PoolRefreshed, RefreshFinished, VolumeHighlighted
from console.ui.screens.create_volume import CreateVolumeScreen
from console.ui.screens.delete_volume import DeleteVolumeScreen
from console.ui.widgets.pool_summary import PoolSummary
from console.ui.widgets.pool_tree import PoolEntry, PoolTree
from console.ui.widgets.volume_detail import VolumeDetail
from console.ui.widgets.volume_table import SORT_LABELS, VolumeTable

AGE_TICK = 10.0  # seconds between repaints of the age column and pool states


class MainScreen(Screen[None]):
    HELP_TITLE: ClassVar[str] = "Console"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("r", "refresh", "Refresh"),
        Binding("c", "create", "Create"),
        Binding("d,delete", "delete", "Delete"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("p", "focus_pools", "Focus pools", show=False),
        Binding("v", "focus_volumes", "Focus volumes", show=False),
    ]

    def __init__(self, inventory: Inventory, *, clock: Callable[[], float],
                 select: tuple[str, str] | None = None, refresh_on_start: bool = True,
                 cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.clock = clock
        self.initial = select
        self.refresh_on_start = refresh_on_start
        self.cursor_blink = cursor_blink
        self.current: PoolEntry | None = None
        self.nothing_selected = True

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield PoolTree(clock=self.clock, id="pools")
            with Vertical(id="right"):
                yield PoolSummary(clock=self.clock, id="summary")
                yield Input(placeholder="filter names (enter keeps, esc clears)", id="filter",
                            compact=True)
                yield VolumeTable(self.inventory.cache, clock=self.clock, id="volumes")
                yield VolumeDetail(clock=self.clock, id="detail")
        yield Footer()

    @property
    def volume_table(self) -> VolumeTable:
        return self.query_one(VolumeTable)

    @property
    def pool_tree(self) -> PoolTree:
        return self.query_one(PoolTree)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).cursor_blink = self.cursor_blink
        self.load_tree()
        keys = self.pool_tree.pool_keys()
        start = self.initial if self.initial in keys else (keys[0] if keys else None)
        if start is not None:
            self.pool_tree.select_pool(*start)
            self.open_pool(*start)
        else:
            self.volume_table.show_pool(None, None, empty_text="no pools configured")
            self.update_summary()
        self.volume_table.focus()
        self.set_interval(AGE_TICK, self.repaint_ages)
        if self.refresh_on_start:
            self.action_refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= 110, "-wide")

    # -- data -----------------------------------------------------------------------

    def load_tree(self) -> None:
        cache = self.inventory.cache
        self.pool_tree.populate(self.inventory.hosts(), self.inventory.pools(), cache.pools(),
                           cache.hosts())

    def pool_row(self, host: str, pool: str) -> PoolRow | None:
        for row in self.inventory.cache.pools(host):
            if row.name == pool:
                return row
        return None

    def open_pool(self, host: str, pool: str) -> None:
        entry = self.pool_tree.entry(host, pool)
        if entry is None or entry is self.current:
            return
        self.current = entry
        empty = "" if entry.row is not None else "not scanned yet: r refreshes"
        self.volume_table.show_pool(host, pool, empty_text=empty)
        self.update_summary()
        self.refresh_bindings()

    def update_summary(self) -> None:
        table = self.volume_table
        self.query_one(PoolSummary).show(self.current, shown=table.row_count,
                                         filter_text=table.filter_text, sort=table.sort,
                                         descending=table.descending)

    def repaint_ages(self) -> None:
        self.volume_table.refresh()
        self.pool_tree.repaint_states()
        self.query_one(PoolSummary).refresh()

    def current_pool(self) -> Pool | None:
        if self.current is None:
            return None
        try:
            return self.inventory.pool(*self.current.key)
        except KeyError:
            return None

    def capabilities(self) -> Capabilities:
        pool = self.current_pool()
        return self.inventory.capabilities(pool) if pool is not None else Capabilities()

    def reload_pool(self, host: str, pool: str, *, select: str | None = None) -> None:
        """The cache changed for this pool: repaint its node, re-query if shown."""
        row = self.pool_row(host, pool)
        self.pool_tree.update_pool(row, host=host, pool=pool)
        if self.current is not None and self.current.key == (host, pool):
            if row is not None:
                self.volume_table.empty_text = ""
            self.volume_table.reload(select=select)
            self.update_summary()

    # -- refresh ----------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.pool_tree.set_refreshing(True)
        self.update_summary()
        self.refresh_all()

    @work(thread=True, exclusive=True, group="refresh")
    def refresh_all(self) -> None:
        def on_pool(pool: Pool, error: StorageError | None) -> None:
            self.post_message(PoolRefreshed(pool.host, pool.name,
                                            str(error) if error is not None else None))

        try:
            self.inventory.refresh(on_pool)
        except StorageError as err:
            self.post_message(RefreshFinished(str(err)))
        except Exception as err:  # a bug below must not take the console down
            self.post_message(RefreshFinished(f"refresh failed: {type(err).__name__}: {err}"))
        else:
            self.post_message(RefreshFinished())

    @on(PoolRefreshed)
    def pool_refreshed(self, message: PoolRefreshed) -> None:
        self.reload_pool(message.host, message.pool)
        if message.error:
            self.notify(message.error, title="refresh failed", severity="error", timeout=10)

    @on(RefreshFinished)
    def refresh_finished(self, message: RefreshFinished) -> None:
        self.pool_tree.set_refreshing(False)
        self.update_summary()
        if message.error:
            self.notify(message.error, title="refresh failed", severity="error", timeout=10)

    # -- selection --------------------------------------------------------------------

    @on(PoolTree.NodeHighlighted)
    def pool_highlighted(self, event: PoolTree.NodeHighlighted[object]) -> None:
        data = event.node.data
        if isinstance(data, PoolEntry):
            self.open_pool(*data.key)

    @on(PoolTree.NodeSelected)
    def pool_selected(self, event: PoolTree.NodeSelected[object]) -> None:
        if isinstance(event.node.data, PoolEntry):
            self.volume_table.focus()

    @on(VolumeHighlighted)
    def volume_highlighted(self, message: VolumeHighlighted) -> None:
        pool_path = self.current.pool.path if self.current is not None else ""
        self.query_one(VolumeDetail).show(message.volume, pool_path)
        if (message.volume is None) != self.nothing_selected:
            self.nothing_selected = message.volume is None
            self.refresh_bindings()  # delete is greyed out without a volume

    # -- filter and sort ---------------------------------------------------------------

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("-open")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if not field.has_class("-open") and not field.value:
            return
        field.value = ""
        field.remove_class("-open")
        self.volume_table.set_filter("")
        self.update_summary()
        self.volume_table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.volume_table.set_filter(event.value)
        self.update_summary()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-open")
        self.volume_table.focus()

    def action_sort(self) -> None:
        self.volume_table.cycle_sort()
        self.update_summary()

    def action_reverse_sort(self) -> None:
        self.volume_table.reverse_sort()
        self.update_summary()

    def action_sort_by(self, column: str) -> None:
        self.volume_table.sort_by(column, descending=False)
        self.update_summary()

    def action_focus_pools(self) -> None:
        self.pool_tree.focus()

    def action_focus_volumes(self) -> None:
        self.volume_table.focus()

    # -- create and delete ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "create":
            return self.capabilities().create or False
        if action == "delete":
            if not self.capabilities().delete:
                return False
            return True if self.volume_table.current is not None else None
        return True

    def action_create(self) -> None:
        pool = self.current_pool()
        if pool is None:
            return
        self.app.push_screen(
            CreateVolumeScreen(self.inventory, pool, self.capabilities(),
                               cursor_blink=self.cursor_blink),
            lambda name: self.volume_created(pool, name))

    def volume_created(self, pool: Pool, name: str | None) -> None:
        if name is None:
            return
        self.reload_pool(pool.host, pool.name, select=name)
        if self.volume_table.current is None or self.volume_table.current.name != name:
            self.action_clear_filter()  # the filter hid it: show it anyway
            self.volume_table.select_name(name)
        self.notify(f"created {name} in {pool.host} › {pool.name}", title="volume created")

    def action_delete(self) -> None:
        pool, volume = self.current_pool(), self.volume_table.current
        if pool is None or volume is None:
            return
        self.app.push_screen(
            DeleteVolumeScreen(self.inventory, pool, volume.name,
                               cursor_blink=self.cursor_blink),
            lambda done: self.volume_deleted(pool, volume.name, done))

    def volume_deleted(self, pool: Pool, name: str, done: bool | None) -> None:
        if done:
            self.reload_pool(pool.host, pool.name)
            self.notify(f"deleted {name} from {pool.host} › {pool.name}",
                        title="volume deleted")

    # -- palette ------------------------------------------------------------------------

    def palette_commands(self) -> Iterable[PaletteCommand]:
        yield PaletteCommand("Refresh all pools", "Re-read every pool from disk",
                             self.action_refresh)
        if self.check_action("create", ()):
            yield PaletteCommand("Create a volume", "A new raw or qcow2 volume in this pool",
                                 self.action_create)
        if self.check_action("delete", ()):
            name = self.volume_table.current.name if self.volume_table.current else ""
            yield PaletteCommand(f"Delete volume {name}", "Asks before deleting",
                                 self.action_delete)
        yield PaletteCommand("Filter volumes", "Show only names containing some text",
                             self.action_filter)
        if self.volume_table.filter_text:
            yield PaletteCommand("Clear the filter", "Show every volume again",
                                 self.action_clear_filter)
        for column, label in SORT_LABELS.items():
            yield PaletteCommand(f"Sort by {label}", f"Order the volumes by {label}",
                                 partial(self.action_sort_by, column))
        yield PaletteCommand("Reverse the sort order", "Ascending <-> descending",
                             self.action_reverse_sort)
        yield PaletteCommand("Focus the pools", "Move the keyboard focus to the pool tree",
                             self.action_focus_pools)
        yield PaletteCommand("Focus the volumes", "Move the keyboard focus to the volumes",
                             self.action_focus_volumes)
