"""Golden argv: every qemu-img command the code builds, with formats always named."""

from __future__ import annotations

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
