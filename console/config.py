"""config.toml and the XDG paths (platformdirs).

```toml
max_chain_depth = 8            # deeper chains are "degraded"
warning = 0.80                 # pool usage flagged above this fraction of capacity
critical = 0.95                # ... and no new job may take space above this one
theme = "storage-dark"         # remembered when a theme is picked in the console
strategy = "performance"       # optional, also per host and per pool: "space" or
                               # "performance" (a check proposes converting volumes
preferred_format = "qcow2"     # to preallocated ones, in this format when set)

[jobs]
per_host = 4                   # jobs running at once on one host
per_pool = 2                   # ... and in one pool
auto_fix = true                # a job's result is checked; a low-risk fix runs after it

[[host]]
name = "local"
uri = "local"
roots = ["/srv/images"]        # optional: where backing files may lie (default: pools)

[[host.pool]]
name = "default"
type = "dir"
path = "/var/lib/libvirt/images"
critical = 0.90                # per pool, when it differs
```

With no config file, the embedded default is host ``local`` with libvirt's usual image
directory when it exists, or a pool in the XDG data dir (created on first run). A file
that lists no ``[[host]]`` (only a theme, say) keeps the embedded default's hosts.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from backends.model import Host, Pool
from console.hosts import UriKind, uri_kind

APP = "storage-console"
LIBVIRT_IMAGES = "/var/lib/libvirt/images"
DEFAULT_MAX_CHAIN_DEPTH = 8


STRATEGIES = ("space", "performance")
PREFERRED_FORMATS = ("raw", "qcow2")


class ConfigError(Exception):
    """The config cannot be used; the message names the file and the entry."""


def config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def cache_path() -> Path:
    return Path(platformdirs.user_cache_dir(APP)) / "cache.db"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP))


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))


def archive_dir() -> Path:
    """Where the console proposes to put archives: away from the pools they back up."""
    return data_dir() / "archives"


def themes_dir() -> Path:
    """Where user themes live: one ``*.toml`` file per theme."""
    return Path(platformdirs.user_config_dir(APP)) / "themes"


def known_hosts_path() -> Path:
    """The console's own known_hosts: keys trusted in the console or with
    --trust-host, checked after ~/.ssh/known_hosts."""
    return Path(platformdirs.user_config_dir(APP)) / "known_hosts"


def journal_path() -> Path:
    """The job journal and audit log: durable state, never beside the cache."""
    return state_dir() / "journal.db"


@dataclass(frozen=True)
class Thresholds:
    """Fractions of a pool's capacity: above ``warning`` it is flagged, above
    ``critical`` no new job may take space in it."""

    warning: float = 0.80
    critical: float = 0.95


@dataclass(frozen=True)
class Strategy:
    """How a pool's volumes are meant to be laid out: ``name`` "space" (thin, overlays)
    or "performance" (standalone and preallocated, in ``preferred_format`` when set);
    "" when the config says nothing (no layout is proposed)."""

    name: str = ""
    preferred_format: str = ""

    @property
    def performance(self) -> bool:
        return self.name == "performance"


@dataclass(frozen=True)
class HostConfig:
    host: Host
    pools: tuple[Pool, ...] = ()
    roots: tuple[str, ...] = ()  # empty: the host's pool directories
    thresholds: tuple[tuple[str, Thresholds], ...] = ()  # per pool name, when set
    lvm: bool = False  # list every volume group of the host as a pool
    strategy: Strategy | None = None  # None: the config's
    strategies: tuple[tuple[str, Strategy], ...] = ()  # per pool name, when set

    @property
    def discovers(self) -> bool:
        """Whether the host reports pools beyond the configured ones (libvirt's pools,
        volume groups): a HOST:POOL naming one is looked up on the host."""
        return self.lvm or uri_kind(self.host.uri) == UriKind.LIBVIRT

    @property
    def allowed_roots(self) -> tuple[str, ...]:
        return self.roots or tuple(p.path for p in self.pools)


@dataclass(frozen=True)
class Config:
    hosts: tuple[HostConfig, ...]
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    source: Path | None = None  # None: the embedded default
    selected: tuple[str, str] | None = None  # (host, pool) to open on
    adhoc: tuple[str, ...] = field(default=())  # names of pools added from TARGETs
    thresholds: Thresholds = Thresholds()  # for pools that set none
    jobs_per_host: int = 4  # jobs running at once on one host ([jobs] per_host)
    jobs_per_pool: int = 2  # ... and in one pool ([jobs] per_pool)
    strategy: Strategy = Strategy()  # for hosts and pools that set none
    auto_fix: bool = True  # a job's result checked, a low-risk fix queued ([jobs] auto_fix)
    theme: str | None = None  # the theme last picked in the console
    default_hosts: bool = False  # the file lists no [[host]]: the embedded default's

    def pool_thresholds(self, host: str, pool: str) -> Thresholds:
        return dict(self.host(host).thresholds).get(pool, self.thresholds)

    def pool_strategy(self, host: str, pool: str) -> Strategy:
        """The pool's own strategy, else its host's, else the config's."""
        try:
            hc = self.host(host)
        except KeyError:
            return self.strategy
        return dict(hc.strategies).get(pool, hc.strategy or self.strategy)

    def host(self, name: str) -> HostConfig:
        for h in self.hosts:
            if h.host.name == name:
                return h
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        """The config at ``path`` (default: the XDG one), or the embedded default."""
        explicit = path is not None
        path = path or config_path()
        if not path.exists():
            if explicit:
                raise ConfigError(f"config file {path} does not exist")
            return cls.embedded_default()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
        config = cls.from_dict(data, path)
        if "host" not in data:
            default = cls.embedded_default()
            config = replace(config, hosts=default.hosts, default_hosts=True)
        return config

    @classmethod
    def from_dict(cls, data: dict[str, object], source: Path | None = None) -> Config:
        where = str(source or "config")
        depth = data.get("max_chain_depth", DEFAULT_MAX_CHAIN_DEPTH)
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"{where}: max_chain_depth must be a positive integer")
        defaults = _thresholds(data, Thresholds(), where)
        strategy = _strategy(data, Strategy(), where)
        hosts: list[HostConfig] = []
        raw_hosts = data.get("host", [])
        if not isinstance(raw_hosts, list):
            raise ConfigError(f"{where}: 'host' must be a list of [[host]] tables")
        for i, raw in enumerate(raw_hosts):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise ConfigError(f"{where}: host #{i + 1} needs a name")
            name = raw["name"]
            uri = raw.get("uri", "local")
            try:
                kind_of_host = uri_kind(uri) if isinstance(uri, str) else None
            except ValueError as err:
                raise ConfigError(f"{where}: host {name!r}: {err}") from None
            if kind_of_host is None:
                raise ConfigError(f"{where}: host {name!r}: uri must be a string")
            lvm = raw.get("lvm", False)
            if not isinstance(lvm, bool):
                raise ConfigError(f"{where}: host {name!r}: lvm must be true or false")
            pools: list[Pool] = []
            limits: list[tuple[str, Thresholds]] = []
            host_strategy = _strategy(raw, strategy, f"{where}: host {name!r}")
            strategies: list[tuple[str, Strategy]] = []
            for j, rp in enumerate(raw.get("pool", [])):
                pool = _pool(rp, name, kind_of_host, f"{where}: host {name!r}", j)
                pools.append(pool)
                if "warning" in rp or "critical" in rp:
                    limits.append((pool.name, _thresholds(
                        rp, defaults, f"{where}: host {name!r}, pool {rp['name']!r}")))
                if "strategy" in rp or "preferred_format" in rp:
                    strategies.append((pool.name, _strategy(
                        rp, host_strategy, f"{where}: host {name!r}, pool {rp['name']!r}")))
            if len({p.name for p in pools}) != len(pools):
                raise ConfigError(f"{where}: host {name!r} has two pools with the same name")
            roots = raw.get("roots", [])
            if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
                raise ConfigError(f"{where}: host {name!r}: roots must be a list of paths")
            hosts.append(HostConfig(Host(name, uri), tuple(pools),
                                    tuple(os.path.abspath(r) for r in roots), tuple(limits),
                                    lvm=lvm, strategy=host_strategy,
                                    strategies=tuple(strategies)))
        if len({h.host.name for h in hosts}) != len(hosts):
            raise ConfigError(f"{where}: two hosts have the same name")
        jobs = data.get("jobs", {})
        if not isinstance(jobs, dict):
            raise ConfigError(f"{where}: [jobs] must be a table")
        per = {}
        for key in ("per_host", "per_pool"):
            value = jobs.get(key, 4 if key == "per_host" else 2)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: [jobs] {key} must be a positive integer")
            per[key] = value
        auto_fix = jobs.get("auto_fix", True)
        if not isinstance(auto_fix, bool):
            raise ConfigError(f"{where}: [jobs] auto_fix must be true or false")
        theme = data.get("theme")
        if theme is not None and (not isinstance(theme, str) or not theme):
            raise ConfigError(f"{where}: theme must be a theme's name, like \"storage-dark\"")
        return cls(tuple(hosts), depth, source, thresholds=defaults,
                   jobs_per_host=per["per_host"], jobs_per_pool=per["per_pool"],
                   strategy=strategy, auto_fix=auto_fix, theme=theme)

    @classmethod
    def embedded_default(cls, libvirt_pools: tuple[tuple[str, str], ...] = ()) -> Config:
        """Host ``local`` with its default pool, plus ``libvirt_pools`` as (name, path)
        directory pools (libvirt's active pools, found by the caller)."""
        if os.path.isdir(LIBVIRT_IMAGES):
            path = LIBVIRT_IMAGES
        else:
            path = str(data_dir() / "pools" / "default")
        pools = [Pool("local", "default", "dir", path)]
        for name, lv_path in libvirt_pools:
            if all(os.path.realpath(p.path) != os.path.realpath(lv_path) for p in pools):
                taken = any(p.name == name for p in pools)
                pools.append(Pool("local", f"libvirt-{name}" if taken else name, "dir",
                                  lv_path))
        return cls((HostConfig(Host("local"), tuple(pools)),))

    def create_embedded_pool(self) -> None:
        """The embedded default's own pool in the XDG data dir is created on first run
        (configured pools are never created behind the user's back)."""
        if self.source is None:
            for hc in self.hosts:
                for pool in hc.pools:
                    if pool.path.startswith(str(data_dir())):
                        os.makedirs(pool.path, exist_ok=True)

    @classmethod
    def load_default(cls, path: Path | None = None) -> Config:
        """``load``, and when that is the embedded default, libvirt's directory pools
        added when libvirtd is reachable (read-only connection)."""
        config = cls.load(path)
        if config.source is not None and not config.default_hosts:
            return config
        from backends.drivers.libvirt import directory_pools

        found = tuple((p.name, p.path) for p in directory_pools() if p.active)
        if not found:
            return config
        return replace(config, hosts=cls.embedded_default(found).hosts)

    def with_targets(self, targets: list[str]) -> Config:
        """Add TARGETs: a directory becomes an ad-hoc pool on ``local``; ``HOST:POOL``
        must name a configured pool. The first TARGET is selected."""
        config = self
        selected: tuple[str, str] | None = None
        for target in targets:
            pick = config._resolve_target(target)
            if isinstance(pick, Pool):
                config = config._with_pool(pick)
                pick = (pick.host, pick.name)
            selected = selected or pick
        return replace(config, selected=selected)

    @classmethod
    def for_targets(cls, targets: list[str]) -> Config:
        """Only the given TARGET directories, on host ``local`` (tests, scripts)."""
        return cls((HostConfig(Host("local")),)).with_targets(targets)

    def _resolve_target(self, target: str) -> Pool | tuple[str, str]:
        if os.path.isdir(target):
            path = os.path.realpath(target)
            for hc in self.hosts:
                for p in hc.pools:
                    if hc.host.uri == "local" and os.path.realpath(p.path) == path:
                        return (p.host, p.name)
            return Pool("local", path, "dir", path)
        host, sep, pool = target.partition(":")
        if sep:
            try:
                hc = self.host(host)
            except KeyError:
                raise ConfigError(f"{target}: no host {host!r} in the config") from None
            if any(p.name == pool for p in hc.pools) or (hc.discovers and pool):
                return (host, pool)
            raise ConfigError(f"{target}: host {host!r} has no pool {pool!r}")
        if os.path.exists(target):
            raise ConfigError(f"{target}: not a directory (a TARGET is a directory or "
                              "HOST:POOL)")
        raise ConfigError(f"{target}: no such directory, and not HOST:POOL")

    def _with_pool(self, pool: Pool) -> Config:
        hosts = list(self.hosts)
        for i, hc in enumerate(hosts):
            if hc.host.name == pool.host:
                if any(p.name == pool.name for p in hc.pools):
                    return self
                hosts[i] = replace(hc, pools=(*hc.pools, pool))
                break
        else:
            hosts.append(HostConfig(Host(pool.host), (pool,)))
        return replace(self, hosts=tuple(hosts), adhoc=(*self.adhoc, pool.name))


