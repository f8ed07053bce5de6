"""The chain forest, plain Python: shape, problems, cycles of stale rows, filter, depth."""

from __future__ import annotations

from dataclasses import replace

from console.cache import LinkRow, VolumeRow
from console.chains import (
    LOOP,
    MAX_GUIDES,
    ChainEntry,
    build_dependants,
    build_forest,
    flatten,
)


def row(name: str, *chain: str, host: str = "h", pool: str = "p", readonly: bool = False,
        problem: str | None = None, problem_path: str | None = None) -> VolumeRow:
    links = tuple(LinkRow(f"/p/{c}", "qcow2", 1) for c in chain)
    return VolumeRow(host=host, pool=pool, name=name, path=f"/p/{name}", format="qcow2",
                     capacity=1, allocation=1, backing=links[0].path if links else None,
                     backing_format="qcow2" if links else None, chain_depth=len(links) + 1,
                     health="optimized", reasons=(), readonly=readonly, chain=links,
                     chain_problem=problem, chain_problem_path=problem_path, mtime=0,
                     last_seen=0)


def names(lines: list) -> list[tuple[int, str]]:  # type: ignore[type-arg]
    return [(line.depth, line.node.entry.name) for line in lines]


def test_bases_are_roots_and_hosts_do_not_mix() -> None:
    roots = build_forest([row("top", "mid", "base"), row("mid", "base"),
                          row("base", readonly=True), row("snap", readonly=True),
                          row("base", host="other")])
    assert names(flatten(roots)) == [(0, "base"), (1, "mid"), (2, "top"), (0, "snap"),
                                     (0, "base")]
    assert [r.entry.host for r in roots] == ["h", "h", "other"]
    assert roots[1].unreferenced and not roots[0].unreferenced
    assert [line.guides for line in flatten(roots)][:3] == ["", "└─ ", "   └─ "]


def test_the_problem_sits_where_the_chain_stops() -> None:
    roots = build_forest([row("leaf", "gone-mid", problem="missing",
                              problem_path="/p/gone-base")])
    (mid,) = roots
    assert mid.entry.name == "gone-mid" and mid.entry.pool is None
    assert mid.entry.problem == "backing is missing: /p/gone-base"
    assert mid.children[0].entry.problem is None


def test_stale_rows_that_loop_are_cut_once_and_marked() -> None:
    roots = build_forest([row("a", "b"), row("b", "a")])
    assert names(flatten(roots)) == [(0, "a"), (1, "b")]
    assert roots[0].entry.problem == LOOP


def test_filter_keeps_ancestors_and_descendants_only() -> None:
    roots = build_forest([row("top", "mid", "base"), row("mid", "base"), row("base"),
                          row("other", "base"), row("alone")])
    assert names(flatten(roots, "MID")) == [(0, "base"), (1, "mid"), (2, "top")]
    assert [line.match for line in flatten(roots, "mid")] == [False, True, False]
    assert flatten(roots, "nothing") == []


def test_a_very_deep_chain_draws_a_bounded_prefix() -> None:
    depth = 5000
    rows = [row(f"v{i}", *([f"v{i - 1}"] if i else [])) for i in range(depth)]
    lines = flatten(build_forest(rows))
    assert len(lines) == depth and lines[-1].depth == depth - 1
    assert lines[-1].guides.startswith("… ")
    assert len(lines[-1].guides) <= 2 + 3 * (MAX_GUIDES + 1)
    assert names(flatten(build_forest(rows), "v4999")) == names(lines)  # all ancestors


def test_dependants_nest_by_their_backing_with_distance() -> None:
    base = ChainEntry.of_row(row("base"))
    child = replace(ChainEntry.of_row(row("child", "base")), pool="q")
    grandchild = ChainEntry.of_row(row("grandchild", "child", "base"))
    roots = build_dependants(base, [(2, grandchild, "/p/child"), (1, child, "/p/base")])
    assert [(line.depth, line.node.distance, line.node.entry.name)
            for line in flatten(roots)] == [(0, 0, "base"), (1, 1, "child"),
                                            (2, 2, "grandchild")]
