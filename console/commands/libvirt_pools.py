"""``pool``: a libvirt host's pools, defined, built, started, stopped, undefined,
deleted and set to autostart through libvirt's API.

    storage-console pool define HOST --type dir --name NAME --target PATH
    storage-console pool define HOST --xml FILE
    storage-console pool start|stop|build|refresh|undefine|delete|info|xml HOST:POOL
    storage-console pool autostart HOST:POOL on|off

These are quick calls on the libvirt connection, not jobs: libvirt carries them out
whole or not at all. ``delete`` removes the pool's storage (its directory, or its
volume group), so it asks for the pool's name again (``--yes NAME``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.commands import UsageError
from console.commands.text import print_json
from console.config import Config
from console.hosts import UriKind, uri_kind

if TYPE_CHECKING:
    from backends.drivers.libvirt.driver import LibvirtDriver

ACTIONS = ("define", "start", "stop", "build", "refresh", "undefine", "delete", "info",
           "xml", "autostart")
TYPES = ("dir", "fs", "netfs", "logical", "iscsi")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("where", metavar="HOST|HOST:POOL",
                   help="define: the libvirt host; else HOST:POOL")
    p.add_argument("value", nargs="?", metavar="on|off", help="autostart: on or off")
    p.add_argument("--type", choices=TYPES, help="define: the pool type")
    p.add_argument("--name", help="define: the new pool's name")
    p.add_argument("--target", help="define: the target directory (dir, fs, netfs)")
    p.add_argument("--device", help="define: the block device (fs); a PV (logical)")
    p.add_argument("--source-host", help="define: the server (netfs, iscsi)")
    p.add_argument("--source-path", help="define: the export (netfs) or IQN (iscsi)")
    p.add_argument("--vg", help="define: the volume group's name (logical)")
    p.add_argument("--xml", type=Path, metavar="FILE", help="define: raw pool XML")
    p.add_argument("--yes", metavar="NAME", help="delete: the pool's name, to confirm")
    p.add_argument("--json", action="store_true", help="info: print JSON")


def _driver(config: Config, host: str, read_only: bool) -> LibvirtDriver:
    try:
        hc = config.host(host)
    except KeyError:
        raise UsageError(f"no host {host!r} in the config") from None
    if uri_kind(hc.host.uri) != UriKind.LIBVIRT:
        raise UsageError(f"host {host!r} ({hc.host.uri}) is not a libvirt host")
    from backends.drivers.libvirt.driver import LibvirtDriver

    return LibvirtDriver(hc.host.uri, host=host, read_only=read_only)


def _form(args: argparse.Namespace) -> Any:
    from backends.drivers.libvirt import poolxml

    if args.xml is not None:
        return args.xml.read_text(encoding="utf-8")
    if not args.type or not args.name:
        raise UsageError("pool define: give --type and --name (or --xml FILE)")
    fields = {key: getattr(args, key) or "" for key in
              ("target", "device", "source_host", "source_path", "vg")}
    missing = [f"--{n.replace('_', '-')}" for n in poolxml.missing_fields(args.type, fields)]
    if missing:
        raise UsageError(f"pool define --type {args.type}: give {', '.join(missing)}")
    return poolxml.pool_form(args.type, args.name, fields)


def cmd_pool(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    if args.action == "define":
        driver = _driver(config, args.where, args.read_only)
        try:
            pool = driver.define_pool(_form(args))
        finally:
            driver.close()
        print(f"defined pool {pool.name!r} on {args.where} (start it: pool start "
              f"{args.where}:{pool.name})")
        return 0
    host, sep, name = args.where.partition(":")
    if not sep or not name:
        raise UsageError(f"pool {args.action}: write HOST:POOL")
    driver = _driver(config, host, args.read_only)
    try:
        return _act(driver, args, host, name)
    finally:
        driver.close()


def _act(driver: LibvirtDriver, args: argparse.Namespace, host: str, name: str) -> int:
    action = args.action
    if action == "info":
        info = driver.pool_info(name)
        record = {"host": host, "pool": name, "type": info.pool.pool_type,
                  "state": info.state, "persistent": info.persistent,
                  "autostart": info.autostart, "path": info.pool.path,
                  "capacity": info.pool.capacity.capacity if info.pool.capacity else None,
                  "available": info.pool.capacity.available if info.pool.capacity else None}
        if args.json:
            print_json([record])
        else:
            for key, value in record.items():
                print(f"{key:11} {value}")
        return 0
    if action == "xml":
        print(driver.pool_xml(name))
        return 0
    if action == "autostart":
        if args.value not in ("on", "off"):
            raise UsageError("pool autostart HOST:POOL on|off")
        driver.set_autostart(name, args.value == "on")
    elif action == "delete":
        if args.yes != name:
            raise UsageError(f"pool delete removes the storage of {host}:{name}: give "
                             f"--yes {name} to confirm")
        driver.delete_pool(name)
    else:
        {"start": driver.start_pool, "stop": driver.stop_pool, "build": driver.build_pool,
         "refresh": driver.refresh_pool, "undefine": driver.undefine_pool}[action](name)
    print(f"{action}: {host}:{name} done")
    return 0
