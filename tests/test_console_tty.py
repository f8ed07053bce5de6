"""The real console in a real terminal (tmux, 80x24): it starts, shows the pool, takes
keys, and quits cleanly. What a user over SSH gets, beyond what Pilot can show."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeImage

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                              text=True, timeout=20)
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "sc")

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t("kill-server")


def test_console_in_a_terminal(tmux: Tmux, tmp_path: Path, pool_dir: Path,
                               make_image: MakeImage) -> None:
    make_image(pool_dir / "base.raw", "raw", "64M")
    make_image(pool_dir / "disk-one.qcow2", "qcow2", "64M", backing="base.raw",
               backing_fmt="raw")
    status = tmp_path / "status"
    # Textual draws on stderr: it must stay the terminal.
    command = (f"{shlex.quote(sys.executable)} -m console.cli {shlex.quote(str(pool_dir))}"
               f"; echo $? > {status}; sleep 60")
    env = {k: v for k, v in os.environ.items() if k.startswith(("XDG_", "STORAGE_"))}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    tmux("new-session", "-d", "-s", "sc", "-x", "80", "-y", "24",
         f"cd {shlex.quote(os.getcwd())} && env TERM=xterm-256color {exports} {command}")
    screen = tmux.wait_for("disk-one.qcow2")
    assert "base.raw" in screen and "optimized" in screen
    tmux("send-keys", "-t", "sc", "?")
    screen = tmux.wait_for("─ Keys ─")  # the help screen lists every key
    assert "Refresh" in screen and "Delete" in screen
    tmux("send-keys", "-t", "sc", "Escape")
    # Esc then q at once reads as Alt+q, as in any terminal: wait for the help to close.
    deadline = time.monotonic() + 20
    while "Keys" in tmux.screen() and time.monotonic() < deadline:
        time.sleep(0.1)
    tmux("send-keys", "-t", "sc", "q")
    deadline = time.monotonic() + 20
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.exists(), f"the console did not quit on q:\n{tmux.screen()}"
    assert status.read_text().strip() == "0", tmux.screen()
    assert "Traceback" not in tmux.screen()
