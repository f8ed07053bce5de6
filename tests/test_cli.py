"""The command line as a user runs it: a real process, real images, real errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MakeImage, write_file

FIELDS = {"host", "pool", "name", "path", "format", "capacity", "allocation", "backing",
          "backing_format", "chain_depth", "health", "reasons"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True,
                          text=True, env=env or dict(os.environ), timeout=60,
                          errors="surrogateescape")


def test_ls_json_fields(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "2M")
    make_image(pool_dir / "top.qcow2", "qcow2", "2M", backing="base.raw", backing_fmt="raw")
    done = run("ls", str(pool_dir), "--json")
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(done.stdout)}
    assert set(records) == {"base.raw", "top.qcow2"}
    top = records["top.qcow2"]
    assert set(top) >= FIELDS
    assert top["host"] == "local" and top["pool"] == str(pool_dir.resolve())
    assert top["path"] == str(pool_dir.resolve() / "top.qcow2")
    assert (top["format"], top["capacity"]) == ("qcow2", 2 << 20)
    assert top["allocation"] == os.stat(pool_dir / "top.qcow2").st_blocks * 512
    assert top["backing"] == str(pool_dir.resolve() / "base.raw")
    assert (top["backing_format"], top["chain_depth"]) == ("raw", 2)
    assert top["health"] == "optimized" and top["reasons"]
    assert records["base.raw"]["backing"] is None
    assert top["in_use"] is False and top["snapshot"] is False


def test_ls_json_broken_chain(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "b.raw", "raw", "1M")
    make_image(pool_dir / "orphan", "qcow2", "1M", backing="b.raw", backing_fmt="raw")
    (pool_dir / "b.raw").unlink()
    (rec,) = json.loads(run("ls", str(pool_dir), "--json").stdout)
    assert rec["health"] == "broken"
    assert any("missing" in r for r in rec["reasons"])


def test_ls_text_and_hostile_names(pool_dir: Path) -> None:
    write_file(pool_dir / "new\nline", size=4096)
    done = run("ls", str(pool_dir))
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "new\\nline" in lines[1]


def test_pools_json(pool_dir: Path, make_image: MakeImage) -> None:
    make_image(pool_dir / "a", "qcow2", "3M")
    make_image(pool_dir / "b", "raw", "5M")
    done = run("pools", str(pool_dir), "--json")
    (rec,) = json.loads(done.stdout)
    vfs = os.statvfs(pool_dir)
    assert rec["committed"] == 8 << 20 and rec["volumes"] == 2
    assert rec["capacity"] == vfs.f_blocks * vfs.f_frsize
    assert rec["available"] <= rec["capacity"] and rec["allocation"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (("ls", "/nonexistent/dir"), "no such directory"),
    (("ls", "nohost:pool"), "no host 'nohost'"),
    (("ls", "--bogus"), "unrecognized arguments"),
    (("pools", "--config", "/nonexistent.toml"), "does not exist"),
])
def test_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[[host]]\nname = 'x'\nuri = 'local'\n[[host.pool]]\nname='p'\n")
    done = run("ls", "--config", str(bad))
    assert done.returncode == 2 and "a dir pool needs a path" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_pool_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f"[[host]]\nname = 'h1'\n[[host.pool]]\nname = 'gone'\n"
                    f"path = '{tmp_path / 'missing'}'\n")
    done = run("ls", "--config", str(conf))
    assert done.returncode == 2
    assert "host 'h1', pool 'gone'" in done.stderr and "does not exist" in done.stderr


def test_ls_does_not_import_textual(pool_dir: Path) -> None:
    code = ("import sys; from console.cli import main; rc = main(['ls', sys.argv[1], "
            "'--json']); assert 'textual' not in sys.modules, 'textual imported'; "
            "print(rc, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, str(pool_dir)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "0"


@pytest.mark.parametrize("command", ["ls", "pools"])
def test_listing_does_not_import_the_job_engine(pool_dir: Path, command: str) -> None:
    """Listing starts fast: no runner, no operations, no progress bar (rich)."""
    heavy = ("textual", "rich", "console.jobs.runner", "console.jobs.operations",
             "console.commands.engine", "console.commands.progress")
    code = (f"import sys; from console.cli import main; rc = main([{command!r}, sys.argv[1], "
            f"'--json']); print(rc, [m for m in {heavy!r} if m in sys.modules], "
            "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, str(pool_dir)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "0 []"


def test_embedded_default_pool_created(xdg_home: Path) -> None:
    done = run("pools", "--json")
    assert done.returncode == 0, done.stderr
    (rec,) = json.loads(done.stdout)
    assert rec["host"] == "local" and rec["pool"] == "default"
    if not os.path.isdir("/var/lib/libvirt/images"):
        assert rec["path"] == str(xdg_home / "xdg_data_home/storage-console/pools/default")
    assert os.path.isdir(rec["path"])


def test_ls_is_read_only(pool_dir: Path, xdg_home: Path, make_image: MakeImage) -> None:
    """ls reads the disk and writes nothing: no cache, no config, no state."""
    make_image(pool_dir / "a.qcow2")
    before = sorted(p for p in xdg_home.rglob("*"))
    assert run("ls", str(pool_dir)).returncode == 0
    assert sorted(p for p in xdg_home.rglob("*")) == before


def test_ls_json_one_object_per_line(pool_dir: Path) -> None:
    for name in ('}, {"host": "x', "plain"):
        write_file(pool_dir / name, size=512)
    done = run("ls", str(pool_dir), "--json")
    lines = done.stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 4
    assert [r["name"] for r in json.loads(done.stdout)] == ["plain", '}, {"host": "x']


def test_console_help() -> None:
    done = run("--help")
    assert done.returncode == 0 and "--read-only" in done.stdout and "--cache" in done.stdout


def test_a_bug_is_one_line_and_debug_shows_it(pool_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from console import cli, health

    def broken(*args: object) -> object:
        raise ZeroDivisionError("boom")

    write_file(pool_dir / "a", size=512)
    monkeypatch.setattr(health, "assess", broken)
    monkeypatch.setattr("console.inventory.assess", broken)
    assert cli.main(["ls", str(pool_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError: boom" in err
    monkeypatch.setenv("STORAGE_CONSOLE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["ls", str(pool_dir)])


def test_printable_escapes_only_what_would_break_a_terminal() -> None:
    from console.commands.text import printable

    assert printable("café → b") == "café → b"
    assert printable("new\nline\x1b[31m\u202e") == "new\\nline\\x1b[31m\\u202e"
    assert printable("bad-\udcff\\x") == "bad-\\xff\\x"
