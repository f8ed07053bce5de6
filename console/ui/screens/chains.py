"""The chain view: every cached volume of every host and pool as a forest, or, asked
about one volume, what depends on it (re-derived on disk).

The forest is built and filtered in thread workers (the cache may hold 100,000 volumes);
the screen only hands lines to ``ChainView``. Enter closes it with the volume to select
on the main screen; esc clears the filter, then closes.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from backends.contract import StorageError
from console.cache import VolumeRow
from console.chains import (
    ChainEntry,
    ChainNode,
    ForestLine,
    build_dependants,
    build_forest,
    count_nodes,
    flatten,
)
from console.inventory import Inventory
from console.ui.cells import printable
from console.ui.widgets.chain_view import ChainView

Target = tuple[str, str, str]  # (host, pool, volume name) to select on the main screen


class ForestBuilt(Message):
    def __init__(self, roots: list[ChainNode], lines: list[ForestLine], error: str = "",
                 ) -> None:
        super().__init__()
        self.roots = roots
        self.lines = lines
        self.error = error


class ForestFiltered(Message):
    def __init__(self, needle: str, lines: list[ForestLine]) -> None:
        super().__init__()
        self.needle = needle
        self.lines = lines


class ChainScreen(ModalScreen[Target | None]):
    """Args:
        inventory: Its cache is the forest; its hosts answer "what depends on this?".
        host: The console's current host: nodes of others name their host.
        volume: Show what depends on this volume (found on disk), not the whole forest.
        cursor_blink: Blinking cursor in the filter field.
    """

    HELP_TITLE: ClassVar[str] = "Chains"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "close", "Close"),
    ]

    DEFAULT_CSS = """
    ChainScreen {
        align: center middle;
        #chains {
            width: 100%;
            height: 100%;
            background: $surface;
            border: round $primary;
            border-title-color: $primary;
            border-title-style: bold;
            border-subtitle-color: $text-muted;
        }
        #chain-filter { display: none; margin: 0 1; }
        #chain-filter.-open { display: block; }
        #chain-status { height: 1; color: $text-muted; padding: 0 1; }
    }
    """

    def __init__(self, inventory: Inventory, *, host: str | None,
                 volume: VolumeRow | None = None, cursor_blink: bool = True) -> None:
        super().__init__()
        self.inventory = inventory
        self.host = host
        self.volume = volume
        self.cursor_blink = cursor_blink
        self.roots: list[ChainNode] = []
        self.needle = ""
        self.total = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="chains") as box:
            if self.volume is None:
                box.border_title = "Chains: bases first, what is based on each below"
            else:
                box.border_title = (f"What depends on {printable(self.volume.name)} "
                                    f"({printable(self.volume.pool)}), found on disk")
            box.border_subtitle = "enter goes to the volume · / filters · esc closes"
            yield Input(placeholder="filter names (keeps what they are based on and "
                        "what is based on them)", id="chain-filter", compact=True)
            yield ChainView(host=self.host, id="chain-view")
            yield Static("", id="chain-status")

    @property
    def view(self) -> ChainView:
        return self.query_one(ChainView)

    def on_mount(self) -> None:
        self.query_one("#chain-filter", Input).cursor_blink = self.cursor_blink
        self.view.focus()
        if self.volume is None:
            self.build()
        else:
            self.view.empty_text = "looking for its dependants in every pool of " \
                f"{printable(self.volume.host)}…"
            self.find_dependants(self.volume)

    # -- workers ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="chains")
    def build(self) -> None:
        cache = self.inventory.cache
        try:
            roots = build_forest(cache.all_volumes())
        except Exception as err:  # a bad row must not take the console down
            self.post_message(ForestBuilt([], [], f"cannot read the cache: {err}"))
            return
        finally:
            cache.db.close_thread()
        self.post_message(ForestBuilt(roots, flatten(roots)))

    @work(thread=True, exclusive=True, group="chains")
    def find_dependants(self, volume: VolumeRow) -> None:
        cache = self.inventory.cache
        try:
            found = []
            for distance, dependant in self.inventory.dependants(volume.host, volume.path):
                row = cache.volume(dependant.host, dependant.pool, dependant.name)
                links = dependant.chain.links
                found.append((distance, ChainEntry.of_volume(
                    dependant, row.health if row is not None else None),
                    links[1].path if len(links) > 1 else None))
        except StorageError as err:
            self.post_message(ForestBuilt([], [], str(err)))
            return
        except Exception as err:  # never a traceback in the console
            self.post_message(ForestBuilt([], [], f"{type(err).__name__}: {err}"))
            return
        finally:
            cache.db.close_thread()
        roots = build_dependants(ChainEntry.of_row(volume), found)
        self.post_message(ForestBuilt(roots, flatten(roots)))

    @work(thread=True, exclusive=True, group="chains-filter")
    def apply_filter(self, needle: str) -> None:
        self.post_message(ForestFiltered(needle, flatten(self.roots, needle)))

    @on(ForestBuilt)
    def forest_built(self, message: ForestBuilt) -> None:
        self.roots = message.roots
        self.total = count_nodes(message.roots)
        if message.error:
            self.view.show([], empty_text=message.error)
        elif self.needle:
            self.apply_filter(self.needle)
        else:
            self.show_lines(message.lines)

    @on(ForestFiltered)
    def forest_filtered(self, message: ForestFiltered) -> None:
        if message.needle == self.needle:  # a later keystroke's lines are coming
            self.show_lines(message.lines)

    def show_lines(self, lines: list[ForestLine]) -> None:
        if self.volume is not None:
            empty = "nothing is based on it"
            count = len(lines) - 1
            status = "nothing is based on it" if count <= 0 else \
                f"{count} volume(s) based on it, directly (1) or through others (2, 3, …)"
        else:
            empty = "no volumes match the filter" if self.needle else "no volumes cached"
            status = f"{self.total} volumes and links" if not self.needle else \
                f"{sum(line.match for line in lines)} match · {len(lines)} of {self.total} shown"
        self.view.show(lines, empty_text=empty)
        self.query_one("#chain-status", Static).update(status)

    # -- keys -------------------------------------------------------------------------

    def action_filter(self) -> None:
        field = self.query_one("#chain-filter", Input)
        field.add_class("-open")
        field.focus()

    @on(Input.Changed, "#chain-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.needle = event.value
        if self.roots:
            self.apply_filter(event.value)

    @on(Input.Submitted, "#chain-filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-open")
        self.view.focus()

    def action_close(self) -> None:
        field = self.query_one("#chain-filter", Input)
        if field.value or field.has_class("-open"):
            field.value = ""
            field.remove_class("-open")
            self.view.focus()
            return
        self.dismiss(None)

    @on(ChainView.Selected)
    def selected(self, message: ChainView.Selected) -> None:
        entry = message.node.entry
        if entry.pool is None:
            self.notify(f"{printable(entry.path)} is not in the cache: no pool lists it",
                        title="chains", severity="warning")
            return
        self.dismiss((entry.host, entry.pool, entry.name))
