"""Volumes -> Health: ``optimized`` / ``degraded`` / ``broken``, always with reasons.

Assessment is a pure function of what discovery found on disk (header facts and the
safely followed chain); it never opens anything itself.
"""

from __future__ import annotations

import os

from backends.model import Health, HealthState, ImageFormat, LinkProblem, Volume

_LINK_BROKEN = {
    LinkProblem.MISSING: "backing file {path} is missing",
    LinkProblem.LOOP: "backing chain loops back to {path}",
    LinkProblem.ESCAPE: "backing file {path} lies outside the allowed roots: not followed",
    LinkProblem.NOT_REGULAR: "backing {path} is not a regular file: not opened",
    LinkProblem.UNREADABLE: "backing file {path} cannot be read ({detail})",
    LinkProblem.TOO_DEEP: "backing chain is longer than the hard limit ({detail})",
}


def assess(volume: Volume, max_chain_depth: int) -> Health:
    broken: list[str] = []
    degraded: list[str] = []
    info = volume.info
    if volume.error:
        broken.append(volume.error)
    if info.truncated or info.invalid:
        broken.extend(info.problems or ("the image header is unreadable",))
    if info.corrupt:
        broken.append("qcow2 corrupt bit is set: QEMU refuses to write to it")
    if info.unknown_incompatible:
        broken.append(f"unknown qcow2 incompatible feature bits "
                      f"{info.unknown_incompatible:#x}: QEMU cannot open it")
    if info.data_file:
        broken.append(f"external data file {info.data_file!r}: referenced, never opened")
    chain = volume.chain
    if chain.problem is not None:
        path = chain.problem_path or "?"
        if chain.problem == LinkProblem.UNDECLARED_FORMAT:
            degraded.append(f"backing file {path} has no declared format: not followed "
                            "(declare it with qemu-img rebase -u -F FORMAT)")
        else:
            broken.append(_LINK_BROKEN[chain.problem].format(path=path,
                                                              detail=chain.problem_detail))
    for link in chain.links[1:]:
        if link.capacity > volume.capacity and volume.capacity:
            degraded.append(f"backing {os.path.basename(link.path)} is larger than the "
                            "volume")
            break
    if info.dirty:
        degraded.append("qcow2 dirty bit is set: refcounts need a check")
    if chain.depth > max_chain_depth:
        degraded.append(f"chain of {chain.depth} images is deeper than {max_chain_depth}")
    if volume.format == ImageFormat.QCOW2 and info.version == 2 and not broken:
        degraded.append("qcow2 compat 0.10 (v2): no zero clusters or lazy refcounts")
    if volume.format == ImageFormat.QCOW2 and info.encrypted:
        degraded.append("legacy qcow2 AES encryption: weak, read-only in recent QEMU")
    # Problems the probe noted that are not fatal (e.g. odd but usable headers).
    if not (info.truncated or info.invalid):
        noted = set(broken) | set(degraded)
        degraded.extend(p for p in info.problems if p not in noted
                        and not _covered(p, info.corrupt, info.dirty))
    if broken:
        return Health(HealthState.BROKEN, tuple(broken + degraded))
    if degraded:
        return Health(HealthState.DEGRADED, tuple(degraded))
    depth = f"chain of {chain.depth}" if chain.depth > 1 else "no backing"
    return Health(HealthState.OPTIMIZED, (f"header clean, {depth}",))


def _covered(problem: str, corrupt: bool, dirty: bool) -> bool:
    """Whether a probe problem restates a flag already reported above."""
    text = problem.lower()
    return ((corrupt and "corrupt" in text) or (dirty and "dirty" in text)
            or "incompatible" in text or "data file" in text or "data-file" in text)
