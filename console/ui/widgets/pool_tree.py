"""Hosts and their pools, each pool with its state and a capacity bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from backends.model import Host, Pool
from console.cache import HostRow, PoolRow
from console.hosts import HostState, HostStatus
from console.ui.cells import fit, printable
from console.ui.widgets.capacity_bar import BarStyles, capacity_bar
from console.ui.widgets.volume_table import STALE_AFTER


@dataclass
class HostEntry:
    host: Host
    row: HostRow | None = None  # what the cache knew at start
    status: HostStatus | None = None  # what this session found (None: not asked yet)

    @property
    def state(self) -> str | None:
        """The host's state; None when nothing is known yet (never asked, not cached)."""
        if self.status is not None:
            return self.status.state.value
        return self.row.state if self.row is not None else None

    @property
    def error(self) -> str | None:
        if self.status is not None:
            return self.status.error
        return self.row.error if self.row is not None else None


HOST_GLYPHS = {HostState.CONNECTING.value: "↻", HostState.ONLINE.value: "●",
               HostState.OFFLINE.value: "✗", HostState.UNTRUSTED.value: "⚠",
               HostState.ERROR.value: "✗"}


@dataclass
class PoolEntry:
    pool: Pool
    row: PoolRow | None = None  # what the cache knows (None: never scanned)
    refreshing: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.pool.host, self.pool.name)

    def state(self, now: float) -> str:
        """``refreshing``, ``error``, ``unscanned``, ``stale`` or ``fresh``."""
        if self.refreshing:
            return "refreshing"
        if self.row is not None and self.row.error:
            return "error"
        if self.row is None or self.row.last_seen is None:
            return "unscanned"
        return "stale" if now - self.row.last_seen > STALE_AFTER else "fresh"


GLYPHS = {"refreshing": "↻", "error": "✗", "unscanned": "○", "stale": "◌", "fresh": "●"}


def pool_label(pool: Pool) -> str:
    """The name to show: ad-hoc pools are named by their path."""
    return printable(pool.name)


NodeData = HostEntry | PoolEntry


