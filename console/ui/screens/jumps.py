"""Carrying out a ``:`` command on the main screen: jump to a host or pool, or open
the jobs panel, the fixes or the audit log, or quit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from console.ui.command_line import Command

if TYPE_CHECKING:
    from console.ui.screens.main import MainScreen


def jump(screen: MainScreen, command: Command) -> None:
    """What ``command`` asks, with the keys' own actions (the same checks apply)."""
    verb = command.verb
    if verb == "host" and command.host is not None:
        if screen.pool_tree.select_host(command.host):
            screen.current_host = command.host
            screen.current = None
            screen.show_host(command.host)
            screen.pool_tree.focus()
    elif verb == "pool" and command.host is not None and command.pool is not None:
        if screen.pool_tree.select_pool(command.host, command.pool):
            screen.current_host = None
            screen.open_pool(command.host, command.pool)
            screen.volume_table.focus()
    elif verb == "jobs":
        if screen.runner is None:
            screen.notify("this console runs no jobs (it only browses)", title=":jobs",
                          severity="warning")
        else:
            screen.show_jobs(focus=True)
    elif verb == "fixes":
        screen.action_fixes()
    elif verb == "audit":
        screen.action_audit()
    elif verb == "quit":
        screen.call_next(screen.app.action_quit)  # asks first if jobs started here run
