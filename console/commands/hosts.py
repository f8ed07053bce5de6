"""``hosts``: the configured hosts and their state; add, remove, and trust a host's key.

``hosts`` connects every host (in parallel) and prints its state: online, offline, key
not trusted (with the key's fingerprint), or error. ``hosts add NAME URI`` and
``hosts remove NAME`` edit config.toml, keeping its comments. ``hosts trust NAME``
records the key the host shows now in the console's own known_hosts, after printing
its fingerprint; a key that differs from one already recorded is never replaced here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from backends.contract import StorageError
from console.commands import PROG, UsageError
from console.commands.text import print_json, printable, table
from console.config import Config, add_host, known_hosts_path, remove_host
from console.hosts import UriKind, uri_kind


def cmd_hosts(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "add":
        if not args.name or not args.uri:
            raise UsageError("hosts add NAME URI: both are needed")
        add_host(args.name, args.uri, args.config, current=Config.load_default(args.config))
        print(f"added host {args.name!r} ({args.uri})")
        return 0
    if action == "remove":
        if not args.name:
            raise UsageError("hosts remove NAME: name the host")
        remove_host(args.name, args.config)
        print(f"removed host {args.name!r}")
        return 0
    if action == "trust":
        if not args.name:
            raise UsageError("hosts trust NAME: name the host")
        print(trust(Config.load_default(args.config), args.name))
        return 0
    return list_hosts(args)


def trust(config: Config, name: str) -> str:
    """Record ``name``'s current key in the console's known_hosts; the line to print."""
    try:
        hc = config.host(name)
    except KeyError:
        raise UsageError(f"no host {name!r} in the config") from None
    if uri_kind(hc.host.uri) != UriKind.SSH:
        raise UsageError(f"host {name!r} ({hc.host.uri}) is not reached over SSH: "
                         "there is no key to trust")
    from backends.transport.ssh import trust_host_key

    # Trusting from the command line is the user's word for the key offered now: the
    # fingerprint is printed so it can be compared with the host's own.
    fingerprint = trust_host_key(hc.host.uri, str(known_hosts_path()))
    return f"trusted host {name!r}: {fingerprint} (in {known_hosts_path()})"


def list_hosts(args: argparse.Namespace) -> int:
    from console.inventory import Inventory

    config = Config.load_default(args.config)
    inventory = Inventory(config, None, read_only=True)

    def one(name: str) -> dict[str, Any]:
        link = inventory.host_link(name)
        pools: list[str] = []
        with contextlib.suppress(StorageError):  # the state and its error say why
            pools = [p.name for p in inventory.discover_host(name)]
        status = link.status
        return {"name": name, "uri": link.uri, "state": status.state.value,
                "error": status.error, "pools": pools}

    from concurrent.futures import ThreadPoolExecutor

    names = [h.name for h in inventory.hosts()]
    with ThreadPoolExecutor(max(1, min(len(names), 16))) as workers:
        records = list(workers.map(one, names))
    inventory.close()
    if args.json:
        print_json(records)
    else:
        rows = [("HOST", "URI", "STATE", "POOLS")]
        rows += [(printable(r["name"]), printable(r["uri"]), r["state"],
                  str(len(r["pools"]))) for r in records]
        print(table(rows, {3}))
        for r in records:
            if r["error"]:
                print(f"{PROG}: {r['name']}: {r['error']}", file=sys.stderr)
    return 2 if any(r["state"] != "online" for r in records) else 0
