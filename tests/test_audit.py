"""Every command run on a host is in the audit log: who, where, argv, status, time."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.audit import AuditLog
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import Journal
from console.jobs.operations import CreateVolume, ResizeVolume
from console.jobs.runner import Runner


def test_commands_of_jobs_are_audited(tmp_path: Path, pool_dir: Path) -> None:
    audit = AuditLog(tmp_path / "journal.db")
    inv = Inventory(Config.for_targets([str(pool_dir)]), Cache(None), audit=audit)
    runner = Runner(Journal(tmp_path / "journal.db"), inv)
    pool = str(pool_dir.resolve())
    runner.wait(runner.submit(CreateVolume("local", pool, "a", format="qcow2",
                                           capacity=1 << 20)).id, 30)
    runner.wait(runner.submit(ResizeVolume("local", pool, "a", capacity=2 << 20)).id, 30)
    runner.close()
    entries = audit.entries()
    programs = [e.argv[:2] for e in entries]
    assert ("qemu-img", "create") in programs and ("qemu-img", "resize") in programs
    create = next(e for e in entries if e.argv[:2] == ("qemu-img", "create"))
    assert create.host == "local" and create.returncode == 0 and create.duration >= 0
    assert "@" in create.who and create.argv[-1] == str(1 << 20)
    assert entries[0].id > entries[-1].id  # newest first


def test_a_command_that_cannot_start_is_audited(tmp_path: Path) -> None:
    from backends.contract import CommandFailed
    from backends.transport.local import LocalTransport

    audit = AuditLog(tmp_path / "a.db")
    transport = LocalTransport()
    transport.observer = audit.record
    with pytest.raises(CommandFailed, match="cannot run"):
        transport.run(["/nonexistent/tool", "x"])
    (entry,) = audit.entries()
    assert entry.argv == ("/nonexistent/tool", "x") and entry.returncode == -1
