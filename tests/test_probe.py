"""backends.probe against real images: every field compared with ``qemu-img info``.

Images are made by qemu-img in tmp_path; headers are then edited byte by byte to build
the dirty, corrupt, unknown-feature and truncated cases, and where probe calls a header
invalid, qemu must refuse to open it too.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from backends.model import ImageFormat, ImageInfo
from backends.probe import HEAD_SIZE, MAX_NEED, NeedBytes, detect, parse_as, probe

F = ImageFormat


# ---------------------------------------------------------------------------------------
# helpers


def qemu_img(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, cwd=cwd)


def create(path: Path, fmt: str, size: str, *options: str) -> Path:
    argv: list[str | Path] = ["create", "-q", "-f", fmt]
    for option in options:
        argv += ["-o", option]
    qemu_img(*argv, path.name, size, cwd=path.parent)
    return path


def qemu_info(path: Path, fmt: str) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, path.name],
                         check=True, capture_output=True, text=True, cwd=path.parent).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def qemu_refuses(path: Path, fmt: str) -> str:
    """qemu-img info's error for an image it will not open ('' when it opens it)."""
    run = subprocess.run(["qemu-img", "info", "-f", fmt, str(path)], capture_output=True,
                         text=True)
    return run.stderr.strip() if run.returncode else ""


