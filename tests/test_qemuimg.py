"""Golden argv: every qemu-img command the code builds, with formats always named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends import qemuimg
from backends.model import ImageFormat


def test_create_raw() -> None:
    assert qemuimg.create("/p/a.raw", ImageFormat.RAW, 1048576) == [
        "qemu-img", "create", "-q", "-f", "raw", "--", "/p/a.raw", "1048576"]


def test_create_qcow2_on_backing_names_both_formats() -> None:
    assert qemuimg.create("/p/-x", ImageFormat.QCOW2, 4096, backing="base.img",
                          backing_format=ImageFormat.RAW) == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.img", "-F", "raw", "--",
        "/p/-x", "4096"]


def test_create_preallocated() -> None:
    assert qemuimg.create("/p/a", ImageFormat.RAW, 512, preallocation="falloc") == [
        "qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=falloc", "--",
        "/p/a", "512"]


def test_backing_without_format_is_refused() -> None:
    with pytest.raises(ValueError, match="declared format"):
        qemuimg.create("/p/a", ImageFormat.QCOW2, 512, backing="b")


def test_info_and_map() -> None:
    assert qemuimg.info("/p/a,b", "qcow2") == [
        "qemu-img", "info", "--output=json", "-f", "qcow2", "--", "/p/a,b"]
    assert qemuimg.allocation_map("/p/a,b", "qcow2") == [
        "qemu-img", "map", "-U", "--output=json", "-f", "qcow2",
        'json:{"backing": null, "file": {"driver": "file", "filename": "/p/a,b"}}']


def test_parse_progress() -> None:
    assert qemuimg.parse_progress(b"    (0.00/100%)\r    (12.50/100%)\r") == 12.5
    assert qemuimg.parse_progress(b"nothing") is None


# -- the builders of the jobs issue --------------------------------------------------


def test_convert_sparse_with_progress() -> None:
    assert qemuimg.convert("/p/a.raw", ImageFormat.RAW, "/q/.sc-tmp-1-b", ImageFormat.QCOW2) == [
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", "--", "/p/a.raw",
        "/q/.sc-tmp-1-b"]


def test_convert_every_option() -> None:
    assert qemuimg.convert("/p/-a", "qcow2", "/p/b", "qcow2", sparse=False, compress=True,
                           backing="-base", backing_fmt=ImageFormat.RAW,
                           preallocation="metadata", progress=False,
                           out_of_order=True) == [
        "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-S", "0", "-c", "-W", "-m",
        "16", "-B", "-base", "-F", "raw", "-o", "preallocation=metadata", "--", "/p/-a",
        "/p/b"]


def test_convert_onto_zeroed_target() -> None:
    assert qemuimg.convert("/p/a", "raw", "/dev-like/b", "raw", target_is_zero=True) == [
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "raw", "-n", "--target-is-zero",
        "--", "/p/a", "/dev-like/b"]
    with pytest.raises(ValueError, match="target_is_zero"):
        qemuimg.convert("/p/a", "raw", "/p/b", "qcow2", target_is_zero=True, backing="/p/c",
                        backing_fmt="raw")
    with pytest.raises(ValueError, match="target_is_zero"):
        qemuimg.convert("/p/a", "raw", "/p/b", "raw", target_is_zero=True,
                        preallocation="full")


def test_iso_is_raw_to_qemu() -> None:
    assert qemuimg.convert("/p/a.iso", ImageFormat.ISO, "/p/b", ImageFormat.ISO)[3:7] == [
        "-f", "raw", "-O", "raw"]


def test_paths_must_be_absolute() -> None:
    """A relative "nbd:x" is opened as an NBD export even after "--": absolute paths
    never start with "-" and never carry a protocol."""
    for build in (lambda: qemuimg.convert("nbd:x", "raw", "/p/b", "raw"),
                  lambda: qemuimg.convert("/p/a", "raw", "-b", "raw"),
                  lambda: qemuimg.resize("a", "raw", 1),
                  lambda: qemuimg.check("a", "qcow2"),
                  lambda: qemuimg.compare("/p/a", "raw", "b", "raw"),
                  lambda: qemuimg.measure("a", "raw", "qcow2")):
        with pytest.raises(ValueError, match="absolute"):
            build()


def test_backing_names() -> None:
    with pytest.raises(ValueError, match="declared format"):
        qemuimg.convert("/p/a", "qcow2", "/p/b", "qcow2", backing="base")
    with pytest.raises(ValueError, match="protocol"):
        qemuimg.convert("/p/a", "qcow2", "/p/b", "qcow2", backing="nbd:x", backing_fmt="raw")
    # A relative name with a ":" after a "/" is a path, an absolute one always is.
    assert qemuimg.rebase("/p/a", "qcow2", "d/x:y", "raw", unsafe=True) == [
        "qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "d/x:y", "-F", "raw", "--", "/p/a"]
    assert "/p/nbd:x" in qemuimg.rebase("/p/a", "qcow2", "/p/nbd:x", "raw", unsafe=True)


def test_resize() -> None:
    assert qemuimg.resize("/p/a", ImageFormat.QCOW2, 1 << 30) == [
        "qemu-img", "resize", "-f", "qcow2", "--", "/p/a", "1073741824"]
    assert qemuimg.resize("/p/-a", "raw", 512, shrink=True, preallocation="falloc") == [
        "qemu-img", "resize", "-f", "raw", "--preallocation=falloc", "--shrink", "--",
        "/p/-a", "512"]
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="positive"):
            qemuimg.resize("/p/a", "raw", bad)


def test_measure() -> None:
    assert qemuimg.measure("/p/a", ImageFormat.QCOW2, ImageFormat.RAW) == [
        "qemu-img", "measure", "--output=json", "-f", "qcow2", "-O", "raw", "--", "/p/a"]
    assert qemuimg.measure(None, None, "qcow2", size=1 << 30) == [
        "qemu-img", "measure", "--output=json", "-O", "qcow2", "--size", "1073741824"]
    with pytest.raises(ValueError):
        qemuimg.measure("/p/a", "raw", "qcow2", size=5)
    with pytest.raises(ValueError):
        qemuimg.measure(None, None, "qcow2")


def test_parse_measure() -> None:
    out = b'{\n    "required": 393216,\n    "fully-allocated": 1074135040\n}\n'
    assert qemuimg.parse_measure(out) == qemuimg.Measure(393216, 1074135040)
    for bad in (b"", b"[]", b'{"required": 1}', b'{"required": "1", "fully-allocated": 2}',
                b'{"required": -1, "fully-allocated": 2}'):
        with pytest.raises(ValueError):
            qemuimg.parse_measure(bad)


def test_check() -> None:
    cut = 'json:{"backing": null, "file": {"driver": "file", "filename": "/p/a"}}'
    assert qemuimg.check("/p/a", ImageFormat.QCOW2) == [
        "qemu-img", "check", "--output=json", "-f", "qcow2", "--", cut]
    assert qemuimg.check("/p/a", "qcow2", force_share=True) == [
        "qemu-img", "check", "--output=json", "-U", "-f", "qcow2", "--", cut]
    assert qemuimg.check("/p/a", "qcow2", output_json=False) == [
        "qemu-img", "check", "-f", "qcow2", "--", cut]
    assert qemuimg.check("/p/a", "qcow2", repair="leaks") == [
        "qemu-img", "check", "--output=json", "-f", "qcow2", "-r", "leaks", "--", cut]
    assert qemuimg.check("/p/a", "qcow2", repair="all") == [
        "qemu-img", "check", "--output=json", "-f", "qcow2", "-r", "all", "--", cut]
    with pytest.raises(ValueError):
        qemuimg.check("/p/a", "qcow2", repair="everything")
    # A repair opens the image for writing: qemu refuses -U with it.
    with pytest.raises(ValueError, match="shared"):
        qemuimg.check("/p/a", "qcow2", repair="leaks", force_share=True)


@pytest.mark.parametrize(("code", "status"), [
    (0, "clean"), (1, "error"), (2, "corrupt"), (3, "leaks"), (63, "unsupported"),
    (5, "unknown")])
def test_parse_check_exit_codes(code: int, status: str) -> None:
    result = qemuimg.parse_check(code, b"")
    assert result.status == status and result.returncode == code
    assert result.clean == (code == 0)


def test_parse_check_counts() -> None:
    out = (b'{"image-end-offset": 262144, "total-clusters": 16, "check-errors": 0, '
           b'"leaks": 3, "corruptions": 2, "leaks-fixed": 1, "filename": "/p/a", '
           b'"format": "qcow2"}')
    assert qemuimg.parse_check(2, out) == qemuimg.CheckResult(
        "corrupt", 2, corruptions=2, leaks=3, check_errors=0, leaks_fixed=1,
        image_end_offset=262144, total_clusters=16)
    assert qemuimg.parse_check(1, b"not json").image_end_offset is None
    full = (b'{"image-end-offset": 393216, "total-clusters": 16, "check-errors": 0, '
            b'"allocated-clusters": 5, "fragmented-clusters": 1, "filename": "x"}')
    parsed = qemuimg.parse_check(0, full, b"")
    assert (parsed.allocated_clusters, parsed.fragmented_clusters) == (5, 1)
    failed = qemuimg.parse_check(1, b"", b"qemu-img: Could not open 'x': busy\n")
    assert failed.status == "error" and failed.message == "Could not open 'x': busy"


def test_check_a_missing_backing_is_not_opened(tmp_path: Path) -> None:
    """The check cuts the chain: an overlay whose backing is gone is still checked."""
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", "/nonexistent/b",
                    "-F", "qcow2", str(top), "1M"], check=True)
    done = subprocess.run(qemuimg.check(str(top), "qcow2"), capture_output=True)
    assert qemuimg.parse_check(done.returncode, done.stdout, done.stderr).status == "clean"


def test_rebase() -> None:
    assert qemuimg.rebase("/p/a", ImageFormat.QCOW2, "base.raw", ImageFormat.RAW,
                          unsafe=False) == [
        "qemu-img", "rebase", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "--", "/p/a"]
    assert qemuimg.rebase("/p/a", "qcow2", "/q/b", "qcow2", unsafe=True, progress=True) == [
        "qemu-img", "rebase", "-p", "-f", "qcow2", "-u", "-b", "/q/b", "-F", "qcow2", "--",
        "/p/a"]
    assert qemuimg.rebase("/p/a", "qcow2", None, None, unsafe=False) == [
        "qemu-img", "rebase", "-f", "qcow2", "-b", "", "--", "/p/a"]
    with pytest.raises(ValueError, match="declared format"):
        qemuimg.rebase("/p/a", "qcow2", "b", None, unsafe=True)


def test_amend() -> None:
    assert qemuimg.amend("/p/a", "qcow2", {"compat": "1.1", "lazy_refcounts": True,
                                           "backing_file": "a,b"}) == [
        "qemu-img", "amend", "-f", "qcow2", "-o",
        "compat=1.1,lazy_refcounts=on,backing_file=a,,b", "--", "/p/a"]
    for bad in ({}, {"a,b": 1}, {"-x": 1}):
        with pytest.raises(ValueError):
            qemuimg.amend("/p/a", "qcow2", bad)


def test_commit_compare_and_read_head() -> None:
    assert qemuimg.commit("/p/top", ImageFormat.QCOW2) == [
        "qemu-img", "commit", "-p", "-f", "qcow2", "--", "/p/top"]
    assert qemuimg.commit("/p/top", "qcow2", progress=False) == [
        "qemu-img", "commit", "-f", "qcow2", "--", "/p/top"]
    assert qemuimg.commit("/p/top", "qcow2", keep=True) == [
        "qemu-img", "commit", "-p", "-d", "-f", "qcow2", "--", "/p/top"]
    assert qemuimg.compare("/p/a", ImageFormat.RAW, "/q/b", ImageFormat.QCOW2) == [
        "qemu-img", "compare", "-f", "raw", "-F", "qcow2", "--", "/p/a", "/q/b"]
    assert qemuimg.read_head("/p/a", "qcow2", "/p/.sc-tmp-x", 2048) == [
        "qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=2048", "count=1", "if=/p/a",
        "of=/p/.sc-tmp-x"]


def test_progress_parser_joins_split_chunks() -> None:
    fresh = qemuimg.ProgressParser()
    assert fresh.feed(b"    (0.00/100%)\r    (1") == 0.0
    assert fresh.feed(b"2.") is None
    assert fresh.feed(b"50/10") is None
    assert fresh.feed(b"0%)\r") == 12.5
    assert fresh.feed(b"    (25.00/100%)\r    (50.00/100%)\r") == 50.0
    assert fresh.feed(b"\n") is None
    byte_by_byte = qemuimg.ProgressParser()
    seen = [v for b in b"  (99.99/100%)\r  (100.00/100%)\r" if
            (v := byte_by_byte.feed(bytes([b]))) is not None]
    assert seen == [99.99, 100.0]


def test_progress_parser_keeps_little() -> None:
    parser = qemuimg.ProgressParser()
    for _ in range(1000):
        assert parser.feed(b"x" * 1000) is None
    assert len(parser._pending) <= 64
    assert parser.feed(b"(7.00/100%)") == 7.0


def test_builders_run_on_real_qemu_img(tmp_path: Path) -> None:
    """The argv work on qemu-img 7.2 with names that start with "-" or look like a
    protocol ("nbd:x" would be an NBD export if it were relative)."""
    src, dst = tmp_path / "-src nbd:x", tmp_path / "-dst,x"
    subprocess.run(qemuimg.create(str(src), ImageFormat.RAW, 1 << 20), check=True)
    for argv in (qemuimg.convert(str(src), "raw", str(dst), "qcow2", progress=False),
                 qemuimg.resize(str(dst), "qcow2", 2 << 20),
                 qemuimg.resize(str(dst), "qcow2", 1 << 20, shrink=True),
                 qemuimg.compare(str(src), "raw", str(dst), "qcow2"),
                 qemuimg.amend(str(dst), "qcow2", {"lazy_refcounts": True}),
                 qemuimg.rebase(str(dst), "qcow2", str(src), "raw", unsafe=True)):
        done = subprocess.run(argv, capture_output=True)
        assert done.returncode == 0, (argv, done.stderr)
    measured = subprocess.run(qemuimg.measure(str(dst), "qcow2", "raw"), capture_output=True,
                              check=True)
    assert qemuimg.parse_measure(measured.stdout).required == 1 << 20
    checked = subprocess.run(qemuimg.check(str(dst), "qcow2"), capture_output=True)
    assert qemuimg.parse_check(checked.returncode, checked.stdout).status == "clean"
    raw = subprocess.run(qemuimg.check(str(src), "raw"), capture_output=True)
    assert qemuimg.parse_check(raw.returncode, raw.stdout).status == "unsupported"


def test_overlay() -> None:
    assert qemuimg.overlay("/p/.sc-tmp-3-disk", 1 << 30, "disk.snap-20240131-235959",
                           ImageFormat.RAW) == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "disk.snap-20240131-235959", "-F",
        "raw", "--", "/p/.sc-tmp-3-disk", "1073741824"]
    assert qemuimg.overlay("/q/clone", 512, "/p/gold", ImageFormat.ISO)[6:9] == [
        "/p/gold", "-F", "raw"]
    with pytest.raises(ValueError, match="protocol"):
        qemuimg.overlay("/p/a", 512, "nbd:x", "raw")
    with pytest.raises(ValueError, match="absolute"):
        qemuimg.overlay("a", 512, "b", "raw")
    for bad in (0, -512, True):
        with pytest.raises(ValueError, match="positive"):
            qemuimg.overlay("/p/a", bad, "b", "raw")


def test_convert_into_an_existing_image() -> None:
    assert qemuimg.convert("/p/.sc-tmp-4-v.raw", "raw", "/p/v", "qcow2", existing=True) == [
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", "-n", "--",
        "/p/.sc-tmp-4-v.raw", "/p/v"]
    with pytest.raises(ValueError, match="existing target"):
        qemuimg.convert("/p/a", "raw", "/p/b", "qcow2", existing=True, preallocation="full")


def test_create_preallocated_full() -> None:
    assert qemuimg.create("/p/a", ImageFormat.QCOW2, 1 << 20, preallocation="full") == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", "--", "/p/a",
        "1048576"]


def test_new_builders_run_on_real_qemu_img(tmp_path: Path) -> None:
    base = tmp_path / "-base nbd:x"
    subprocess.run(qemuimg.create(str(base), ImageFormat.RAW, 1 << 20), check=True)
    top = tmp_path / "top"
    for argv in (qemuimg.overlay(str(top), 1 << 20, str(base), "raw"),
                 qemuimg.convert(str(base), "raw", str(top), "qcow2", existing=True,
                                 progress=False)):
        done = subprocess.run(argv, capture_output=True)
        assert done.returncode == 0, (argv, done.stderr)
