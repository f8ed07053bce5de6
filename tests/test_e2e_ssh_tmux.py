"""End to end as an administrator works: the real console inside tmux, over a real
``ssh -t`` session to a test sshd on loopback, TERM=xterm-256color, 80x24. Each step is
checked on the screen tmux shows (capture-pane): open, move to a pool, filter, mark,
show a plan, quit."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeImage
from tests.harness.sshd import Fleet
from tests.test_console_tty import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None or shutil.which("ssh") is None,
                                reason="tmux and ssh are needed")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t("kill-server")


def shows(tmux: Tmux, present: list[str], absent: tuple[str, ...] = (),
          timeout: float = 20) -> str:
    """The screen once it holds every ``present`` text and none of ``absent`` (a
    capture may fall in the middle of a repaint: wait for the whole of it)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if all(t in screen for t in present) and not any(t in screen for t in absent):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"wanted {present}, not {list(absent)}; the screen was:\n{screen}")


def remote_command(pools: list[Path]) -> str:
    """The console as the session starts it: the project's python (the sshd's PATH has
    none of ours), this test's XDG dirs, the pools as targets."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k.startswith("XDG_"))
    targets = " ".join(shlex.quote(str(p)) for p in pools)
    return (f"cd {shlex.quote(os.getcwd())} && env {env} LANG=C.UTF-8 "
            f"{shlex.quote(sys.executable)} -m console.cli {targets}")


def test_console_over_ssh_in_tmux(tmux: Tmux, tmp_path: Path, sshd_fleet: Fleet,
                                  make_image: MakeImage) -> None:
    images, backups = tmp_path / "images", tmp_path / "backups"
    for pool in (images, backups):
        pool.mkdir()
    make_image(images / "base.raw", "raw", "64M")
    make_image(images / "disk-one.qcow2", "qcow2", "64M", backing="base.raw",
               backing_fmt="raw")
    for name in ("web-01.qcow2", "web-02.qcow2", "db-01.qcow2"):
        make_image(backups / name, "qcow2", "32M")
    ssh_dir = sshd_fleet.home / ".ssh"
    # ssh finds ~ from the password file, not $HOME: name the fleet's files.
    ssh = ["ssh", "-t", "-F", str(ssh_dir / "config"), "-i", str(ssh_dir / "id_ed25519"),
           "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}", "-o", "BatchMode=yes",
           "sc-a", remote_command([images, backups])]
    local = f"env TERM=xterm-256color {shlex.join(ssh)}; echo SESSION-ENDED=$?; sleep 60"
    tmux("new-session", "-d", "-s", "sc", "-x", "80", "-y", "24", local)

    # open: the first pool and its volumes, the footer's keys
    screen = shows(tmux, ["disk-one.qcow2", "base.raw", "optimized", "/ Filter",
                          backups.name], timeout=40)
    assert "/ Filter" in screen.rstrip().splitlines()[-1]  # the footer

    # move to a pool with the : command line
    tmux("send-keys", "-t", "sc", ":")
    tmux.wait_for("tab Complete")  # the line is open: the footer shows its keys
    tmux("send-keys", "-t", "sc", "-l", f"pool {backups}")
    tmux("send-keys", "-t", "sc", "Enter")
    shows(tmux, ["web-01.qcow2", "web-02.qcow2", "db-01.qcow2"],
          absent=("disk-one.qcow2",))

    # filter
    tmux("send-keys", "-t", "sc", "/")
    shows(tmux, ["filter names (enter keeps"])  # open and focused: type into it
    tmux("send-keys", "-t", "sc", "-l", "web")
    shows(tmux, ["▕web\n", "web-01.qcow2", "web-02.qcow2"], absent=("db-01.qcow2",))
    tmux("send-keys", "-t", "sc", "Enter")  # keeps the filter, keys go to the table
    shows(tmux, ["r Refresh"])  # the table's keys are back in the footer

    # vim keys move the cursor: the details follow
    tmux("send-keys", "-t", "sc", "j")
    shows(tmux, ["web-02.qcow2  qcow2"])  # the details' first line

    # mark both matches (space marks and moves down): the mark bar counts them
    tmux("send-keys", "-t", "sc", "g")
    shows(tmux, ["web-01.qcow2  qcow2"])
    tmux("send-keys", "-t", "sc", "Space")
    shows(tmux, ["1 marked"])
    tmux("send-keys", "-t", "sc", "Space")
    shows(tmux, ["2 marked"])

    # one plan for deleting both; esc leaves it, nothing deleted
    tmux("send-keys", "-t", "sc", "d")
    screen = shows(tmux, ["2 marked volumes: the plan", "web-01.qcow2", "web-02.qcow2"])
    assert "Traceback" not in screen
    tmux("send-keys", "-t", "sc", "Escape")
    shows(tmux, ["2 marked", "web-01.qcow2"], absent=("the plan",))
    tmux("send-keys", "-t", "sc", "Escape")  # clears the marks
    shows(tmux, ["r Refresh"], absent=("2 marked",))

    # quit with :q: the ssh session ends cleanly
    tmux("send-keys", "-t", "sc", ":")
    tmux.wait_for("tab Complete")
    tmux("send-keys", "-t", "sc", "-l", "q")
    tmux("send-keys", "-t", "sc", "Enter")
    screen = tmux.wait_for("SESSION-ENDED=", timeout=30)
    assert "SESSION-ENDED=0" in screen, screen
    assert "Traceback" not in screen