class RecordingReader:
    """A ``read`` over a file that remembers every (offset, length) asked."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes() if path.stat().st_size < (64 << 20) else None
        self.path = path
        self.reads: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        if self.data is not None:
            return self.data[offset:offset + length]
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), length, offset)


def probe_file(path: Path, declared: ImageFormat | str | None = None
               ) -> tuple[ImageInfo, list[tuple[int, int]]]:
    reader = RecordingReader(path)
    info = probe(reader, path.stat().st_size, declared)
    assert len(reader.reads) <= 9
    assert all(length <= MAX_NEED for _, length in reader.reads)
    return info, reader.reads


def pad(head: bytes) -> bytes:
    """A head as callers pass it: HEAD_SIZE bytes when the file is that long."""
    return head.ljust(HEAD_SIZE, b"\0")


def edit(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def cut(src: Path, dst: Path, length: int) -> Path:
    with open(src, "rb") as f:
        dst.write_bytes(f.read(length))
    return dst


def assert_like_qemu(info: ImageInfo, q: dict[str, Any]) -> None:
    """The fields every format shares with ``qemu-img info``."""
    assert info.format == q["format"]
    assert info.virtual_size == q["virtual-size"]
    assert info.backing_file == q.get("backing-filename")
    assert info.backing_format == q.get("backing-filename-format")
    assert info.dirty == q["dirty-flag"]
    assert info.encrypted == q.get("encrypted", False)
    assert not info.invalid and not info.truncated


def assert_qcow2_like_qemu(info: ImageInfo, q: dict[str, Any]) -> None:
    assert_like_qemu(info, q)
    spec = q["format-specific"]["data"]
    assert info.version == {"0.10": 2, "1.1": 3}[spec["compat"]]
    assert info.cluster_size == q["cluster-size"]
    assert info.data_file == spec.get("data-file")
    assert info.corrupt == spec.get("corrupt", False)
    assert info.extended_l2 == spec.get("extended-l2", False)
    assert (info.compression or "zlib") == spec.get("compression-type", "zlib")


# ---------------------------------------------------------------------------------------
# qcow2

QCOW2_CASES = [
    ("1M", ()),
    ("1000001", ()),
    ("0", ()),
    ("16T", ()),
    ("1G", ("compat=0.10",)),
    ("1G", ("compat=0.10", "cluster_size=512")),
    ("10M", ("cluster_size=512",)),
    ("10G", ("cluster_size=2M",)),
    ("1G", ("compat=0.10", "cluster_size=2M")),
    ("1M", ("lazy_refcounts=on",)),
    ("1M", ("compression_type=zstd",)),
    ("1G", ("extended_l2=on",)),
    ("1G", ("extended_l2=on", "cluster_size=2M")),
    ("4M", ("preallocation=metadata",)),
    ("1M", ("refcount_bits=1",)),
    ("1M", ("refcount_bits=64",)),
]


@pytest.mark.parametrize(("size", "options"), QCOW2_CASES)
def test_qcow2_matches_qemu(tmp_path: Path, size: str, options: tuple[str, ...]) -> None:
    path = create(tmp_path / "a.qcow2", "qcow2", size, *options)
    q = qemu_info(path, "qcow2")
    info, reads = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert info.problems == ()
    assert reads == [(0, HEAD_SIZE)]
    assert probe_file(path, "qcow2")[0] == info
    assert probe_file(path, F.QCOW2)[0] == info


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
@pytest.mark.parametrize(("backing_name", "backing_fmt"), [
    ("base.raw", "raw"),
    ("base.qcow2", "qcow2"),
    ("sub dir/../a name with spaces.raw", "raw"),
    ("x" * 300 + ".raw", "raw"),
    ("/abs/path/to/base.vmdk", "vmdk"),
])
def test_qcow2_backing_file_and_format(tmp_path: Path, compat: str, backing_name: str,
                                       backing_fmt: str) -> None:
    path = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-o", f"compat={compat}",
             "-b", backing_name, "-F", backing_fmt, path.name, "1G", cwd=tmp_path)
    q = qemu_info(path, "qcow2")
    info, _ = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert info.backing_file == backing_name
    assert info.backing_format == backing_fmt


def test_qcow2_backing_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = b"base-\xff\xfe.raw"
    path = tmp_path / "top.qcow2"
    subprocess.run([b"qemu-img", b"create", b"-q", b"-f", b"qcow2", b"-u", b"-b", name,
                    b"-F", b"raw", b"top.qcow2", b"1M"], check=True, cwd=tmp_path)
    info, _ = probe_file(path)
    assert info.backing_file is not None
    assert os.fsencode(info.backing_file) == name
    assert info.backing_format == "raw"


def test_qcow2_backing_without_backing_format(tmp_path: Path) -> None:
    path = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", path.name,
             "1M", cwd=tmp_path)
    data = bytearray(path.read_bytes()[:HEAD_SIZE])
    at = data.find(bytes.fromhex("e2792aca"))
    edit(path, at, bytes.fromhex("6f6f6f6f"))  # an unknown extension now
    info, _ = probe_file(path)
    assert info.backing_file == "base.raw"
    assert info.backing_format is None
    assert info.problems == ()


@pytest.mark.parametrize("options", [
    ("data_file=data.raw",),
    ("data_file=data.raw", "data_file_raw=on"),
    ("data_file=data.raw", "extended_l2=on", "cluster_size=2M"),
])
def test_qcow2_external_data_file(tmp_path: Path, options: tuple[str, ...]) -> None:
    path = create(tmp_path / "d.qcow2", "qcow2", "10M", *options)
    q = qemu_info(path, "qcow2")
    info, _ = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert info.data_file == "data.raw"


def test_qcow2_data_file_with_backing(tmp_path: Path) -> None:
    path = tmp_path / "d.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-o", "data_file=data.raw",
             "-b", "base.qcow2", "-F", "qcow2", path.name, "10M", cwd=tmp_path)
    q = qemu_info(path, "qcow2")
    info, _ = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert (info.data_file, info.backing_file, info.backing_format) == (
        "data.raw", "base.qcow2", "qcow2")


def test_qcow2_dirty_after_a_crash_with_lazy_refcounts(tmp_path: Path) -> None:
    path = create(tmp_path / "lazy.qcow2", "qcow2", "10M", "lazy_refcounts=on")
    run = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write 0 64k", "-c", "abort", path.name],
        capture_output=True, cwd=tmp_path,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    assert run.returncode != 0  # it aborted mid-way, as a crash would
    q = qemu_info(path, "qcow2")
    assert q["dirty-flag"] is True
    info, _ = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert info.dirty and info.problems == ()


# qcow2 v3 header edits: (name, offset, bytes, expected fields, problem, qemu opens it)
QCOW2_EDITS: list[tuple[str, int, bytes, dict[str, Any], str | None, bool]] = [
    ("dirty bit", 72, struct.pack(">Q", 1), {"dirty": True}, None, True),
    ("corrupt bit", 72, struct.pack(">Q", 2), {"corrupt": True},
     "qcow2 corrupt bit is set", True),
    ("dirty and corrupt", 72, struct.pack(">Q", 3), {"dirty": True, "corrupt": True},
     "qcow2 corrupt bit is set", True),
    ("unknown bit 5", 72, struct.pack(">Q", 0x20), {"unknown_incompatible": 0x20},
     "unknown qcow2 incompatible feature bits 0x20", False),
    ("unknown high bits", 72, struct.pack(">Q", (1 << 63) | 1 << 40),
     {"unknown_incompatible": (1 << 63) | 1 << 40},
     "unknown qcow2 incompatible feature bits 0x8000010000000000", False),
    # qemu-img info opens it without I/O; using it needs a data-file option
    ("data file bit without a name", 72, struct.pack(">Q", 4), {},
     "qcow2 needs an external data file but does not name one", True),
    ("compression bit with zlib", 72, struct.pack(">Q", 8), {"invalid": True},
     "qcow2 compression type bit is set but the compression type is zlib", False),
    ("zstd without its bit", 104, b"\x01", {"invalid": True},
     "qcow2 compression type is not zlib but its feature bit is clear", False),
    ("unknown compression type", 104, b"\x07", {"invalid": True},
     "unknown qcow2 compression type 7", False),
    ("cluster_bits 8", 20, struct.pack(">I", 8), {"invalid": True},
     "qcow2 cluster_bits 8 is outside 9..21", False),
    ("cluster_bits 22", 20, struct.pack(">I", 22), {"invalid": True},
     "qcow2 cluster_bits 22 is outside 9..21", False),
    ("version 4", 4, struct.pack(">I", 4), {"invalid": True},
     "unsupported qcow2 version 4", False),
    ("qcow version 1", 4, struct.pack(">I", 1), {"invalid": True},
     "qcow version 1 images are not supported", False),
    ("header_length 100", 100, struct.pack(">I", 100), {"invalid": True},
     "qcow2 header_length 100 is shorter than 104 bytes", False),
    ("header_length beyond cluster", 100, struct.pack(">I", 65544), {"invalid": True},
     "qcow2 header_length 65544 exceeds the cluster size", False),
    ("refcount_order 7", 96, struct.pack(">I", 7), {"invalid": True},
     "qcow2 refcount_order 7 is larger than 6", False),
    ("encryption method 3", 32, struct.pack(">I", 3), {"invalid": True},
     "unknown qcow2 encryption method 3", False),
    ("aes encryption", 32, struct.pack(">I", 1), {"encrypted": True}, None, True),
    ("backing offset beyond the cluster", 8, struct.pack(">Q", 65537), {"invalid": True},
     "qcow2 backing file name lies outside the first cluster", False),
    ("backing name too long", 16, struct.pack(">I", 1024), {"invalid": True},
     "qcow2 backing file name is too long", False),
    ("no refcount table", 56, struct.pack(">I", 0), {"invalid": True},
     "qcow2 image has no refcount table", False),
    ("refcount table unaligned", 48, struct.pack(">Q", 65536 + 8), {"invalid": True},
     "qcow2 refcount table offset 0x10008 is invalid", False),
    ("l1 table unaligned", 40, struct.pack(">Q", 0x30000 + 512), {"invalid": True},
     "qcow2 l1 table offset 0x30200 is invalid", False),
    ("l1 table too small", 36, struct.pack(">I", 0), {"invalid": True},
     "qcow2 l1 table is too small for the virtual size", False),
    ("virtual size of 1 TiB", 24, struct.pack(">Q", 1 << 40), {"invalid": True},
     "qcow2 l1 table is too small for the virtual size", False),
    ("virtual size whose l1 index overflows", 24, struct.pack(">Q", 1 << 62),
     {"invalid": True}, "qcow2 virtual size is too large", False),
    ("virtual size beyond INT_MAX l1", 24, struct.pack(">Q", (1 << 64) - 1),
     {"invalid": True}, "qcow2 virtual size is too large", False),
    ("too many snapshots", 60, struct.pack(">I", 65537), {"invalid": True},
     "qcow2 snapshot table is too large", False),
]


@pytest.fixture(scope="module")
def qcow2_with_backing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("qcow2src")
    path = d / "src.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw",
             path.name, "1G", cwd=d)
    return path


@pytest.mark.parametrize(("name", "offset", "data", "fields", "problem", "qemu_opens"),
                         QCOW2_EDITS, ids=[edit[0] for edit in QCOW2_EDITS])
def test_qcow2_header_edits(tmp_path: Path, qcow2_with_backing: Path, name: str,
                            offset: int, data: bytes, fields: dict[str, Any],
                            problem: str | None, qemu_opens: bool) -> None:
    path = tmp_path / "x.qcow2"
    shutil.copy(qcow2_with_backing, path)
    if name == "zstd without its bit" or name == "unknown compression type":
        assert struct.unpack(">I", path.read_bytes()[100:104])[0] > 104
    edit(path, offset, data)
    info, _ = probe_file(path)
    assert info.format == F.QCOW2
    for field, value in fields.items():
        assert getattr(info, field) == value, field
    assert info.problems == ((problem,) if problem else ())
    if info.invalid:
        assert info.virtual_size == 0
    else:
        assert info.backing_file == "base.raw" and info.backing_format == "raw"
        assert info.virtual_size == 1 << 30
    refusal = qemu_refuses(path, "qcow2")
    assert (refusal == "") == qemu_opens, refusal
    if qemu_opens:
        assert_qcow2_like_qemu(info, qemu_info(path, "qcow2"))


def test_qcow2_virtual_size_rounds_down_like_qemu(tmp_path: Path) -> None:
    path = create(tmp_path / "odd.qcow2", "qcow2", "1M")
    edit(path, 24, struct.pack(">Q", 1000001))
    info, _ = probe_file(path)
    assert info.virtual_size == qemu_info(path, "qcow2")["virtual-size"] == 999936


def test_qcow2_header_extension_running_past_the_header(tmp_path: Path,
                                                        qcow2_with_backing: Path) -> None:
    path = tmp_path / "x.qcow2"
    shutil.copy(qcow2_with_backing, path)
    data = path.read_bytes()[:HEAD_SIZE]
    at = data.find(bytes.fromhex("e2792aca"))
    edit(path, at + 4, struct.pack(">I", 0x10000))
    info, _ = probe_file(path)
    assert info.invalid
    assert info.problems == ("qcow2 header extension 0xe2792aca runs past the header area",)
    assert "Header extension too large" in qemu_refuses(path, "qcow2")


def test_qcow2_backing_format_name_too_long(tmp_path: Path, qcow2_with_backing: Path) -> None:
    path = tmp_path / "x.qcow2"
    shutil.copy(qcow2_with_backing, path)
    at = path.read_bytes()[:HEAD_SIZE].find(bytes.fromhex("e2792aca"))
    edit(path, at + 4, struct.pack(">I", 16))
    info, _ = probe_file(path)
    assert info.problems == ("qcow2 backing format name is too long (16 bytes)",)
    assert qemu_refuses(path, "qcow2")


def test_qcow2_truncated_at_many_offsets(tmp_path: Path, qcow2_with_backing: Path) -> None:
    data = qcow2_with_backing.read_bytes()
    backing_end = struct.unpack(">Q", data[8:16])[0] + struct.unpack(">I", data[16:20])[0]
    refcount_end = struct.unpack(">Q", data[48:56])[0] + 65536
    l1_end = struct.unpack(">Q", data[40:48])[0] + 8 * struct.unpack(">I", data[36:40])[0]
    assert 112 < backing_end < 65536 < refcount_end < l1_end <= len(data)
    cuts = {0, 1, 3, 4, 5, 8, 20, 50, 71, 72, 73, 100, 103, 104, 105, 111, 112, 113, 120,
            backing_end - 9, backing_end - 1, backing_end, backing_end + 1, 4096, 65535,
            65536, refcount_end - 1, refcount_end, l1_end - 1, l1_end}
    cuts.update(range(112, backing_end, 7))
    for length in sorted(cuts):
        path = cut(qcow2_with_backing, tmp_path / f"cut{length}.qcow2", length)
        detected, _ = probe_file(path)
        declared, _ = probe_file(path, "qcow2")
        where = f"(file is {length} bytes)"
        if length < 4:
            assert detected == ImageInfo(format=F.RAW, virtual_size=length)
        else:
            assert detected == declared
        if length < backing_end:
            assert declared == ImageInfo(format=F.QCOW2, virtual_size=0, truncated=True,
                                         problems=(f"qcow2 header is truncated {where}",))
            continue
        assert not declared.invalid
        assert declared.backing_file == "base.raw" and declared.virtual_size == 1 << 30
        if length < refcount_end:
            assert declared.truncated
            assert declared.problems == (
                f"qcow2 refcount table lies beyond the end of the file {where}",)
        elif length < l1_end:
            assert declared.truncated
            assert declared.problems == (
                f"qcow2 l1 table lies beyond the end of the file {where}",)
        else:
            assert not declared.truncated and declared.problems == ()


def test_qcow2_head_shorter_than_head_size_asks_for_more(qcow2_with_backing: Path) -> None:
    data = qcow2_with_backing.read_bytes()
    size = len(data)
    # detect looks at a whole head for its magics; a declared parser asks only for what
    # its header walk reaches
    assert detect(data[:80], size) == NeedBytes(80, HEAD_SIZE - 80)
    assert parse_as("qcow2", data[:80], size) == NeedBytes(80, 24)
    answer = parse_as("qcow2", data[:80], size, {80: data[80:104]})
    assert isinstance(answer, NeedBytes) and answer.offset == 104
    full = detect(data[:HEAD_SIZE], size)
    assert isinstance(full, ImageInfo) and full.backing_file == "base.raw"


# ---------------------------------------------------------------------------------------
# declared formats are never guessed


def test_declared_raw_is_raw_even_when_it_looks_like_qcow2(qcow2_with_backing: Path) -> None:
    data = qcow2_with_backing.read_bytes()
    for fmt in ("raw", F.RAW):
        assert parse_as(fmt, data[:HEAD_SIZE], len(data)) == ImageInfo(
            format=F.RAW, virtual_size=len(data))
    info, reads = probe_file(qcow2_with_backing, "raw")
    assert info == ImageInfo(format=F.RAW, virtual_size=len(data))
    assert reads == [(0, HEAD_SIZE)]


def test_declared_iso_is_its_file_size(qcow2_with_backing: Path) -> None:
    data = qcow2_with_backing.read_bytes()
    assert parse_as("iso", data[:HEAD_SIZE], len(data)) == ImageInfo(
        format=F.ISO, virtual_size=len(data))


@pytest.mark.parametrize(("fmt", "problem"), [
    ("qcow2", "the first bytes are not a qcow2 header"),
    ("vmdk", "the first bytes are not a vmdk header or descriptor"),
    ("vdi", "the first bytes are not a vdi header"),
    ("vpc", "the file has no vpc footer at its start or its end"),
    ("vhdx", "the first bytes are not a vhdx header"),
    ("luks", "the first bytes are not a luks header"),
])
def test_declared_format_that_does_not_match(tmp_path: Path, fmt: str, problem: str) -> None:
    path = tmp_path / "raw.img"
    path.write_bytes(b"\x01" * 100000)
    info, _ = probe_file(path, fmt)
    assert info == ImageInfo(format=F(fmt), virtual_size=0, invalid=True, problems=(problem,))
    assert qemu_refuses(path, fmt)


def test_declared_format_of_another_image(qcow2_with_backing: Path) -> None:
    for fmt in ("vmdk", "vdi", "vpc", "vhdx", "luks"):
        info, _ = probe_file(qcow2_with_backing, fmt)
        assert info.format == fmt and info.invalid and info.virtual_size == 0


@pytest.mark.parametrize("name", ["qed", "QCOW2", "", "a" * 200])
def test_unknown_declared_format(qcow2_with_backing: Path, name: str) -> None:
    data = qcow2_with_backing.read_bytes()[:HEAD_SIZE]
    info = parse_as(name, data, 1 << 20)
    assert isinstance(info, ImageInfo)
    assert info.invalid and info.virtual_size == 0
    assert info.problems == (f"{name[:64]!r} is not a known image format",)
    assert probe(lambda o, n: data[o:o + n], len(data), name) == info


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vdi", "vpc", "vhdx", "luks"])
def test_declared_format_of_an_empty_file(fmt: str) -> None:
    info = parse_as(fmt, b"", 0)
    assert info == ImageInfo(format=F(fmt), virtual_size=0, truncated=True,
                             problems=(f"{fmt} header is truncated (file is 0 bytes)",))


# ---------------------------------------------------------------------------------------
# raw and iso


def test_raw_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert probe_file(empty) == (ImageInfo(format=F.RAW, virtual_size=0), [(0, HEAD_SIZE)])
    small = tmp_path / "small"
    small.write_bytes(os.urandom(3000))
    assert probe_file(small) == (ImageInfo(format=F.RAW, virtual_size=3000),
                                 [(0, HEAD_SIZE)])
    big = tmp_path / "big.raw"
    create(big, "raw", "10M")
    info, reads = probe_file(big)
    assert info == ImageInfo(format=F.RAW, virtual_size=qemu_info(big, "raw")["virtual-size"])
    # an unknown file larger than the head gets its last sector read, for a fixed vhd
    assert reads == [(0, HEAD_SIZE), (10 * 2**20 - 512, 512)]


def test_iso(tmp_path: Path) -> None:
    path = tmp_path / "cd.iso"
    with open(path, "wb") as f:
        f.truncate(700 * 2048)
        f.seek(32768)
        f.write(b"\x01CD001\x01")
    info, reads = probe_file(path)
    assert info == ImageInfo(format=F.ISO, virtual_size=700 * 2048)
    assert info.virtual_size == qemu_info(path, "raw")["virtual-size"]
    assert reads == [(0, HEAD_SIZE)]
    tool = shutil.which("genisoimage") or shutil.which("xorrisofs") or shutil.which("mkisofs")
    if tool:
        (tmp_path / "content").mkdir()
        (tmp_path / "content" / "hello.txt").write_text("hello")
        real = tmp_path / "real.iso"
        subprocess.run([tool, "-quiet", "-o", str(real), str(tmp_path / "content")],
                       check=True, capture_output=True)
        assert probe_file(real)[0] == ImageInfo(format=F.ISO,
                                                virtual_size=real.stat().st_size)


# ---------------------------------------------------------------------------------------
# vmdk


@pytest.mark.parametrize(("size", "options"), [
    ("1M", ()),
    ("100M", ()),
    ("1000001", ()),
    ("3G", ()),
    ("100M", ("subformat=streamOptimized",)),
    ("1G", ("compat6=on",)),
    ("100M", ("adapter_type=lsilogic",)),
])
def test_vmdk_sparse_matches_qemu(tmp_path: Path, size: str, options: tuple[str, ...]) -> None:
    path = create(tmp_path / "m.vmdk", "vmdk", size, *options)
    q = qemu_info(path, "vmdk")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.cluster_size == q["cluster-size"]
    assert info.problems == ()
    assert reads == [(0, HEAD_SIZE)]
    assert probe_file(path, "vmdk")[0] == info


@pytest.mark.parametrize(("size", "subformat", "extents"), [
    ("100M", "monolithicFlat", 1),
    ("1000001", "monolithicFlat", 1),
    ("3G", "twoGbMaxExtentSparse", 2),
    ("3G", "twoGbMaxExtentFlat", 2),
])
def test_vmdk_descriptor_file(tmp_path: Path, size: str, subformat: str, extents: int) -> None:
    path = create(tmp_path / "d.vmdk", "vmdk", size, f"subformat={subformat}")
    assert path.read_bytes().startswith(b"# Disk DescriptorFile")
    assert len(list(tmp_path.glob("d-*.vmdk"))) == extents
    q = qemu_info(path, "vmdk")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.cluster_size is None
    assert info.problems == ("vmdk descriptor references extent files",)
    assert reads == [(0, HEAD_SIZE)]
    for extent in tmp_path.glob("d-*.vmdk"):
        if "Flat" in subformat:  # a flat extent is plain data: raw
            assert probe_file(extent)[0].format == F.RAW


def test_vmdk_with_backing(tmp_path: Path) -> None:
    create(tmp_path / "base.vmdk", "vmdk", "100M")
    path = tmp_path / "child.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", path.name,
             cwd=tmp_path)
    q = qemu_info(path, "vmdk")
    info, _ = probe_file(path)
    assert_like_qemu(info, q)
    assert (info.backing_file, info.backing_format) == ("base.vmdk", "vmdk")


def test_vmdk_descriptor_with_parent(tmp_path: Path) -> None:
    path = tmp_path / "delta.vmdk"
    path.write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=87654321\n'
                    'createType="vmfsSparse"\nparentFileNameHint="parent.vmdk"\n\n'
                    '# Extent description\nRW 2048 VMFSSPARSE "delta-delta.vmdk"\n'
                    'RDONLY 4096 VMFSSPARSE "ignored.vmdk"\n')
    info, _ = probe_file(path)
    assert info == ImageInfo(format=F.VMDK, virtual_size=2048 * 512, version=1,
                             backing_file="parent.vmdk", backing_format="vmdk",
                             problems=("vmdk descriptor references extent files",))


def test_vmdk_descriptor_without_create_type(tmp_path: Path) -> None:
    path = tmp_path / "bad.vmdk"
    path.write_text('version=1\nRW 2048 FLAT "x.img" 0\n')
    info, _ = probe_file(path)
    assert (info.format, info.invalid, info.problems) == (
        F.VMDK, True, ("vmdk descriptor has no createType",))


def test_vmdk3_cowd_header() -> None:
    header = b"COWD" + struct.pack("<IIIIIII", 1, 3, 20480, 16, 4, 10, 0)
    info = detect(pad(header), 1 << 20)
    assert info == ImageInfo(format=F.VMDK, virtual_size=20480 * 512, cluster_size=16 * 512,
                             version=1)


def test_vmdk_edits(tmp_path: Path) -> None:
    src = create(tmp_path / "m.vmdk", "vmdk", "100M")
    for offset, data, problem in [
        (4, struct.pack("<I", 4), "unsupported vmdk version 4"),
        (44, struct.pack("<I", 513), "vmdk grain table of 513 entries is too large"),
        (20, struct.pack("<Q", 0), "vmdk grain size or grain table size is zero"),
        (20, struct.pack("<Q", 0x200000 * 2), "vmdk grain size of 4194304 sectors is invalid"),
    ]:
        path = tmp_path / "e.vmdk"
        shutil.copy(src, path)
        edit(path, offset, data)
        info, _ = probe_file(path)
        assert (info.invalid, info.problems) == (True, (problem,))
        assert qemu_refuses(path, "vmdk")


# ---------------------------------------------------------------------------------------
# vdi


@pytest.mark.parametrize(("size", "options"), [
    ("1M", ()), ("1000001", ()), ("0", ()), ("1G", ()), ("3M", ("static=on",)),
])
def test_vdi_matches_qemu(tmp_path: Path, size: str, options: tuple[str, ...]) -> None:
    path = create(tmp_path / "x.vdi", "vdi", size, *options)
    q = qemu_info(path, "vdi")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.cluster_size == q["cluster-size"] and info.version == 1
    assert info.problems == () and reads == [(0, HEAD_SIZE)]
    assert probe_file(path, "vdi")[0] == info


def test_vdi_odd_disk_size_rounds_up_like_qemu(tmp_path: Path) -> None:
    path = create(tmp_path / "x.vdi", "vdi", "1M")
    edit(path, 368, struct.pack("<Q", 1000001))
    assert probe_file(path)[0].virtual_size == qemu_info(path, "vdi")["virtual-size"] == 1000448


@pytest.mark.parametrize(("offset", "data", "problem"), [
    (68, struct.pack("<I", 0x00010000), "unsupported vdi version 1.0"),
    (360, struct.pack("<I", 4096), "vdi sector size 4096 is not 512"),
    (376, struct.pack("<I", 2 << 20), "vdi block size 2097152 is not 1 MiB"),
    (368, struct.pack("<Q", 2 << 20), "vdi disk size exceeds what its block map covers"),
    (340, struct.pack("<I", 513), "vdi block map offset is not sector aligned"),
    (440, b"\x01", "vdi differencing images are not supported"),
])
def test_vdi_edits(tmp_path: Path, offset: int, data: bytes, problem: str) -> None:
    path = create(tmp_path / "x.vdi", "vdi", "1M")
    edit(path, offset, data)
    info, _ = probe_file(path)
    assert (info.format, info.invalid, info.problems) == (F.VDI, True, (problem,))
    assert qemu_refuses(path, "vdi")


# ---------------------------------------------------------------------------------------
# vpc / vhd

VPC_SIZES = ["1M", "10M", "1000001", "100000K", "3G", "40G"]


@pytest.mark.parametrize("size", VPC_SIZES)
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("force_size", ["off", "on"])
def test_vpc_matches_qemu(tmp_path: Path, size: str, subformat: str, force_size: str) -> None:
    path = create(tmp_path / "x.vhd", "vpc", size, f"subformat={subformat}",
                  f"force_size={force_size}")
    q = qemu_info(path, "vpc")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.cluster_size == q.get("cluster-size")
    assert info.problems == ()
    file_size = path.stat().st_size
    if subformat == "fixed":
        # qemu's own probe sees a fixed vhd as raw; its only footer is the last sector
        assert reads == [(0, HEAD_SIZE), (file_size - 512, 512)]
        assert info.virtual_size == file_size - 512
    else:
        assert reads == [(0, HEAD_SIZE)]
    assert probe_file(path, "vpc")[0] == info


def test_vpc_beyond_chs_limit_uses_current_size(tmp_path: Path) -> None:
    path = create(tmp_path / "big.vhd", "vpc", "200G")
    q = qemu_info(path, "vpc")
    info, _ = probe_file(path)
    assert info.virtual_size == q["virtual-size"] == 200 << 30


@pytest.mark.parametrize(("creator", "uses_current_size"), [
    (b"vpc ", False), (b"qemu", False), (b"qem2", True), (b"win ", True), (b"d2v ", True),
    (b"CTXS", True), (b"tap\0", True), (b"tap ", False),
])
def test_vpc_creator_app_decides_size(tmp_path: Path, creator: bytes,
                                      uses_current_size: bool) -> None:
    path = create(tmp_path / "x.vhd", "vpc", "1000001", "subformat=fixed")
    size = path.stat().st_size
    footer = bytearray(path.read_bytes()[-512:])
    footer[28:32] = creator
    struct.pack_into(">Q", footer, 48, 1000448)  # current_size below the CHS size
    struct.pack_into(">I", footer, 64, 0)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    edit(path, size - 512, bytes(footer))
    info, _ = probe_file(path)
    assert info.virtual_size == qemu_info(path, "vpc")["virtual-size"]
    assert (info.virtual_size == 1000448) == uses_current_size


def test_vpc_bad_checksum_and_types(tmp_path: Path) -> None:
    path = create(tmp_path / "x.vhd", "vpc", "10M")
    edit(path, 70, b"\xff")
    info, _ = probe_file(path)
    assert info.problems == ("vpc footer checksum does not match",) and info.invalid
    assert "checksum" in qemu_refuses(path, "vpc")
    fixed = create(tmp_path / "f.vhd", "vpc", "1M", "subformat=fixed")
    copy = tmp_path / "f0.vhd"
    copy.write_bytes(fixed.read_bytes()[-512:] + fixed.read_bytes())
    info, _ = probe_file(copy)
    assert info.problems == ("vpc footer at the start of the file has disk type 2, not dynamic",)
    assert qemu_refuses(copy, "vpc")


def test_vpc_fixed_footer_detected_only_with_fixed_type(tmp_path: Path) -> None:
    path = tmp_path / "tail.img"
    data = bytearray(200000)
    data[-512:-504] = b"conectix"  # a cookie but no fixed disk type: raw
    path.write_bytes(bytes(data))
    assert probe_file(path)[0] == ImageInfo(format=F.RAW, virtual_size=200000)


# ---------------------------------------------------------------------------------------
# vhdx


@pytest.mark.parametrize(("size", "options"), [
    ("1000001", ()),
    ("1G", ()),
    ("5G", ("block_size=1M", "log_size=2M")),
    ("3M", ("subformat=fixed",)),
    ("100M", ("block_state_zero=off", "block_size=256M")),
    ("60T", ()),
])
def test_vhdx_matches_qemu(tmp_path: Path, size: str, options: tuple[str, ...]) -> None:
    path = create(tmp_path / "x.vhdx", "vhdx", size, *options)
    q = qemu_info(path, "vhdx")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.cluster_size == q["cluster-size"] and info.version == 1
    assert info.problems == ()
    # head; both headers and the region table; the metadata table; its items
    assert reads[:2] == [(0, HEAD_SIZE), (65536, 196608)]
    assert len(reads) == 4 and sum(length for _, length in reads) < (1 << 20)
    assert probe_file(path, "vhdx")[0] == info


def test_vhdx_detect_loop_by_hand(tmp_path: Path) -> None:
    path = create(tmp_path / "x.vhdx", "vhdx", "1G")
    data = path.read_bytes()
    extra: dict[int, bytes] = {}
    answer = detect(data[:HEAD_SIZE], len(data), extra)
    steps = 0
    while isinstance(answer, NeedBytes):
        assert 0 <= answer.offset < len(data) and 0 < answer.length <= MAX_NEED
        extra[answer.offset] = data[answer.offset:answer.offset + answer.length]
        answer = detect(data[:HEAD_SIZE], len(data), extra)
        steps += 1
    assert steps == 3
    assert answer == probe_file(path)[0]


def vhdx_header_crc(block: bytearray) -> None:
    from backends.probe import _crc32c  # the same CRC-32C, checked against qemu's images

    struct.pack_into("<I", block, 4, 0)
    struct.pack_into("<I", block, 4, _crc32c(bytes(block)))


def test_vhdx_current_header_and_log(tmp_path: Path) -> None:
    path = create(tmp_path / "x.vhdx", "vhdx", "1G")
    data = path.read_bytes()
    first = bytearray(data[65536:65536 + 4096])
    first[48:64] = b"\x11" * 16  # a log guid in the newer header: the log may hold entries
    struct.pack_into("<Q", first, 8, struct.unpack("<Q", data[131072 + 8:131072 + 16])[0] + 5)
    struct.pack_into("<Q", first, 8 + 8, 0)
    vhdx_header_crc(first)
    edit(path, 65536, bytes(first))
    info, _ = probe_file(path)
    assert not info.invalid and not info.dirty
    assert info.problems == ("vhdx log may hold entries that need replaying",)
    assert_like_qemu(info, qemu_info(path, "vhdx"))  # its log area is empty: qemu opens it
    edit(path, 65536 + 100, b"\x01")  # the newer header is now broken: the older counts
    info, _ = probe_file(path)
    assert info.problems == ()
    assert_like_qemu(info, qemu_info(path, "vhdx"))
    edit(path, 131072 + 100, b"\x01")
    info, _ = probe_file(path)
    assert info.problems == ("vhdx has no valid header",) and info.invalid
    assert qemu_refuses(path, "vhdx")


def test_vhdx_region_table_checksum(tmp_path: Path) -> None:
    path = create(tmp_path / "x.vhdx", "vhdx", "1G")
    edit(path, 196608 + 1000, b"\x01")
    info, _ = probe_file(path)
    assert info.problems == ("vhdx region table checksum does not match",)
    assert qemu_refuses(path, "vhdx")


# ---------------------------------------------------------------------------------------
# luks


def luks1_header(payload_sectors: int = 4096, key_bytes: int = 32) -> bytes:
    """A LUKS1 header that qemu's open-time checks accept (its key material is junk)."""
    header = bytearray(592)
    header[0:8] = b"LUKS\xba\xbe\x00\x01"
    header[8:11] = b"aes"
    header[40:51] = b"xts-plain64"
    header[72:78] = b"sha256"
    struct.pack_into(">II", header, 104, payload_sectors, key_bytes)
    struct.pack_into(">I", header, 164, 1000)
    header[168:204] = b"6a2c0a2e-8d8b-4f31-9b1e-0e5c4a1b2c3d"
    sectors = (key_bytes * 4000 + 511) // 512
    stride = (sectors + 7) // 8 * 8  # key material, aligned to the 4 KiB header
    for slot in range(8):
        at = 208 + 48 * slot
        active, iterations = (0x00AC71F3, 1000) if slot == 0 else (0x0000DEAD, 0)
        struct.pack_into(">II", header, at, active, iterations)
        struct.pack_into(">II", header, at + 40, 8 + slot * stride, 4000)
    return bytes(header)


