"""End to end as an administrator works: the real console inside tmux, over a real
``ssh -t`` session to a test sshd on loopback, 80x24. Each step is checked on the screen
tmux shows (capture-pane): with TERM=xterm-256color the whole walk (open, move to a pool,
filter, mark, show a plan, quit); with TERM=screen, tmux-256color and linux a shorter one
(open, move, quit), and on linux only 16-colour SGR codes."""

from __future__ import annotations

import os
import re
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


def open_console(tmux: Tmux, tmp_path: Path, sshd_fleet: Fleet, make_image: MakeImage,
                 term: str) -> Path:
    """The console over ssh in tmux with ``term``, showing its first pool; returns the
    second pool (three volumes)."""
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
    # ssh -t hands TERM to the remote side; COLORTERM stays here, as in real life
    local = (f"env -u COLORTERM TERM={term} {shlex.join(ssh)}; echo SESSION-ENDED=$?; "
             f"sleep 60")
    tmux("new-session", "-d", "-s", "sc", "-x", "80", "-y", "24", local)

    # open: the first pool and its volumes, the footer's keys
    screen = shows(tmux, ["disk-one.qcow2", "base.raw", "optimized", "/ Filter",
                          backups.name], timeout=40)
    assert "/ Filter" in screen.rstrip().splitlines()[-1]  # the footer
    return backups


def move_to_pool(tmux: Tmux, pool: Path) -> None:
    """With the : command line."""
    tmux("send-keys", "-t", "sc", ":")
    tmux.wait_for("tab Complete")  # the line is open: the footer shows its keys
    tmux("send-keys", "-t", "sc", "-l", f"pool {pool}")
    tmux("send-keys", "-t", "sc", "Enter")
    shows(tmux, ["web-01.qcow2", "web-02.qcow2", "db-01.qcow2"],
          absent=("disk-one.qcow2",))


def quit_console(tmux: Tmux) -> None:
    """With :q: the ssh session ends cleanly."""
    tmux("send-keys", "-t", "sc", ":")
    tmux.wait_for("tab Complete")
    tmux("send-keys", "-t", "sc", "-l", "q")
    tmux("send-keys", "-t", "sc", "Enter")
    screen = tmux.wait_for("SESSION-ENDED=", timeout=30)
    assert "SESSION-ENDED=0" in screen, screen
    assert "Traceback" not in screen


def sgr_codes(tmux: Tmux) -> set[str]:
    """Every SGR parameter on the screen as tmux holds it (colours as the console wrote
    them: 16-colour ones stay 30-37/90-97, 256 and truecolour ones are 38;5 / 38;2)."""
    screen = tmux("capture-pane", "-p", "-e", "-t", "sc")
    return {code for sgr in re.findall(r"\x1b\[([0-9;:]*)m", screen)
            for code in sgr.split(";") if code}


@pytest.mark.parametrize("term", ["screen", "tmux-256color", "linux"])
def test_open_move_quit_with_other_terms(tmux: Tmux, tmp_path: Path, sshd_fleet: Fleet,
                                         make_image: MakeImage, term: str) -> None:
    backups = open_console(tmux, tmp_path, sshd_fleet, make_image, term)
    move_to_pool(tmux, backups)
    tmux("send-keys", "-t", "sc", "j")  # vim keys move the cursor: the details follow
    shows(tmux, ["web-01.qcow2  qcow2"])  # sorted by name: db-01, then web-01
    codes = sgr_codes(tmux)
    if term in ("screen", "linux"):
        # 16 colours: no 256 (38;5) or truecolour (38;2) codes, and backgrounds of the
        # first 8 only (the linux console has no bright backgrounds)
        assert codes and codes <= {str(c) for c in (*range(0, 10), *range(21, 30),
                                                    *range(30, 38), 39, *range(40, 48),
                                                    49, *range(90, 98))}, codes
    else:
        assert "38" in codes or "48" in codes, codes  # more than 16 colours
    quit_console(tmux)


def test_console_over_ssh_in_tmux(tmux: Tmux, tmp_path: Path, sshd_fleet: Fleet,
                                  make_image: MakeImage) -> None:
    backups = open_console(tmux, tmp_path, sshd_fleet, make_image, "xterm-256color")
    move_to_pool(tmux, backups)

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

    quit_console(tmux)
