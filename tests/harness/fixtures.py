"""pytest fixtures of the sshd harness (imported by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.sshd import Fleet, skip_reason, start_fleet


@pytest.fixture(scope="session")
def sshd_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The test hosts, started once for the session and stopped at its end, whatever
    happened."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    fleet = start_fleet(tmp_path_factory.mktemp("sshd"))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def ssh_home(sshd_fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME with the fleet's ~/.ssh (config, client key, known_hosts), no ssh-agent."""
    monkeypatch.setenv("HOME", str(sshd_fleet.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return sshd_fleet.home
