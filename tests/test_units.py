from __future__ import annotations

import pytest

from console.units import format_age, format_size, parse_size


@pytest.mark.parametrize(("text", "size"), [
    ("10G", 10 << 30), ("512M", 512 << 20), ("512MiB", 512 << 20), ("1.5T", 3 << 39),
    ("4096", 4096), ("1k", 1024), (" 2 G ", 2 << 30), ("0.1K", 512)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "-1G", "1X", "1.2.3G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format() -> None:
    assert format_size(0) == "0B"
    assert format_size(1536) == "1.5K"
    assert format_size(10 << 30) == "10G"
    assert format_size(None) == "-"
    assert [format_age(s) for s in (0.5, 5, 300, 7200, 200000)] == ["now", "5s", "5m", "2h",
                                                                     "2d"]


def test_duration_and_rate() -> None:
    from console.units import format_duration, format_rate

    assert [format_duration(s) for s in (None, 34.9, 62, 3723)] == ["-", "0:34", "1:02",
                                                                    "1:02:03"]
    assert (format_rate(0), format_rate(180 << 20)) == ("", "180M/s")