def add_host(name: str, uri: str, path: Path | None = None, *,
             current: Config | None = None) -> None:
    """Write a new ``[[host]]`` into the config file, keeping what is there (comments
    too). Without a file, the embedded default's hosts are written first, so adding a
    host never loses the pools the console showed."""
    import tomlkit

    path = path or config_path()
    try:
        uri_kind(uri)
    except ValueError as err:
        raise ConfigError(f"host {name!r}: {err}") from None
    if not name or any(c in name for c in ":/ \t\n") or not name.isprintable():
        raise ConfigError(f"host name {name!r}: use letters, digits, '-', '_' or '.'")
    doc = _read_document(path)
    hosts = doc.setdefault("host", tomlkit.aot())
    if not doc.get("host") and current is not None:
        for hc in current.hosts:
            hosts.append(_host_table(hc))
    if any(h.get("name") == name for h in hosts):
        raise ConfigError(f"{path}: there is already a host named {name!r}")
    table = tomlkit.table()
    table["name"], table["uri"] = name, uri
    hosts.append(table)
    _write_document(path, doc)


def remove_host(name: str, path: Path | None = None) -> None:
    """Remove the ``[[host]]`` named ``name`` from the config file."""
    path = path or config_path()
    doc = _read_document(path)
    hosts = doc.get("host", [])
    keep = [h for h in hosts if h.get("name") != name]
    if len(keep) == len(hosts):
        raise ConfigError(f"{path}: no host named {name!r}")
    del hosts[:]
    for h in keep:
        hosts.append(h)
    _write_document(path, doc)