@pytest.mark.parametrize("file_size", [2 << 20, 3 << 20, (3 << 20) + 512, 100 << 20])
def test_luks1_handmade_matches_qemu(tmp_path: Path, file_size: int) -> None:
    path = tmp_path / "x.luks"
    with open(path, "wb") as f:
        f.write(luks1_header())
        f.truncate(file_size)
    q = qemu_info(path, "luks")  # no secret needed to read the header
    info, _ = probe_file(path)
    assert_like_qemu(info, q)
    assert info == ImageInfo(format=F.LUKS, virtual_size=file_size - 4096 * 512, version=1,
                             encrypted=True)


@pytest.mark.parametrize(("at", "data", "problem"), [
    (6, b"\x00\x03", "unsupported luks version 3"),
    (104, struct.pack(">I", 4), "luks payload overlaps the header"),
    (164, struct.pack(">I", 0), "luks key iteration count is zero"),
    (208 + 44, struct.pack(">I", 3999), "luks key slot 0 is corrupt (stripes 3999 != 4000)"),
    (208 + 48 + 0, struct.pack(">I", 1), "luks key slot 1 state is corrupt"),
    (208 + 4, struct.pack(">I", 0), "luks key slot 0 iteration count is zero"),
    (208 + 40, struct.pack(">I", 2), "luks key slot 0 overlaps the header"),
    (208 + 7 * 48 + 40, struct.pack(">I", 4000), "luks key slot 7 overlaps the payload"),
    (208 + 48 + 40, struct.pack(">I", 8), "luks key slots 0 and 1 overlap"),
    (8, b"a" * 32, "luks cipher name is not nul terminated"),
])
def test_luks1_edits(tmp_path: Path, at: int, data: bytes, problem: str) -> None:
    path = tmp_path / "x.luks"
    header = bytearray(luks1_header())
    header[at:at + len(data)] = data
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(4 << 20)
    info, _ = probe_file(path)
    assert (info.format, info.invalid, info.problems) == (F.LUKS, True, (problem,))
    assert qemu_refuses(path, "luks")


