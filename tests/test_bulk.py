"""The bulk planner and its carrying out, on real images made by qemu-img in tmp pools."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backends.drivers.lvm import LvmDriver
from backends.model import Capacity, ImageFormat, Pool
from backends.transport.local import LocalTransport
from console.bulk import READ_ONLY, BulkPlan, carry_out, check_marked, plan_bulk
from console.cache import Cache
from console.config import Config
from console.inventory import Inventory
from console.jobs.fixing import RunFix
from console.jobs.journal import JobState, Journal
from console.jobs.operations import (
    ArchiveVolume,
    CopyVolume,
    DeleteVolume,
    ResizeVolume,
    SnapshotVolume,
)
from console.jobs.runner import Runner
from console.jobs.transfer import TransferVolume
from console.marks import Mark, Marks
from tests.conftest import PATIENCE, MakeImage, qemu_img
from tests.conftest_ui import real_inventory, runner_for
from tests.harness.libvirtd import Libvirtd
from tests.harness.sshd import Fleet
from tests.test_lvm_driver import lv_sizes, vg  # noqa: F401  # vg: a real VG


@pytest.fixture
def pools(tmp_path: Path, make_image: MakeImage) -> tuple[Path, Path]:
    """``a``: base ← mid ← leaf, a lone disk, a snapshot; ``b``: empty, another pool."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_image(a / "base.qcow2")
    make_image(a / "mid.qcow2", backing="base.qcow2", backing_fmt="qcow2")
    make_image(a / "leaf.qcow2", backing="mid.qcow2", backing_fmt="qcow2")
    make_image(a / "lone.qcow2", size="2M")
    make_image(a / "gold.qcow2")
    os.chmod(a / "gold.qcow2", 0o444)  # a snapshot: read-only on disk
    return a, b


def inventory_of(pools: tuple[Path, Path], tmp_path: Path, *,
                 read_only: bool = False) -> Inventory:
    inventory = real_inventory(*pools, cache_path=tmp_path / "cache.db", read_only=read_only)
    for pool in inventory.pools():
        inventory.refresh_pool(pool)
    return inventory


def marks_of(inventory: Inventory, pool: Path, *names: str) -> list[Mark]:
    marks = Marks()
    name = next(p.name for p in inventory.pools() if p.path == str(pool))
    rows = [inventory.cache.volume("local", name, n) for n in names]
    assert all(rows), names
    marks.add(r for r in rows if r is not None)
    return list(marks)


def refusals(plan: BulkPlan) -> dict[str, str]:
    return {r.volume: r.reason for r in plan.refused}


