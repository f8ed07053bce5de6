"""backends.probe under fuzzing: random bytes and mutated real headers.

Whatever the bytes, with any declared format: only ImageInfo or NeedBytes come back,
never an exception; NeedBytes stay inside the file and small; probe() reads a bounded
amount; each call finishes quickly. Deterministic (derandomize) so CI is stable.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.model import ImageFormat, ImageInfo
from backends.probe import (
    HEAD_SIZE,
    MAX_NEED,
    MAX_READ_TOTAL,
    MAX_READS,
    NeedBytes,
    detect,
    parse_as,
    probe,
)
from tests.test_probe import LUKS2_JSON, luks1_header, luks2_header

FUZZ = settings(max_examples=300, derandomize=True, deadline=timedelta(seconds=1),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DECLARED: list[ImageFormat | str | None] = [None, *ImageFormat, "bogus"]
MAGICS = [(0, b"QFI\xfb\x00\x00\x00\x03"), (0, b"QFI\xfb\x00\x00\x00\x02"), (0, b"KDMV"),
          (0, b"COWD"), (0, b"conectix"), (0, b"vhdxfile"), (0, b"LUKS\xba\xbe\x00\x01"),
          (0, b"LUKS\xba\xbe\x00\x02"), (64, b"\x7f\x10\xda\xbe"), (0, b"version=1\n"),
          (0, b"# Disk DescriptorFile\n"), (32769, b"CD001")]


@dataclass
class SparseFile:
    """The parts of a real image that probe reads, zeros elsewhere."""

    name: str
    size: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    format: ImageFormat = ImageFormat.RAW

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size:
            return b""
        out = bytearray(min(length, self.size - offset))
        for start, data in self.chunks.items():
            low, high = max(start, offset), min(start + len(data), offset + len(out))
            if low < high:
                out[low - offset:high - offset] = data[low - start:high - start]
        return bytes(out)

    def head(self) -> bytes:
        return self.read(0, HEAD_SIZE)


def record(name: str, path: Path) -> SparseFile:
    data = path.read_bytes()
    sample = SparseFile(name, len(data))

    def read(offset: int, length: int) -> bytes:
        sample.chunks[offset] = data[offset:offset + length]
        return sample.chunks[offset]

    sample.format = probe(read, len(data)).format
    return sample


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SparseFile]]:
    d = tmp_path_factory.mktemp("fuzzsrc")

    def qemu_img(*argv: str) -> None:
        subprocess.run(["qemu-img", "create", "-q", *argv], check=True, capture_output=True,
                       cwd=d)

    qemu_img("-f", "vmdk", "base.vmdk", "1G")
    images = {
        "qcow2-v3": ["-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", "-o",
                     "data_file=data.raw"],
        "qcow2-v2": ["-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2", "-o",
                     "compat=0.10"],
        "qcow2-2M": ["-f", "qcow2", "-o", "cluster_size=2M,extended_l2=on,"
                     "compression_type=zstd"],
        "vmdk": ["-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk"],
        "vmdk-stream": ["-f", "vmdk", "-o", "subformat=streamOptimized"],
        "vmdk-flat": ["-f", "vmdk", "-o", "subformat=monolithicFlat"],
        "vdi": ["-f", "vdi"],
        "vpc": ["-f", "vpc"],
        "vpc-fixed": ["-f", "vpc", "-o", "subformat=fixed"],
        "vhdx": ["-f", "vhdx"],
    }
    found: list[SparseFile] = []
    for name, argv in images.items():
        size = [] if name == "vmdk" else ["1M" if name in ("vpc-fixed", "vmdk-flat") else "1G"]
        qemu_img(*argv, name, *size)
        found.append(record(name, d / name))
    for name, data, size in [
        ("luks1", luks1_header(), 4 << 20),
        ("luks2", luks2_header(LUKS2_JSON % '"dynamic"'), 20 << 20),
        ("luks2-1M", luks2_header(LUKS2_JSON % '"4096"', header_size=1 << 20), 20 << 20),
    ]:
        path = d / name
        with open(path, "wb") as f:
            f.write(data)
            f.truncate(size)
        found.append(record(name, path))
    iso = SparseFile("iso", 1 << 20, {32768: b"\x01CD001\x01"}, ImageFormat.ISO)
    found.append(iso)
    assert all(not probe(s.read, s.size).invalid for s in found)
    yield found


def check_answer(answer: ImageInfo | NeedBytes, size: int) -> None:
    if isinstance(answer, NeedBytes):
        assert 0 <= answer.offset < max(size, 1)
        assert 0 < answer.length <= MAX_NEED
        return
    assert isinstance(answer, ImageInfo)
    assert isinstance(answer.format, ImageFormat)
    assert answer.virtual_size >= 0
    for problem in answer.problems:  # shown in a UI and sent as JSON: clean text only
        assert problem and problem.isprintable() and not problem[0].isupper()
        problem.encode("utf-8")
    assert not any("could not be parsed" in p for p in answer.problems), answer.problems
    if answer.invalid or answer.truncated:
        assert answer.problems


def drive(read_file: SparseFile, declared: ImageFormat | str | None) -> ImageInfo:
    """probe() with every read checked against the bounds it promises."""
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        if len(reads) > 1:
            assert 0 <= offset < read_file.size and 0 < length <= MAX_NEED
        return read_file.read(offset, length)

    info = probe(read, read_file.size, declared)
    check_answer(info, read_file.size)
    assert reads[0] == (0, HEAD_SIZE)
    assert len(reads) <= 1 + MAX_READS
    assert sum(length for _, length in reads[1:]) <= MAX_READ_TOTAL
    return info


@FUZZ
@given(head=st.binary(max_size=2048), more=st.integers(0, 1 << 44),
       declared=st.sampled_from(DECLARED))
def test_random_bytes(head: bytes, more: int, declared: ImageFormat | str | None) -> None:
    size = len(head) + more
    check_answer(detect(head, size), size)
    if declared is not None:
        check_answer(parse_as(declared, head, size), size)


@FUZZ
@given(magic=st.sampled_from(MAGICS), body=st.binary(min_size=0, max_size=4096),
       more=st.integers(0, 1 << 40), declared=st.sampled_from(DECLARED))
def test_random_bytes_behind_a_magic(magic: tuple[int, bytes], body: bytes, more: int,
                                     declared: ImageFormat | str | None) -> None:
    at, sig = magic
    head = bytearray(body.ljust(at + len(sig), b"\0"))
    head[at:at + len(sig)] = sig
    sample = SparseFile("random", len(head) + more, {0: bytes(head)})
    drive(sample, declared)
    check_answer(detect(sample.head(), sample.size), sample.size)


# (which chunk, where in it, new byte): positions near a chunk's start are the headers
mutation = st.tuples(st.integers(0, 7),
                     st.one_of(st.integers(0, 600), st.integers(0, 70000)),
                     st.integers(0, 255))


# Mostly detected or declared as what the image is, so parsers get past their magic.
declared_for_sample = st.one_of(st.just("detect"), st.just("own"), st.sampled_from(DECLARED))


@FUZZ
@given(index=st.integers(0, 63), mutations=st.lists(mutation, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 1 << 24)), declared=declared_for_sample)
def test_mutated_real_headers(samples: list[SparseFile], index: int,
                              mutations: list[tuple[int, int, int]], cut: int | None,
                              declared: ImageFormat | str | None) -> None:
    base = samples[index % len(samples)]
    chunks = {offset: bytearray(data) for offset, data in base.chunks.items()}
    keys = sorted(chunks)
    for which, position, value in mutations:
        chunk = chunks[keys[which % len(keys)]]
        if chunk:
            chunk[position % len(chunk)] = value
    size = base.size if cut is None else min(base.size, cut)
    sample = SparseFile(base.name, size, {k: bytes(v) for k, v in chunks.items()})
    drive(sample, {"detect": None, "own": base.format}.get(str(declared), declared))


@FUZZ
@given(index=st.integers(0, 63), mutations=st.lists(mutation, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 1 << 24)))
def test_detect_loop_by_hand_terminates(samples: list[SparseFile], index: int,
                                        mutations: list[tuple[int, int, int]],
                                        cut: int | None) -> None:
    base = samples[index % len(samples)]
    chunks = {offset: bytearray(data) for offset, data in base.chunks.items()}
    keys = sorted(chunks)
    for which, position, value in mutations:
        chunk = chunks[keys[which % len(keys)]]
        if chunk:
            chunk[position % len(chunk)] = value
    size = base.size if cut is None else min(base.size, cut)
    sample = SparseFile(base.name, size, {k: bytes(v) for k, v in chunks.items()})
    head = sample.head()
    size = len(head) if len(head) < HEAD_SIZE else size
    extra: dict[int, bytes] = {}
    answer = detect(head, size, extra)
    for _ in range(MAX_READS):
        check_answer(answer, size)
        if isinstance(answer, ImageInfo):
            break
        data = sample.read(answer.offset, answer.length)
        extra[answer.offset] = data
        if len(data) < answer.length:
            size = answer.offset + len(data)
        answer = detect(head, size, extra)
    assert isinstance(answer, ImageInfo)


u32 = st.one_of(st.integers(0, 64), st.integers(0, (1 << 32) - 1))
u64 = st.one_of(st.integers(0, 1 << 20), st.integers(0, (1 << 64) - 1))
small = st.integers(0, 8)


@FUZZ
@given(version=st.sampled_from([3, 3, 2, 1, 4]), backing=st.tuples(st.integers(0, 600), u32),
       cluster_bits=st.one_of(st.integers(9, 21), st.integers(0, 40)), size=u64,
       crypt=st.sampled_from([0, 0, 1, 2, 3]), l1=st.tuples(u32, small),
       refcount=st.tuples(small, u32), snapshots=st.tuples(u32, small),
       incompatible=st.one_of(st.integers(0, 0x1F), u64), order=st.integers(0, 8),
       header_length=st.one_of(st.sampled_from([104, 112, 120]), u32),
       extensions=st.lists(st.tuples(st.sampled_from([0xE2792ACA, 0x44415441, 0x0537BE77,
                                                      0x6803F857, 0]), st.binary(max_size=40),
                                     st.one_of(st.none(), u32)), max_size=4),
       declared=st.sampled_from([None, "qcow2"]))
def test_structured_qcow2_headers(version: int, backing: tuple[int, int], cluster_bits: int,
                                  size: int, crypt: int, l1: tuple[int, int],
                                  refcount: tuple[int, int], snapshots: tuple[int, int],
                                  incompatible: int, order: int, header_length: int,
                                  extensions: list[tuple[int, bytes, int | None]],
                                  declared: str | None) -> None:
    import struct

    cluster = 1 << min(cluster_bits, 21)
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", version, backing[0], backing[1],
                         cluster_bits, size, crypt, l1[0], l1[1] * cluster,
                         refcount[0] * cluster, refcount[1], snapshots[0],
                         snapshots[1] * cluster, incompatible, 0, 0, order, header_length)
    header += bytes(8)  # compression type and padding
    for magic, payload, length in extensions:
        body = payload.ljust((len(payload) + 7) // 8 * 8, b"\0")
        header += struct.pack(">II", magic, len(payload) if length is None else length) + body
    data = header + b"base.img"
    sample = SparseFile("qcow2", len(data) + (1 << 30), {0: data})
    info = drive(sample, declared)
    assert info.format == ImageFormat.QCOW2