def luks2_header(json_text: str, header_size: int = 16384) -> bytes:
    binary = bytearray(4096)
    binary[0:8] = b"LUKS\xba\xbe\x00\x02"
    struct.pack_into(">QQ", binary, 8, header_size, 1)
    binary[72:78] = b"sha256"
    area = json_text.encode().ljust(header_size - 4096, b"\0")
    return bytes(binary) + area


LUKS2_JSON = ('{"keyslots":{},"tokens":{},"digests":{},'
              '"config":{"json_size":"12288","keyslots_size":"16744448"},'
              '"segments":{"0":{"type":"crypt","offset":"16777216","size":%s,'
              '"iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}}}')


def test_luks2(tmp_path: Path) -> None:
    size = (16 << 20) + (5 << 20)
    dynamic = pad(luks2_header(LUKS2_JSON % '"dynamic"'))
    assert detect(dynamic, size) == ImageInfo(format=F.LUKS, virtual_size=5 << 20, version=2,
                                              encrypted=True)
    fixed = pad(luks2_header(LUKS2_JSON % '"1048576"'))
    assert parse_as("luks", fixed, size) == ImageInfo(format=F.LUKS, virtual_size=1 << 20,
                                                      version=2, encrypted=True)
    big = luks2_header(LUKS2_JSON % '"dynamic"', header_size=1 << 20)
    path = tmp_path / "big.luks"
    with open(path, "wb") as f:
        f.write(big)
        f.truncate(size)
    info, reads = probe_file(path)
    assert info.virtual_size == 5 << 20
    assert reads == [(0, HEAD_SIZE), (HEAD_SIZE, (1 << 20) - HEAD_SIZE)]
    short = detect(dynamic, 1 << 20)
    assert isinstance(short, ImageInfo) and short.truncated
    assert short.problems == ("luks payload lies beyond the end of the file "
                              "(file is 1048576 bytes)",)
    broken = detect(pad(luks2_header("{not json")), size)
    assert isinstance(broken, ImageInfo)
    assert broken.problems == ("luks2 json metadata is not valid",)