def test_delete_orders_dependants_first_and_refuses_what_would_lose_them(
        pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    # base has leaf and mid on it; only mid is marked with it: base is refused.
    plan = plan_bulk(inventory, None, "delete",
                     marks_of(inventory, a, "base.qcow2", "mid.qcow2", "lone.qcow2"))
    refused = refusals(plan)
    assert set(refused) == {"base.qcow2", "mid.qcow2"}
    assert "leaf.qcow2" in refused["base.qcow2"] and "not marked" in refused["base.qcow2"]
    assert "leaf.qcow2" in refused["mid.qcow2"]
    assert [j.op.volume for j in plan.jobs] == ["lone.qcow2"]
    assert plan.change == -(a / "lone.qcow2").stat().st_blocks * 512

    # All three of the chain marked: leaf, then mid, then base, in waves.
    plan = plan_bulk(inventory, None, "delete",
                     marks_of(inventory, a, "base.qcow2", "leaf.qcow2", "mid.qcow2"))
    assert not plan.refused
    assert [(j.op.volume, j.wave) for j in plan.jobs] == [
        ("leaf.qcow2", 0), ("mid.qcow2", 1), ("base.qcow2", 2)]
    assert all(isinstance(j.op, DeleteVolume) and not j.op.with_dependants
               for j in plan.jobs)
    assert sorted(plan.jobs[2].after) == [(str(a), "leaf.qcow2"), (str(a), "mid.qcow2")]


def test_carry_out_deletes_wave_by_wave(pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "delete",
                         marks_of(inventory, a, "base.qcow2", "leaf.qcow2", "mid.qcow2",
                                  "lone.qcow2"))
        seen: list[tuple[str, str]] = []
        outcomes = carry_out(runner, plan, lambda o: seen.append(
            (plan.jobs[o.index].op.volume, o.job.state if o.job else "not run")),
            timeout=60)
    finally:
        runner.close()
    assert [o.succeeded for o in outcomes] == [True] * 4
    assert sorted(n for n in os.listdir(a) if not n.startswith(".")) == ["gold.qcow2"]
    done = [name for name, state in seen if state == JobState.DONE]
    assert done.index("leaf.qcow2") < done.index("mid.qcow2") < done.index("base.qcow2")


def test_a_failed_dependant_keeps_what_it_is_based_on(pools: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "delete",
                         marks_of(inventory, a, "base.qcow2", "leaf.qcow2", "mid.qcow2"))
        # Planned, then the disk changes: leaf gets a dependant of its own.
        qemu_img("create", "-q", "-f", "qcow2", "-b", "leaf.qcow2", "-F", "qcow2",
                 str(a / "new.qcow2"))
        outcomes = carry_out(runner, plan, lambda o: None, timeout=60)
    finally:
        runner.close()
    leaf, mid, base = outcomes
    assert leaf.job is not None and leaf.job.state == JobState.FAILED
    assert "new.qcow2" in leaf.reason
    assert mid.job is None and "leaf.qcow2" in mid.reason
    assert base.job is None
    assert {"base.qcow2", "mid.qcow2", "leaf.qcow2", "new.qcow2"} <= set(os.listdir(a))


def test_snapshot_refuses_snapshots_and_bases_and_needs_space(
        pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    plan = plan_bulk(inventory, None, "snapshot",
                     marks_of(inventory, a, "gold.qcow2", "mid.qcow2", "lone.qcow2",
                              "leaf.qcow2"))
    refused = refusals(plan)
    assert "a snapshot already" in refused["gold.qcow2"]
    assert "based on it" in refused["mid.qcow2"] and "leaf.qcow2" in refused["mid.qcow2"]
    assert sorted(j.op.volume for j in plan.jobs) == ["leaf.qcow2", "lone.qcow2"]
    assert all(isinstance(j.op, SnapshotVolume) for j in plan.jobs)
    assert plan.change > 0  # two new overlays' metadata
    assert [(e.pool, e.change > 0) for e in plan.effects] == [(str(a), True)]


def test_copy_to_a_pool_refuses_what_is_there_and_plans_space(
        pools: tuple[Path, Path], tmp_path: Path, make_image: MakeImage) -> None:
    a, b = pools
    make_image(b / "lone.qcow2")  # already in the destination
    inventory = inventory_of(pools, tmp_path)
    plan = plan_bulk(inventory, None, "copy",
                     marks_of(inventory, a, "lone.qcow2", "base.qcow2"),
                     dest=("local", str(b)))
    assert "already in" in refusals(plan)["lone.qcow2"]
    assert [j.op.volume for j in plan.jobs] == ["base.qcow2"]
    op = plan.jobs[0].op
    assert isinstance(op, CopyVolume) and (op.dest_pool, op.dest_name) == (str(b),
                                                                             "base.qcow2")
    assert [(e.pool, e.change > 0) for e in plan.effects] == [(str(b), True)]


def test_no_space_is_refused(pools: tuple[Path, Path], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = inventory_of(pools, tmp_path)
    a, b = pools
    pool = next(p for p in inventory.pools() if p.path == str(b))
    driver = inventory.driver(pool)
    real = driver.pool_capacity

    def tiny(p: Pool) -> Capacity:  # the destination has 16 KiB free
        cap = real(p)
        return Capacity(cap.capacity, cap.capacity - (16 << 10), 16 << 10)

    monkeypatch.setattr(driver, "pool_capacity", tiny)
    plan = plan_bulk(inventory, None, "copy", marks_of(inventory, a, "lone.qcow2"),
                     dest=("local", str(b)))
    assert "no space" in refusals(plan)["lone.qcow2"]
    assert not plan.jobs


def test_read_only_refuses_everything(pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path, read_only=True)
    plan = plan_bulk(inventory, None, "delete",
                     marks_of(inventory, pools[0], "lone.qcow2", "leaf.qcow2"))
    assert not plan.jobs
    assert set(refusals(plan).values()) == {READ_ONLY}


def test_a_vanished_volume_is_refused(pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    marks = marks_of(inventory, pools[0], "lone.qcow2")
    os.unlink(pools[0] / "lone.qcow2")
    plan = plan_bulk(inventory, None, "snapshot", marks)
    assert "no longer on disk" in refusals(plan)["lone.qcow2"]


# -- the other actions ---------------------------------------------------------------


def mark(pool: Path, name: str) -> Mark:
    """A mark as the table makes it (sizes from the cache: the plan re-reads them)."""
    return Mark("local", str(pool), name, 0, 0)


def image_info(path: Path) -> dict[str, Any]:
    done = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                          check=True, capture_output=True, text=True)
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def virtual_size(path: Path) -> int:
    return int(image_info(path)["virtual-size"])


def test_archive_one_per_volume_into_a_directory_counting_its_space(
        pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    into = tmp_path / "archives"
    into.mkdir()
    (into / "mid.qcow2.zst").write_bytes(b"an older archive")
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "archive",
                         [mark(a, n) for n in ("lone.qcow2", "leaf.qcow2", "mid.qcow2")],
                         directory=str(into))
        assert "is there already" in refusals(plan)["mid.qcow2"]
        assert [(o.volume, o.dest) for j in plan.jobs
                if isinstance(o := j.op, ArchiveVolume)] == [
            ("lone.qcow2", str(into / "lone.qcow2.zst")),
            ("leaf.qcow2", str(into / "leaf.qcow2.zst"))]
        # The directory is no pool: its file system's free space is what is counted.
        assert [(e.pool, e.change > 0, e.available is not None) for e in plan.effects] \
            == [(str(into), True, True)]
        assert plan.change == sum(b for j in plan.jobs for _, _, b in j.space)
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
    assert [o.succeeded for o in outcomes] == [True, True], [o.reason for o in outcomes]
    assert {"lone.qcow2.zst", "leaf.qcow2.zst"} <= set(os.listdir(into))


def test_archive_into_a_pool_counts_that_pool_and_refuses_without_room(
        pools: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = inventory_of(pools, tmp_path)
    a, b = pools
    plan = plan_bulk(inventory, None, "archive", [mark(a, "lone.qcow2")], directory=str(b))
    assert [(e.pool, e.change > 0) for e in plan.effects] == [(str(b), True)]
    pool = next(p for p in inventory.pools() if p.path == str(b))
    driver = inventory.driver(pool)
    monkeypatch.setattr(driver, "pool_capacity",
                        lambda p: Capacity(100 << 30, 100 << 30, 0))  # full
    plan = plan_bulk(inventory, None, "archive", [mark(a, "lone.qcow2")], directory=str(b))
    assert not plan.jobs and "no space" in refusals(plan)["lone.qcow2"]


def test_resize_grows_by_or_to_a_size_and_never_shrinks_in_bulk(
        pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    a = pools[0]
    marks = [mark(a, n) for n in ("lone.qcow2", "leaf.qcow2", "gold.qcow2")]
    plan = plan_bulk(inventory, None, "resize", marks, size="+1M")
    assert "snapshot" in refusals(plan)["gold.qcow2"]
    assert [(o.volume, o.capacity) for j in plan.jobs
            if isinstance(o := j.op, ResizeVolume)] == [
        ("lone.qcow2", 3 << 20), ("leaf.qcow2", 2 << 20)]
    assert [(e.pool, e.committed) for e in plan.effects] == [(str(a), 2 << 20)]
    # To 1M: lone (2M) would shrink, leaf is 1M already.
    plan = plan_bulk(inventory, None, "resize", marks[:2], size="1M")
    refused = refusals(plan)
    assert "never done in bulk" in refused["lone.qcow2"]
    assert "already" in refused["leaf.qcow2"]
    assert not plan.jobs
    with pytest.raises(ValueError, match="not a size"):
        plan_bulk(inventory, None, "resize", marks, size="lots")
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "resize", marks[:2], size="4M")
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
    assert all(o.succeeded for o in outcomes), [o.reason for o in outcomes]
    assert virtual_size(a / "lone.qcow2") == virtual_size(a / "leaf.qcow2") == 4 << 20


def test_growfs_takes_raw_volumes_only(pools: tuple[Path, Path], tmp_path: Path) -> None:
    a = pools[0]
    (a / "disk.raw").write_bytes(bytes(1 << 20))
    inventory = inventory_of(pools, tmp_path)
    plan = plan_bulk(inventory, None, "growfs", [mark(a, "disk.raw"), mark(a, "lone.qcow2")])
    assert "raw images only" in refusals(plan)["lone.qcow2"]
    assert [(j.op.kind, j.op.volume) for j in plan.jobs] == [("growfs", "disk.raw")]


def test_delete_with_a_wipe(pools: tuple[Path, Path], tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path)
    plan = plan_bulk(inventory, None, "delete", [mark(pools[0], "lone.qcow2")], wipe="zero")
    assert [o.wipe for j in plan.jobs if isinstance(o := j.op, DeleteVolume)] == ["zero"]
    with pytest.raises(ValueError, match="wipe"):
        plan_bulk(inventory, None, "delete", [], wipe="shred")


def test_check_plans_the_marked_volumes_even_read_only(pools: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    inventory = inventory_of(pools, tmp_path, read_only=True)
    a = pools[0]
    marks = [mark(a, "lone.qcow2"), mark(a, "leaf.qcow2"), mark(a, "gone.qcow2")]
    plan = plan_bulk(inventory, None, "check", marks)
    assert plan.checks == (("local", str(a), "lone.qcow2"), ("local", str(a), "leaf.qcow2"))
    assert "no longer on disk" in refusals(plan)["gone.qcow2"]
    assert not plan.jobs
    report = check_marked(inventory, None, plan.checks)
    assert sorted(c.volume.name for c in report.volumes) == ["leaf.qcow2", "lone.qcow2"]
    assert all(str(c.health.state) == "optimized" for c in report.volumes)


def test_fix_queues_low_risk_fixes_and_holds_the_others_for_review(
        pools: tuple[Path, Path], tmp_path: Path, make_image: MakeImage) -> None:
    a = pools[0]
    make_image(a / "old.qcow2", options="compat=0.10")
    inventory = inventory_of(pools, tmp_path)
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "fix",
                         [mark(a, n) for n in ("old.qcow2", "gold.qcow2", "lone.qcow2")])
        assert [(o.volume, o.code) for j in plan.jobs if isinstance(o := j.op, RunFix)] == [
            ("old.qcow2", "compat-0.10")]
        held = {h.volume: h.reason for h in plan.held}
        assert "medium risk" in held["gold.qcow2"]  # an unreferenced snapshot: rm
        assert "nothing to fix" in held["lone.qcow2"]
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
    assert [o.succeeded for o in outcomes] == [True], [o.reason for o in outcomes]
    info = image_info(a / "old.qcow2")
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert (a / "gold.qcow2").exists()


def test_fix_queues_a_fix_whose_check_code_differs_from_its_job_code(
        pools: tuple[Path, Path], tmp_path: Path) -> None:
    """A raw file of zeroes: the check says mostly-zero, the fix job zeroed-ranges. It was
    held back as "no fix job runs it yet"; it is queued, and punches the holes."""
    a = pools[0]
    (a / "zeros.raw").write_bytes(bytes(4 << 20) + b"\1" * 65536)
    inventory = inventory_of(pools, tmp_path)
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "fix", [mark(a, "zeros.raw")])
        assert [(o.volume, o.code) for j in plan.jobs if isinstance(o := j.op, RunFix)] == [
            ("zeros.raw", "zeroed-ranges")], plan.held
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
    assert [o.succeeded for o in outcomes] == [True], [o.reason for o in outcomes]
    assert os.stat(a / "zeros.raw").st_blocks * 512 < 1 << 20


def test_the_plan_and_the_runner_refuse_the_same_critical_threshold(
        pools: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """90% used, critical 95%: a copy that would take it past 95% is refused by both,
    with the same words (one rule, ``reservations.refusal``)."""
    inventory = inventory_of(pools, tmp_path)
    a, b = pools
    pool = next(p for p in inventory.pools() if p.path == str(b))
    driver = inventory.driver(pool)
    capacity = 4 << 20  # 10% free is room for its ~320K, 5% headroom is not
    monkeypatch.setattr(driver, "pool_capacity", lambda p: Capacity(
        capacity, int(capacity * 0.9), capacity - int(capacity * 0.9)))
    runner = runner_for(inventory)
    try:
        plan = plan_bulk(inventory, runner, "copy", [mark(a, "lone.qcow2")],
                         dest=("local", str(b)))
        why = refusals(plan)["lone.qcow2"]
        assert "above the critical threshold of 95%" in why
        job = runner.wait(runner.submit(CopyVolume("local", str(a), "lone.qcow2",
                                                   dest_pool=str(b),
                                                   dest_name="lone.qcow2")).id, PATIENCE)
    finally:
        runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "above the critical threshold of 95%" in job.error
    assert not (b / "lone.qcow2").exists()


def test_copy_to_a_directory_pool_of_another_host(ssh_home: Path, sshd_fleet: Fleet,
                                                  tmp_path: Path,
                                                  make_image: MakeImage) -> None:
    """Over the real sshd fleet: two volumes of host a go to b's pool as transfers; a
    name b has already is refused; the space is counted in b's pool."""
    dirs = {n: tmp_path / n for n in ("a", "b")}
    for path in dirs.values():
        path.mkdir()
    make_image(dirs["a"] / "one.qcow2")
    make_image(dirs["a"] / "two.qcow2")
    make_image(dirs["a"] / "taken.qcow2")
    make_image(dirs["b"] / "taken.qcow2")
    conf = tmp_path / "config.toml"
    conf.write_text("".join(f"[[host]]\nname = '{n}'\nuri = '{sshd_fleet.uri(n)}'\n"
                            f"[[host.pool]]\nname = 'images'\npath = '{dirs[n]}'\n"
                            for n in ("a", "b")))
    inventory = Inventory(Config.load(conf), Cache(None))
    runner = Runner(Journal(tmp_path / "journal.db"), inventory)
    try:
        marks = [Mark("a", "images", n, 0, 0) for n in ("one.qcow2", "two.qcow2",
                                                        "taken.qcow2")]
        plan = plan_bulk(inventory, runner, "copy", marks, dest=("b", "images"))
        assert "already in 'images'" in refusals(plan)["taken.qcow2"]
        assert [(type(j.op).__name__, j.op.volume) for j in plan.jobs] == [
            ("TransferVolume", "one.qcow2"), ("TransferVolume", "two.qcow2")]
        assert [(e.host, e.pool, e.change > 0) for e in plan.effects] == [
            ("b", "images", True)]
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
    assert [o.succeeded for o in outcomes] == [True, True], [o.reason for o in outcomes]
    assert {"one.qcow2", "two.qcow2", "taken.qcow2"} <= set(os.listdir(dirs["b"]))


def fleet_inventory(sshd_fleet: Fleet, tmp_path: Path) -> tuple[Inventory, dict[str, Path]]:
    """Hosts a and b of the sshd fleet, each with a directory pool ``images``."""
    dirs = {n: tmp_path / n for n in ("a", "b")}
    for path in dirs.values():
        path.mkdir()
    conf = tmp_path / "config.toml"
    conf.write_text("".join(f"[[host]]\nname = '{n}'\nuri = '{sshd_fleet.uri(n)}'\n"
                            f"[[host.pool]]\nname = 'images'\npath = '{dirs[n]}'\n"
                            for n in ("a", "b")))
    return Inventory(Config.load(conf), Cache(None)), dirs


def test_a_chain_copied_to_another_host_counts_its_staging_in_the_source_pool(
        ssh_home: Path, sshd_fleet: Fleet, tmp_path: Path, make_image: MakeImage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain is flattened into a staging file of its own pool before it travels: the
    plan counts that file there (freed after), and refuses, naming the bytes, when the
    source pool has no room, as the runner does at that step."""
    inventory, dirs = fleet_inventory(sshd_fleet, tmp_path)
    make_image(dirs["a"] / "base.qcow2")
    make_image(dirs["a"] / "leaf.qcow2", backing="base.qcow2", backing_fmt="qcow2")
    make_image(dirs["a"] / "lone.qcow2")
    marks = [Mark("a", "images", n, 0, 0) for n in ("leaf.qcow2", "lone.qcow2")]
    plan = plan_bulk(inventory, None, "copy", marks, dest=("b", "images"))
    assert not plan.refused
    leaf, lone = plan.jobs
    assert [(h, p) for h, p, _ in leaf.staging] == [("a", "images")]
    assert leaf.staging[0][2] > 0 and not lone.staging  # lone travels as it is
    effects = {(e.host, e.pool): e for e in plan.effects}
    assert effects[("a", "images")].change == 0  # the staging file is removed after
    assert effects[("a", "images")].staging == leaf.staging[0][2]
    assert effects[("b", "images")].change > 0

    # The source pool is nearly full: the leaf is refused, lone (no staging) is not.
    source = inventory.pool("a", "images")
    driver = inventory.driver(source)
    monkeypatch.setattr(driver, "pool_capacity",
                        lambda p: Capacity(1 << 30, (1 << 30) - (16 << 10), 16 << 10))
    plan = plan_bulk(inventory, None, "copy", marks, dest=("b", "images"))
    why = refusals(plan)["leaf.qcow2"]
    assert why.startswith("no space for its staging copy")
    needs = why.split(": ", 1)[1].split(",")[0]  # "needs 1.1 MiB"
    assert needs.startswith("needs ")
    assert [j.op.volume for j in plan.jobs] == ["lone.qcow2"]
    # The runner refuses the same bytes at that step: one rule.
    runner = Runner(Journal(tmp_path / "journal.db"), inventory)
    try:
        job = runner.wait(runner.submit(TransferVolume(
            "a", "images", "leaf.qcow2", dest_host="b", dest_pool="images",
            dest_name="leaf.qcow2")).id, PATIENCE)
    finally:
        runner.close()
    assert job.state == JobState.FAILED
    assert job.error and "staging copy" in job.error and needs + "," in job.error
    assert sorted(n for n in os.listdir(dirs["b"]) if not n.startswith(".")) == []


def test_a_copy_to_another_host_refuses_a_pool_that_is_no_directory(
        libvirtd: Libvirtd, tmp_path: Path, make_image: MakeImage) -> None:
    """A libvirt pool of another host (a real libvirtd) is no target of a transfer:
    the plan says why, for each volume, and queues nothing."""
    name = f"sctest-{secrets.token_hex(3)}"
    target = tmp_path / "virt-pool"
    target.mkdir()
    libvirtd.virsh("pool-define-as", name, "dir", "--target", str(target))
    libvirtd.virsh("pool-start", name)
    try:
        local = tmp_path / "local"
        local.mkdir()
        make_image(local / "one.qcow2")
        make_image(local / "two.qcow2")
        conf = tmp_path / "config.toml"
        conf.write_text(f"[[host]]\nname = 'local'\nuri = 'local'\n[[host.pool]]\n"
                        f"name = 'images'\npath = '{local}'\n"
                        f"[[host]]\nname = 'virt'\nuri = '{libvirtd.uri}'\n")
        inventory = Inventory(Config.load(conf), Cache(None))
        inventory.refresh()
        assert inventory.pool("virt", name).kind == "libvirt"
        plan = plan_bulk(inventory, None, "copy",
                         [Mark("local", "images", n, 0, 0) for n in ("one.qcow2",
                                                                      "two.qcow2")],
                         dest=("virt", name))
        inventory.close()
    finally:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)
    assert not plan.jobs and not plan.effects
    assert refusals(plan) == dict.fromkeys(
        ("one.qcow2", "two.qcow2"), f"a copy to another host works between directory "
        f"pools: {name!r} of 'virt' is a libvirt pool")
    assert os.listdir(target) == []


def test_resize_counts_what_growing_takes_per_pool_kind(
        vg: Pool,  # noqa: F811  # the fixture imported above
        tmp_path: Path, make_image: MakeImage) -> None:
    """A thick LV's growth is taken from its VG now: the plan counts it as space and
    the runner reserves it; a sparse file's growth is virtual only. Past the VG's
    critical threshold both refuse it, and the LV keeps its size."""
    files = tmp_path / "files"
    files.mkdir()
    make_image(files / "disk.qcow2", size="8M")
    (files / "full.raw").write_bytes(b"\1" * (4 << 20))  # every byte allocated
    lvm_driver = LvmDriver(LocalTransport())
    lvm_driver.create_volume(vg, "lv0", ImageFormat.RAW, 8 << 20)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[[host]]\nname = 'local'\nuri = 'local'\n[[host.pool]]\n"
                    f"name = 'files'\npath = '{files}'\n[[host.pool]]\nname = '{vg.name}'"
                    f"\ntype = 'lvm'\n")
    inventory = Inventory(Config.load(conf), Cache(None))
    for pool in inventory.pools():
        inventory.refresh_pool(pool)
    marks = [Mark("local", "files", "disk.qcow2", 0, 0),
             Mark("local", "files", "full.raw", 0, 0), Mark("local", vg.name, "lv0", 0, 0)]
    plan = plan_bulk(inventory, None, "resize", marks, size="+16M")
    assert not plan.refused, plan.refused
    effects = {e.pool: e for e in plan.effects}
    assert (effects[vg.name].change, effects[vg.name].committed) == (16 << 20, 0)
    # A preallocated raw file stays preallocated: its growth is taken now; a qcow2
    # takes nothing here (its L1 table already maps 24M).
    assert effects["files"].change == 16 << 20
    assert effects["files"].committed == 16 << 20  # the qcow2 alone: allocated as written
    assert [j.space[0][2] for j in plan.jobs if j.op.volume == "full.raw"] == [16 << 20]

    # 15 extents of 4 MiB: 8 MiB → 60 MiB would fill the VG, past its 95%.
    plan = plan_bulk(inventory, None, "resize", marks[2:], size="60M")
    why = refusals(plan)["lv0"]
    assert "above the critical threshold of 95%" in why
    runner = Runner(Journal(tmp_path / "journal.db"), inventory)
    try:
        job = runner.wait(runner.submit(ResizeVolume("local", vg.name, "lv0",
                                                     capacity=60 << 20)).id, PATIENCE)
        assert job.state == JobState.FAILED
        assert job.error and "above the critical threshold of 95%" in job.error
        assert lv_sizes(vg.name)["lv0"] == 8 << 20
        # What fits is grown by both.
        plan = plan_bulk(inventory, runner, "resize", marks[2:], size="+40M")
        outcomes = carry_out(runner, plan, lambda o: None, timeout=PATIENCE)
    finally:
        runner.close()
        inventory.close()
    assert [o.succeeded for o in outcomes] == [True], [o.reason for o in outcomes]
    assert lv_sizes(vg.name)["lv0"] == 48 << 20
