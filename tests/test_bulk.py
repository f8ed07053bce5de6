"""The bulk planner and its carrying out, on real images made by qemu-img in tmp pools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.model import Capacity, Pool
from console.bulk import READ_ONLY, BulkPlan, carry_out, plan_bulk
from console.inventory import Inventory
from console.jobs.journal import JobState
from console.jobs.operations import CopyVolume, DeleteVolume, SnapshotVolume
from console.marks import Mark, Marks
from tests.conftest import MakeImage, qemu_img
from tests.conftest_ui import real_inventory, runner_for


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