def run_with_retries(argv: list[str], cwd: Path) -> bool:
    # qemu 7.2's PBKDF calibration fails now and then on fast machines ("Unable to get
    # accurate CPU usage", fixed upstream in 9.2): try again a few times.
    return any(subprocess.run(argv, capture_output=True, cwd=cwd).returncode == 0
               for _ in range(6))


@pytest.fixture(scope="module")
def encrypted_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A luks image and a luks-encrypted qcow2, made in parallel (each takes seconds)."""
    d = tmp_path_factory.mktemp("crypt")
    secret = ["--object", "secret,id=sec0,data=abc"]
    jobs = {
        "luks": ["qemu-img", "create", "-q", "-f", "luks", *secret, "-o",
                 "key-secret=sec0,iter-time=10,hash-alg=sha512", "x.luks", "10M"],
        "qcow2": ["qemu-img", "create", "-q", "-f", "qcow2", *secret, "-o",
                  "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,"
                  "encrypt.hash-alg=sha512", "x.qcow2", "10M"],
    }
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(jobs, pool.map(lambda argv: run_with_retries(argv, d), jobs.values()),
                        strict=True))
    yield {name: d / f"x.{name}" for name, ok in done.items() if ok}


def test_luks_made_by_qemu(encrypted_images: dict[str, Path], tmp_path: Path) -> None:
    if "luks" not in encrypted_images:
        pytest.skip("qemu-img could not calibrate PBKDF on this machine")
    path = encrypted_images["luks"]
    q = qemu_info(path, "luks")
    info, reads = probe_file(path)
    assert_like_qemu(info, q)
    assert info.encrypted and info.version == 1 and reads == [(0, HEAD_SIZE)]
    payload = q["format-specific"]["data"]["payload-offset"]
    for length in (payload, payload + 512, payload + (7 << 20)):
        copy = tmp_path / "copy.luks"
        shutil.copy(path, copy)
        os.truncate(copy, length)
        assert probe_file(copy)[0].virtual_size == qemu_info(copy, "luks")["virtual-size"]
    for length, problem in [
        (300, "luks header is truncated (file is 300 bytes)"),
        (100000, "luks payload lies beyond the end of the file (file is 100000 bytes)"),
    ]:
        info, _ = probe_file(cut(path, tmp_path / "cut.luks", length))
        assert (info.format, info.truncated, info.problems) == (F.LUKS, True, (problem,))


def test_encrypted_qcow2_made_by_qemu(encrypted_images: dict[str, Path]) -> None:
    if "qcow2" not in encrypted_images:
        pytest.skip("qemu-img could not calibrate PBKDF on this machine")
    path = encrypted_images["qcow2"]
    q = qemu_info(path, "qcow2")
    info, _ = probe_file(path)
    assert_qcow2_like_qemu(info, q)
    assert info.encrypted and info.problems == ()


# ---------------------------------------------------------------------------------------
# truncation of the other formats


TRUNCATIONS: list[tuple[str, tuple[str, ...], int, str | None, str]] = [
    # (format, create options, cut at, detected format or None for raw, problem)
    ("vdi", (), 30, None, "vdi header is truncated (file is 30 bytes)"),
    ("vdi", (), 100, "vdi", "vdi header is truncated (file is 100 bytes)"),
    ("vdi", (), 512, "vdi", "vdi block map lies beyond the end of the file (file is 512 bytes)"),
    ("vmdk", (), 2, None, "vmdk header is truncated (file is 2 bytes)"),
    ("vmdk", (), 50, "vmdk", "vmdk header is truncated (file is 50 bytes)"),
    ("vmdk", (), 600, "vmdk", "vmdk grains lie beyond the end of the file (file is 600 bytes)"),
    ("vpc", (), 300, "vpc", "vpc header is truncated (file is 300 bytes)"),
    ("vpc", (), 700, "vpc",
     "vpc dynamic disk header lies beyond the end of the file (file is 700 bytes)"),
    ("vpc", (), 1100, "vpc",
     "vpc block allocation table lies beyond the end of the file (file is 1100 bytes)"),
    ("vhdx", (), 100, "vhdx", "vhdx header is truncated (file is 100 bytes)"),
    ("vhdx", (), 200000, "vhdx", "vhdx header is truncated (file is 200000 bytes)"),
    ("vhdx", (), (3 << 20) + 100, "vhdx",
     "vhdx metadata region lies beyond the end of the file (file is 3145828 bytes)"),
    ("vhdx", (), (3 << 20) + 70000, "vhdx",
     "vhdx regions lie beyond the end of the file (file is 3215728 bytes)"),
]


@pytest.mark.parametrize(("fmt", "options", "length", "detected", "problem"), TRUNCATIONS)
def test_truncated_images(tmp_path: Path, fmt: str, options: tuple[str, ...], length: int,
                          detected: str | None, problem: str) -> None:
    src = create(tmp_path / f"src.{fmt}", fmt, "1G", *options)
    path = cut(src, tmp_path / f"cut.{fmt}", length)
    declared, _ = probe_file(path, fmt)
    assert declared.format == fmt and declared.truncated and not declared.invalid
    assert declared.problems == (problem,)
    info, _ = probe_file(path)
    if detected is None:
        assert info == ImageInfo(format=F.RAW, virtual_size=length)
    else:
        assert info == declared


def test_fixed_vpc_cut_short_loses_its_footer(tmp_path: Path) -> None:
    src = create(tmp_path / "f.vhd", "vpc", "10M", "subformat=fixed")
    path = cut(src, tmp_path / "cut.vhd", 5 << 20)
    assert probe_file(path)[0] == ImageInfo(format=F.RAW, virtual_size=5 << 20)
    assert probe_file(path, "vpc")[0].problems == (
        "the file has no vpc footer at its start or its end",)


# ---------------------------------------------------------------------------------------
# probe() itself


def test_probe_reader_shorter_than_size(qcow2_with_backing: Path) -> None:
    """A file that shrank after stat: the short reads mark the real end."""
    data = qcow2_with_backing.read_bytes()[:200]
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset:offset + length]

    info = probe(read, 10 << 30)
    assert info.truncated and info.problems == ("qcow2 header is truncated (file is 200 bytes)",)
    assert reads == [(0, HEAD_SIZE)]


def test_probe_reader_that_lies_about_the_tail() -> None:
    """Reads beyond the head always come back empty: probe still stops."""
    head = luks2_header(LUKS2_JSON % '"dynamic"', header_size=1 << 20)[:HEAD_SIZE]
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return head[offset:offset + length] if offset == 0 else b""

    info = probe(read, 100 << 20)
    assert info.truncated and info.format == F.LUKS
    assert len(reads) == 2


def test_probe_reader_errors_propagate(tmp_path: Path) -> None:
    def read(offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        probe(read, 1 << 20)


def test_probe_bounds_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import backends.probe as module

    monkeypatch.setattr(module, "MAX_READS", 1)
    head = luks2_header(LUKS2_JSON % '"dynamic"', header_size=1 << 20)
    data = head + bytes(20 << 20)
    info = probe(lambda o, n: data[o:o + n], len(data))
    assert info.virtual_size == len(data) - (16 << 20)  # one extra read is enough here
    path = create(tmp_path / "x.vhdx", "vhdx", "1G")
    info, reads = probe_file(path)
    assert len(reads) == 2
    assert info == ImageInfo(format=F.VHDX, virtual_size=0, invalid=True, problems=(
        "vhdx header needs more reads than the probe allows",))
