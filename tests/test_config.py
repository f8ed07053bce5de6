from __future__ import annotations

from pathlib import Path

import pytest

from console.config import Config, ConfigError, Strategy


def test_load_hosts_and_pools(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("max_chain_depth = 4\n[[host]]\nname = 'local'\nroots = ['/srv']\n"
                    "[[host.pool]]\nname = 'images'\npath = '/var/images'\n")
    config = Config.load(conf)
    (hc,) = config.hosts
    assert config.max_chain_depth == 4
    assert hc.host.name == "local" and hc.host.uri == "local"
    assert [(p.name, p.path, p.kind) for p in hc.pools] == [("images", "/var/images", "dir")]
    assert hc.allowed_roots == ("/srv",)


def test_roots_default_to_pool_directories(tmp_path: Path) -> None:
    config = Config.for_targets([str(tmp_path)])
    assert config.hosts[0].allowed_roots == (str(tmp_path),)
    assert config.selected == ("local", str(tmp_path))


def test_targets_select_configured_pool(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'h'\n[[host.pool]]\nname = 'p'\npath = '{tmp_path}'\n")
    config = Config.load(conf)
    assert config.with_targets(["h:p"]).selected == ("h", "p")
    with pytest.raises(ConfigError, match="has no pool 'x'"):
        config.with_targets(["h:x"])


@pytest.mark.parametrize(("text", "message"), [
    ("[[host]]\nuri='local'\n", "needs a name"),
    ("[[host]]\nname='a'\nuri='nonsense'\n", "not 'local', ssh://"),
    ("[[host]]\nname='a'\nuri='test:///default'\n[[host.pool]]\nname='p'\npath='/x'\n",
     "pools come from libvirt"),
    ("[[host]]\nname='a'\n[[host.pool]]\nname='p'\ntype='zfs'\n", "not one of dir, lvm"),
    ("[[host]]\nname='a'\nlvm='yes'\n", "lvm must be true or false"),
    ("[[host]]\nname='a'\n[[host]]\nname='a'\n", "same name"),
    ("max_chain_depth = 0\n", "positive integer"),
    ("not toml [", "not valid TOML"),
])
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        Config.load(conf)
    assert str(conf) in str(err.value)


def test_embedded_default(xdg_home: Path) -> None:
    config = Config.load()
    (hc,) = config.hosts
    (pool,) = hc.pools
    assert (hc.host.name, pool.name, config.source) == ("local", "default", None)


def test_libvirt_directory_pools_join_the_embedded_default() -> None:
    from backends.drivers.libvirt import directory_pools

    # libvirt's built-in test driver has one dir pool, "default-pool".
    (found,) = directory_pools("test:///default")
    assert (found.name, found.type, found.path, found.active) == (
        "default-pool", "dir", "/default-pool", True)
    config = Config.embedded_default(((found.name, found.path), ("dup", LIBVIRT_PATH)))
    names = [p.name for p in config.hosts[0].pools]
    assert names[0] == "default" and "default-pool" in names
    assert len(names) == (2 if config.hosts[0].pools[0].path == LIBVIRT_PATH else 3)


def test_unreachable_libvirt_is_no_error() -> None:
    from backends.drivers.libvirt import directory_pools

    assert directory_pools("qemu+unix:///system?socket=/nonexistent/sock") == []


LIBVIRT_PATH = "/var/lib/libvirt/images"


def test_thresholds_default_and_per_pool(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("critical = 0.9\n[[host]]\nname = 'h'\n"
                    "[[host.pool]]\nname = 'a'\npath = '/a'\nwarning = 0.5\ncritical = 0.6\n"
                    "[[host.pool]]\nname = 'b'\npath = '/b'\n")
    config = Config.load(conf)
    a, b = config.pool_thresholds("h", "a"), config.pool_thresholds("h", "b")
    assert (a.warning, a.critical) == (0.5, 0.6)
    assert (b.warning, b.critical) == (0.8, 0.9)


def test_strategy_per_config_host_and_pool(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("strategy = 'space'\n"
                    "[[host]]\nname = 'h'\nstrategy = 'performance'\n"
                    "[[host.pool]]\nname = 'a'\npath = '/a'\npreferred_format = 'raw'\n"
                    "[[host.pool]]\nname = 'b'\npath = '/b'\n"
                    "[[host]]\nname = 'g'\n")
    config = Config.load(conf)
    assert config.pool_strategy("h", "a") == Strategy("performance", "raw")
    assert config.pool_strategy("h", "b") == Strategy("performance", "")
    assert config.pool_strategy("g", "c") == Strategy("space", "")
    assert not Config.for_targets([str(tmp_path)]).pool_strategy("local", "x").performance
    conf.write_text("[[host]]\nname = 'h'\n[[host.pool]]\nname = 'a'\npath = '/a'\n"
                    "strategy = 'fast'\n")
    with pytest.raises(ConfigError, match="host 'h', pool 'a': strategy must be one of"):
        Config.load(conf)
    conf.write_text("preferred_format = 'vmdk'\n")
    with pytest.raises(ConfigError, match="preferred_format must be one of raw, qcow2"):
        Config.load(conf)


@pytest.mark.parametrize(("pool", "message"), [
    ("critical = 1.5", "fraction of capacity"),
    ("warning = 0.99\ncritical = 0.9", "above critical"),
    ("critical = 'high'", "fraction of capacity"),
])
def test_bad_thresholds(tmp_path: Path, pool: str, message: str) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'h'\n[[host.pool]]\nname = 'a'\npath = '/a'\n{pool}\n")
    with pytest.raises(ConfigError, match=message) as err:
        Config.load(conf)
    assert "host 'h', pool 'a'" in str(err.value)


def test_hosts_of_every_kind(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(
        "[[host]]\nname = 'far'\nuri = 'ssh://root@10.0.0.9:2222'\nlvm = true\n"
        "[[host.pool]]\nname = 'images'\npath = '/srv/images/../images'\n"
        "[[host.pool]]\nname = 'fast'\ntype = 'lvm'\nvg = 'vg_fast'\ncritical = 0.9\n"
        "[[host]]\nname = 'virt'\nuri = 'qemu+ssh://root@10.0.0.9/system'\n")
    config = Config.load(conf)
    far, virt = config.hosts
    assert far.lvm and far.host.uri == "ssh://root@10.0.0.9:2222"
    assert [(p.name, p.kind, p.path) for p in far.pools] == [
        ("images", "dir", "/srv/images"), ("vg_fast", "lvm", "/dev/vg_fast")]
    assert config.pool_thresholds("far", "vg_fast").critical == 0.9
    assert virt.pools == () and virt.host.uri.startswith("qemu+ssh://")


def test_add_and_remove_hosts_keep_the_file(tmp_path: Path) -> None:
    from console.config import add_host, remove_host

    conf = tmp_path / "config.toml"
    conf.write_text("# my hosts\n[[host]]\nname = 'local'  # this machine\n"
                    f"[[host.pool]]\nname = 'p'\npath = '{tmp_path}'\n")
    add_host("far", "ssh://root@127.0.0.1:2222", conf)
    add_host("virt", "test:///default", conf)
    assert [h.host.name for h in Config.load(conf).hosts] == ["local", "far", "virt"]
    with pytest.raises(ConfigError, match="already a host named 'far'"):
        add_host("far", "local", conf)
    with pytest.raises(ConfigError, match="not 'local', ssh://"):
        add_host("bad", "nowhere", conf)
    remove_host("far", conf)
    text = conf.read_text()
    assert "# my hosts" in text and "# this machine" in text and "far" not in text
    assert [h.host.name for h in Config.load(conf).hosts] == ["local", "virt"]
    with pytest.raises(ConfigError, match="no host named 'far'"):
        remove_host("far", conf)


def test_adding_a_host_to_the_embedded_default_keeps_its_pools(xdg_home: Path) -> None:
    from console.config import add_host, config_path

    current = Config.load()
    add_host("far", "ssh://127.0.0.1", current=current)
    config = Config.load()
    assert config.source == config_path()
    assert [h.host.name for h in config.hosts] == ["local", "far"]
    assert config.hosts[0].pools == current.hosts[0].pools