class PoolTree(Tree[NodeData]):
    """The left pane. ``PoolTree.NodeHighlighted`` tells the screen which pool to show."""

    HELP_ORDER: ClassVar[int] = 2
    HELP_TITLE: ClassVar[str] = "Pools (tree focused)"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "cursor_up", "Up", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("h,left", "collapse", "Collapse the host / to its host", show=False),
        Binding("l,right", "expand", "Expand the host / show the volumes", show=False),
        Binding("home,g", "scroll_home", "First", show=False),
        Binding("end,G", "scroll_end", "Last", show=False),
        Binding("ctrl+u", "page_up", "Page up", show=False),
        Binding("ctrl+d", "page_down", "Page down", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "pool-tree--host",
        "pool-tree--fresh",
        "pool-tree--stale",
        "pool-tree--error",
        "pool-tree--unscanned",
        "pool-tree--refreshing",
        "pool-tree--allocated",
        "pool-tree--committed",
        "pool-tree--free",
        "pool-tree--over",
    }

    DEFAULT_CSS = """
    PoolTree {
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
        & > .pool-tree--host { text-style: bold; color: $primary; }
        & > .pool-tree--fresh { color: $success; }
        & > .pool-tree--stale { color: $warning; }
        & > .pool-tree--error { color: $error; text-style: bold; }
        & > .pool-tree--unscanned { color: $text-muted; }
        & > .pool-tree--refreshing { color: $accent; }
        & > .pool-tree--allocated { color: $primary; }
        & > .pool-tree--committed { color: $warning; }
        & > .pool-tree--free { color: $text-muted; }
        & > .pool-tree--over { color: $error; }
    }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__("hosts", id=id)
        self.clock = clock
        self.show_root = False
        self.guide_depth = 3
        self._pools: dict[tuple[str, str], TreeNode[NodeData]] = {}
        self._hosts: dict[str, TreeNode[NodeData]] = {}
        self._painted: dict[tuple[str, str], str] = {}  # each pool's state as last drawn

    def populate(self, hosts: Iterable[Host], pools: Iterable[Pool],
                 pool_rows: Iterable[PoolRow], host_rows: Iterable[HostRow] = (),
                 statuses: dict[str, HostStatus] | None = None) -> None:
        """Rebuild from the inventory's hosts and pools and what the cache knows."""
        statuses = statuses or {}
        rows = {(r.host, r.name): r for r in pool_rows}
        known_hosts = {r.name: r for r in host_rows}
        self.clear()
        self._pools.clear()
        self._hosts.clear()
        by_host: dict[str, list[Pool]] = {}
        for pool in pools:
            by_host.setdefault(pool.host, []).append(pool)
        for host in hosts:
            node = self.root.add(host.name, HostEntry(host, known_hosts.get(host.name),
                                                      statuses.get(host.name)), expand=True)
            self._hosts[host.name] = node
            for pool in by_host.get(host.name, []):
                entry = PoolEntry(pool, rows.get((pool.host, pool.name)))
                self._pools[entry.key] = node.add_leaf(pool.name, entry)

    def pool_keys(self) -> list[tuple[str, str]]:
        return list(self._pools)

    def update_host(self, name: str, status: HostStatus) -> None:
        node = self._hosts.get(name)
        if node is not None and isinstance(node.data, HostEntry):
            node.data.status = status
            node.refresh()

    def host_entry(self, name: str) -> HostEntry | None:
        node = self._hosts.get(name)
        return node.data if node is not None and isinstance(node.data, HostEntry) else None

    def update_pool(self, row: PoolRow | None, *, host: str, pool: str,
                    refreshing: bool = False) -> None:
        node = self._pools.get((host, pool))
        if node is not None and isinstance(node.data, PoolEntry):
            node.data.row = row
            node.data.refreshing = refreshing
            node.refresh()

    def set_refreshing(self, refreshing: bool) -> None:
        for node in self._pools.values():
            if isinstance(node.data, PoolEntry):
                node.data.refreshing = refreshing
                node.refresh()

    def repaint_states(self) -> None:
        """Ages move on: repaint the pools whose state glyph changed (fresh to stale)."""
        now = self.clock()
        for key, node in self._pools.items():
            if isinstance(node.data, PoolEntry) and \
                    node.data.state(now) != self._painted.get(key):
                node.refresh()

    def select_pool(self, host: str, pool: str) -> bool:
        node = self._pools.get((host, pool))
        if node is None:
            return False
        _ = self.last_line  # builds the lines, so the node knows where it is
        self.move_cursor(node)
        return True

    def select_host(self, name: str) -> bool:
        node = self._hosts.get(name)
        if node is None:
            return False
        _ = self.last_line
        self.move_cursor(node)
        return True

    def action_collapse(self) -> None:
        """vim's h: a pool goes up to its host; a host folds."""
        node = self.cursor_node
        if node is None:
            return
        if isinstance(node.data, PoolEntry) and node.parent is not None:
            self.move_cursor(node.parent)
        elif node.is_expanded:
            node.collapse()

    def action_expand(self) -> None:
        """vim's l: a folded host opens, an open one goes to its first pool; a pool is
        selected (the volumes take the keys)."""
        node = self.cursor_node
        if node is None:
            return
        if isinstance(node.data, PoolEntry):
            self.action_select_cursor()
        elif not node.is_expanded:
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])

    def entry(self, host: str, pool: str) -> PoolEntry | None:
        node = self._pools.get((host, pool))
        return node.data if node is not None and isinstance(node.data, PoolEntry) else None

    # -- painting -----------------------------------------------------------------------

    def get_label_width(self, node: TreeNode[NodeData]) -> int:
        return 1  # labels are fitted to the width: never scroll sideways

    def render_label(self, node: TreeNode[NodeData], base_style: Style,
                     style: Style) -> Text:
        width = self._label_width(node)
        part = self.get_component_rich_style
        text = Text(style=style, no_wrap=True, overflow="crop")
        data = node.data
        if isinstance(data, HostEntry):
            icon = "▼ " if node.is_expanded else "▶ "
            state = data.state
            text.append(icon, part("pool-tree--host", partial=True))
            if state is not None and (data.host.uri != "local" or state != HostState.ONLINE):
                look = "fresh" if state == HostState.ONLINE else \
                    "refreshing" if state == HostState.CONNECTING else "error"
                text.append(HOST_GLYPHS.get(state, "?") + " ",
                            part(f"pool-tree--{look}", partial=True))
            name = data.host.name if state in (None, HostState.ONLINE) else \
                f"{data.host.name}: {state}"
            text.append(fit(printable(name), width - len(text.plain)),
                        part("pool-tree--host", partial=True))
            return text
        if not isinstance(data, PoolEntry):
            return text
        state = data.state(self.clock())
        self._painted[data.key] = state
        text.append(GLYPHS[state] + " ", part(f"pool-tree--{state}", partial=True))
        row = data.row
        bar = 10 if width >= 28 else 6 if width >= 16 else 0
        name_width = width - 2 - (bar + 1 if bar else 0)
        text.append(fit(pool_label(data.pool), name_width, keep="end"))
        if bar:
            text.append(" ")
            text.append(capacity_bar(row.capacity if row else 0, row.allocation if row else 0,
                                     row.committed if row else 0, bar, self.bar_styles()))
        return text

    def _label_width(self, node: TreeNode[NodeData]) -> int:
        depth = 0
        parent = node.parent
        while parent is not None and parent is not self.root:
            depth += 1
            parent = parent.parent
        return max(4, self.scrollable_content_region.width - depth * self.guide_depth)

    def bar_styles(self) -> BarStyles:
        part = self.get_component_rich_style
        return BarStyles(part("pool-tree--allocated", partial=True),
                         part("pool-tree--committed", partial=True),
                         part("pool-tree--free", partial=True),
                         part("pool-tree--over", partial=True))