def set_theme(name: str, path: Path | None = None) -> None:
    """Remember ``name`` as the console's theme in the config file, keeping the rest of
    the file (comments too). Without a file, one holding only the theme is written: the
    embedded default's hosts stay the default."""
    path = path or config_path()
    doc = _read_document(path)
    doc["theme"] = name
    _write_document(path, doc)


def _host_table(hc: HostConfig) -> Any:
    import tomlkit

    table = tomlkit.table()
    table["name"], table["uri"] = hc.host.name, hc.host.uri
    pools = tomlkit.aot()
    for p in hc.pools:
        pt = tomlkit.table()
        pt["name"], pt["type"] = p.name, p.kind
        if p.kind == "dir":
            pt["path"] = p.path
        pools.append(pt)
    if pools:
        table["pool"] = pools
    return table


def _read_document(path: Path) -> Any:
    import tomlkit

    try:
        return tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() \
            else tomlkit.document()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def _write_document(path: Path, doc: Any) -> None:
    """Write whole or not at all: a temp file, fsync, rename."""
    import tomlkit

    text = tomlkit.dumps(doc)
    Config.from_dict(tomllib.loads(text), path)  # never write a config that cannot load
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot write config file {path}: {err}") from None


def _pool(rp: object, host: str, kind_of_host: UriKind, where: str, index: int) -> Pool:
    """One ``[[host.pool]]``: a directory (``path``) or an LVM volume group (``vg``)."""
    if not isinstance(rp, dict) or not isinstance(rp.get("name"), str):
        raise ConfigError(f"{where}: pool #{index + 1} needs a name")
    name = rp["name"]
    kind = rp.get("type", "dir")
    if kind_of_host == UriKind.LIBVIRT:
        raise ConfigError(f"{where}, pool {name!r}: a libvirt host's pools come from "
                          "libvirt; list none (use an ssh:// host for directories)")
    if kind == "dir":
        if not isinstance(rp.get("path"), str):
            raise ConfigError(f"{where}, pool {name!r}: a dir pool needs a path")
        path = rp["path"]
        # A remote path is the remote host's: never resolve it against this machine.
        return Pool(host, name, "dir", os.path.abspath(path)
                    if kind_of_host == UriKind.LOCAL else os.path.normpath(path))
    if kind == "lvm":
        vg = rp.get("vg", name)
        if not isinstance(vg, str) or not vg:
            raise ConfigError(f"{where}, pool {name!r}: vg must be a volume group name")
        return Pool(host, vg, "lvm", f"/dev/{vg}")
    raise ConfigError(f"{where}, pool {name!r}: type {kind!r} is not one of dir, lvm")


