"""Shared fixtures: an isolated XDG home per test, and real images made by qemu-img."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MakeImage = Callable[..., Path]
# Seconds a test waits for what should come soon (a job starting, a process ending):
# only a guard against a hang, so generous; CI is a busy 2-core machine. How fast a
# thing happens is measured in benchmarks/, never asserted here.
PATIENCE = 120.0

pytest_plugins = ["tests.harness.libvirtd"]  # the session's real libvirtd, when asked for


@pytest.fixture(autouse=True)
def xdg_home(tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Config, cache, data and state dirs of this test only: never the user's."""
    home = tmp_path_factory.mktemp("xdg")
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    # The embedded default asks libvirtd for its pools: not the machine's, in tests.
    monkeypatch.setenv("STORAGE_CONSOLE_LIBVIRT_URI", "qemu+unix:///system?socket=/nonexistent")
    # Textual's colours follow TERM (16 colours pick the themes' 16-colour choices):
    # truecolour, whatever terminal runs the tests, unless a test asks for less.
    monkeypatch.setenv("COLORTERM", "truecolor")
    yield home


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def make_image() -> MakeImage:
    """``make_image(path, fmt="qcow2", size="1M", backing=None, backing_fmt=None)``."""

    def make(path: Path, fmt: str = "qcow2", size: str = "1M", *,
             backing: str | None = None, backing_fmt: str | None = None,
             options: str | None = None) -> Path:
        argv = ["create", "-q", "-f", fmt]
        if backing is not None:
            argv += ["-b", backing, "-F", backing_fmt or "raw"]
        if options:
            argv += ["-o", options]
        argv += ["--", str(path)]
        if size:
            argv.append(size)
        qemu_img(*argv)
        return path

    return make


def write_file(path: Path, data: bytes = b"", size: int = 0) -> Path:
    with open(path, "wb") as f:
        f.write(data)
        if size:
            f.truncate(size)
    return path


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pool"
    d.mkdir()
    return d


def strip_backing_format(path: Path) -> None:
    """Turn the qcow2 backing-format header extension into an unknown one, so the image
    names a backing file without declaring its format (qemu-img no longer makes those)."""
    data = bytearray(path.read_bytes()[:65536])
    at = data.find(bytes.fromhex("e2792aca"))
    assert at > 0, "no backing-format extension"
    data[at:at + 4] = bytes.fromhex("6f6f6f6f")
    with open(path, "r+b") as f:
        f.write(data)


def rewrite_backing_name(path: Path, name: str) -> None:
    """Point a qcow2 at another backing name, in place (no probing, no checks)."""
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", name, "-F", "raw",
                    str(path)], check=True, capture_output=True)


# The sshd harness (real sshd on loopback) for the SSH transport's tests.
from tests.harness.fixtures import ssh_home, sshd_fleet  # noqa: E402, F401
