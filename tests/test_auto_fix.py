"""Auto-fix: a job that is done has what it wrote checked, and the low-risk fix its
result needs queued as a job of its own, started by it, once. Real images, real faults:
a compat-0.10 qcow2 and a qcow2 with a leaked cluster keep them through a resize, a raw
volume of zeroes stays one, and a snapshot makes a chain deeper than the limit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.audit import AuditLog
from console.cache import Cache
from console.checks import CheckReport, check_pools
from console.config import Config
from console.inventory import Inventory
from console.jobs.journal import JobRecord, JobState, Journal
from console.jobs.operations import (
    CopyVolume,
    CreateVolume,
    Operation,
    ResizeVolume,
    SnapshotVolume,
)
from console.jobs.runner import Runner
from tests.conftest import MakeImage
from tests.test_checks import _leak, _written

MiB = 1 << 20


class Engine:
    """A runner over one pool, with the audit log beside its journal."""

    def __init__(self, tmp_path: Path, pool: Path, *, auto_fix: bool | None = None,
                 config: Config | None = None) -> None:
        self.pool_dir, self.pool = pool, str(pool.resolve())
        self.audit = AuditLog(tmp_path / "journal.db")
        self.inventory = Inventory(config or Config.for_targets([self.pool]), Cache(None),
                                   audit=self.audit)
        self.runner = Runner(Journal(tmp_path / "journal.db"), self.inventory,
                             auto_fix=auto_fix)

    def ok(self, op: Operation) -> JobRecord:
        job = self.runner.wait(self.runner.submit(op).id, 60)
        assert (job.state, job.error) == (JobState.DONE, None)
        return job

    def fix_jobs(self) -> list[JobRecord]:
        return [j for j in self.runner.journal.jobs() if j.kind == "fix"]

    def queued(self, job: JobRecord) -> list[JobRecord]:
        """The fix jobs ``job`` queued, each waited for."""
        record = self.runner.journal.get(job.id).resume["auto_fix"]
        return [self.runner.wait(q["job"], 60) for q in record["queued"]]

    def check(self, name: str) -> CheckReport:
        pool = self.inventory.pool("local", self.pool)
        return check_pools(self.inventory, [pool], only=lambda v: v.name == name)


@pytest.fixture
def engine(tmp_path: Path, pool_dir: Path) -> Iterator[Engine]:
    e = Engine(tmp_path, pool_dir)
    yield e
    e.runner.close()


def optimized(report: CheckReport, name: str) -> bool:
    (volume,) = [v for v in report.volumes if v.volume.name == name]
    return str(volume.health.state) == "optimized" and not [
        f for f in report.findings if f.volume == name]


def test_a_resize_of_a_compat_0_10_image_queues_the_amend_once(
        engine: Engine, make_image: MakeImage) -> None:
    make_image(engine.pool_dir / "old.qcow2", options="compat=0.10")
    resize = engine.ok(ResizeVolume("local", engine.pool, "old.qcow2", capacity=2 * MiB))
    (fix,) = engine.queued(resize)
    assert (fix.kind, fix.params["code"], fix.volume) == ("fix", "compat-0.10", "old.qcow2")
    assert (fix.state, fix.error) == (JobState.DONE, None)
    assert fix.who.endswith(f"started by job {resize.id}")
    assert fix.resume["started_by"] == resize.id
    assert fix.resume["after"]["version"] == 3
    assert optimized(engine.check("old.qcow2"), "old.qcow2")
    # The fix job queued nothing of its own, and the audit names who started it.
    assert engine.fix_jobs() == [engine.runner.journal.get(fix.id)]
    assert "auto_fix" not in engine.runner.journal.get(fix.id).resume
    amend = [e for e in engine.audit.entries() if "amend" in e.argv]
    assert amend and all(e.who.endswith(f"started by job {resize.id}") for e in amend)
    record = engine.runner.journal.get(resize.id).resume["auto_fix"]
    assert record["checked"] == ["old.qcow2"] and not record["errors"]


def test_leaked_clusters_left_by_a_resize_are_repaired(engine: Engine,
                                                      make_image: MakeImage) -> None:
    leaky = _written(engine.pool_dir / "leaky.qcow2", make_image)
    _leak(leaky)
    resize = engine.ok(ResizeVolume("local", engine.pool, "leaky.qcow2", capacity=2 * MiB))
    (fix,) = engine.queued(resize)
    assert fix.params["code"] == "leaked-clusters" and fix.state == JobState.DONE
    assert subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", str(leaky)]
                          ).returncode == 0
    assert optimized(engine.check("leaky.qcow2"), "leaky.qcow2")


def test_zeroes_a_job_did_not_ask_for_are_punched_out_and_preallocation_is_kept(
        engine: Engine) -> None:
    zeros = engine.pool_dir / "zeros.raw"
    with open(zeros, "wb") as f:
        f.write(b"\0" * (4 * MiB) + b"data" * 1024)
    before = zeros.read_bytes()
    resize = engine.ok(ResizeVolume("local", engine.pool, "zeros.raw", capacity=8 * MiB))
    (fix,) = engine.queued(resize)
    assert fix.params["code"] == "zeroed-ranges" and fix.state == JobState.DONE
    assert zeros.read_bytes()[:len(before)] == before
    assert zeros.stat().st_blocks * 512 < MiB
    # Zeroes written on request (preallocation full) are what the job was for.
    create = engine.ok(CreateVolume("local", engine.pool, "full.raw", format="raw",
                                    capacity=4 * MiB, preallocation="full"))
    record = engine.runner.journal.get(create.id).resume["auto_fix"]
    assert record["queued"] == []
    assert [(x["code"], x["why"]) for x in record["left"]] == [
        ("mostly-zero", "the job asked for it")]
    assert (engine.pool_dir / "full.raw").stat().st_blocks * 512 >= 4 * MiB


def test_a_deep_chain_is_left_to_a_person_flattening_is_medium_risk(
        engine: Engine, make_image: MakeImage) -> None:
    engine.inventory.max_chain_depth = 2
    engine.inventory.config = dataclasses.replace(engine.inventory.config,
                                                  max_chain_depth=2)
    make_image(engine.pool_dir / "base.qcow2")
    make_image(engine.pool_dir / "disk.qcow2", backing="base.qcow2", backing_fmt="qcow2")
    snap = engine.ok(SnapshotVolume("local", engine.pool, "disk.qcow2", name="s1"))
    record = engine.runner.journal.get(snap.id).resume["auto_fix"]
    assert record["queued"] == [] and engine.fix_jobs() == []
    (left,) = record["left"]
    assert (left["code"], left["risk"]) == ("chain-too-deep", "medium")
    assert "medium risk" in left["why"]


def test_auto_fix_off_queues_nothing(tmp_path: Path, pool_dir: Path,
                                     make_image: MakeImage) -> None:
    make_image(pool_dir / "old.qcow2", options="compat=0.10")
    config = dataclasses.replace(Config.for_targets([str(pool_dir.resolve())]),
                                 auto_fix=False)
    for e in (Engine(tmp_path / "a", pool_dir, auto_fix=False),
              Engine(tmp_path / "b", pool_dir, config=config)):
        try:
            copy = e.ok(CopyVolume("local", e.pool, "old.qcow2", dest_name="x.qcow2"))
            resize = e.ok(ResizeVolume("local", e.pool, "old.qcow2", capacity=2 * MiB))
            assert e.fix_jobs() == []
            for job in (copy, resize):
                assert "auto_fix" not in e.runner.journal.get(job.id).resume
        finally:
            e.runner.close()
        (pool_dir / "x.qcow2").unlink()
    assert subprocess.run(["qemu-img", "info", "-f", "qcow2", str(pool_dir / "old.qcow2")],
                          capture_output=True, text=True).stdout.count("compat: 0.10") == 1


def test_config_auto_fix(tmp_path: Path) -> None:
    assert Config.from_dict({}).auto_fix is True
    assert Config.from_dict({"jobs": {"auto_fix": False}}).auto_fix is False
    from console.config import ConfigError
    with pytest.raises(ConfigError, match="auto_fix must be true or false"):
        Config.from_dict({"jobs": {"auto_fix": "no"}})


def cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(config)] if config else []
    return subprocess.run([sys.executable, "-m", "console.cli", *args, *extra],
                          capture_output=True, text=True, check=False, timeout=120)


def compat(path: Path) -> str:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return str(json.loads(out)["format-specific"]["data"]["compat"])


def test_the_job_commands_auto_fix_unless_told_not_to(tmp_path: Path, pool_dir: Path,
                                                      make_image: MakeImage) -> None:
    old = make_image(pool_dir / "old.qcow2", options="compat=0.10")
    skipped = cli("resize", str(old), "+1M", "--no-auto-fix")
    assert skipped.returncode == 0, skipped.stderr
    assert compat(old) == "0.10" and "auto-fix" not in skipped.stdout + skipped.stderr
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs]\nauto_fix = false\n[[host]]\nname = "local"\n'
                      f'[[host.pool]]\nname = "p"\ntype = "dir"\npath = "{pool_dir}"\n')
    off = cli("resize", "local:p/old.qcow2", "+1M", config=config)
    assert off.returncode == 0, off.stderr
    assert compat(old) == "0.10"
    done = cli("resize", str(old), "+1M")
    assert done.returncode == 0, done.stderr
    assert compat(old) == "1.1"
    assert "started by job" in done.stdout + done.stderr
    record = json.loads(cli("jobs", "--json").stdout)
    fixes = [j for j in record if j["kind"] == "fix"]
    assert len(fixes) == 1 and fixes[0]["state"] == "done"
    # check says what the last fix attempted on it did: host, stage, percent, error.
    shown = cli("check", str(old))
    assert shown.returncode == 0, shown.stderr
    (line,) = [x for x in shown.stdout.splitlines() if x.startswith("old.qcow2 ")]
    assert f"job {fixes[0]['id']}" in line and "compat-0.10" in line
    assert "done" in line and "local" in line and "3/3 re-check" in line and "100%" in line
    last = json.loads(cli("check", str(old), "--json").stdout)["volumes"][0]["last_fix"]
    assert (last["job"], last["state"]) == (fixes[0]["id"], "done")


def test_check_shows_the_last_error_of_a_failed_fix(tmp_path: Path, pool_dir: Path,
                                                    make_image: MakeImage) -> None:
    from console.config import journal_path
    from console.jobs.fixing import RunFix

    make_image(pool_dir / "disk.raw", fmt="raw")
    inventory = Inventory(Config.for_targets([str(pool_dir.resolve())]), Cache(None))
    runner = Runner(Journal(journal_path()), inventory)
    try:
        pool = str(pool_dir.resolve())
        job = runner.wait(runner.submit(RunFix(
            "local", pool, "disk.raw", fix_type="optimize", code="compat-0.10",
            fix_params={"name": "disk.raw", "format": "qcow2"})).id, 60)
    finally:
        runner.close()
    assert job.state == JobState.FAILED and "it is raw on disk now" in str(job.error)
    shown = cli("check", str(pool_dir))
    (line,) = [x for x in shown.stdout.splitlines() if x.startswith("disk.raw ")]
    assert f"job {job.id}" in line and "failed" in line and "1/3 check" in line
    assert "it is raw on disk now" in line


def test_which_fixes_run_without_asking() -> None:
    from console.fixes import Fix, FixType, Risk, Severity
    from console.jobs.autofix import not_automatic

    def fix(code: str, risk: Risk, **params: object) -> Fix:
        return Fix(FixType.MEND, "local", "p", "v", code, "why", 0, risk, (),
                   {"volume": "v", **params}, needs_confirmation=risk == Risk.HIGH)

    assert not_automatic(fix("compat-0.10", Risk.LOW), Severity.DEGRADED) is None
    assert not_automatic(fix("leftover-temporary", Risk.NONE), Severity.DEGRADED) is None
    assert not_automatic(fix("backing-missing", Risk.LOW), Severity.BROKEN) is None
    assert "high risk" in str(not_automatic(fix("corruptions", Risk.HIGH), Severity.BROKEN))
    assert "medium risk" in str(not_automatic(fix("chain-too-deep", Risk.MEDIUM),
                                              Severity.DEGRADED))
    assert not_automatic(fix("unreferenced-snapshot", Risk.LOW, requires_mark=True),
                         Severity.DEGRADED) == "needs a mark"
    assert not_automatic(fix("compat-0.10", Risk.LOW), Severity.INFO) == "information only"
    assert not_automatic(fix("some-new-code", Risk.LOW), Severity.DEGRADED) == \
        "no fix job runs it yet"