def _thresholds(table: dict[str, object], base: Thresholds, where: str) -> Thresholds:
    values = {}
    for key in ("warning", "critical"):
        value = table.get(key, getattr(base, key))
        if not isinstance(value, int | float) or not 0 < value <= 1:
            raise ConfigError(f"{where}: {key} must be a fraction of capacity in (0, 1], "
                              f"like 0.9")
        values[key] = float(value)
    if values["warning"] > values["critical"]:
        raise ConfigError(f"{where}: warning ({values['warning']}) is above critical "
                          f"({values['critical']})")
    return Thresholds(**values)


def _strategy(table: dict[str, object], base: Strategy, where: str) -> Strategy:
    """``strategy`` and ``preferred_format`` of a table; what it leaves out, ``base``'s."""
    name = table.get("strategy", base.name)
    if name != base.name and name not in STRATEGIES:
        raise ConfigError(f"{where}: strategy must be one of {', '.join(STRATEGIES)}, "
                          f"not {name!r}")
    fmt = table.get("preferred_format", base.preferred_format)
    if fmt != base.preferred_format and fmt not in PREFERRED_FORMATS:
        raise ConfigError(f"{where}: preferred_format must be one of "
                          f"{', '.join(PREFERRED_FORMATS)}, not {fmt!r}")
    return Strategy(str(name), str(fmt))
