"""Volume XML: what libvirt says of a volume, and the XML that asks for a new one."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from backends.model import ImageFormat

_FORMATS = {str(f): f for f in ImageFormat}


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    path: str
    format: str  # as libvirt says it ("" for volumes without one: LVs, iSCSI LUNs)
    capacity: int
    allocation: int
    mtime: float
    readonly: bool
    backing_path: str | None
    backing_format: str | None


def _int(root: ET.Element, tag: str) -> int:
    text = root.findtext(tag)
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def parse_volume(xml: str) -> VolumeRecord:
    root = ET.fromstring(xml)
    fmt_element = root.find("target/format")
    fmt = fmt_element.get("type", "") if fmt_element is not None else ""
    mode = root.findtext("target/permissions/mode")
    readonly = False
    if mode:
        try:
            readonly = int(mode, 8) & 0o222 == 0
        except ValueError:
            readonly = False
    mtime_text = root.findtext("target/timestamps/mtime")
    try:
        mtime = float(mtime_text) if mtime_text else 0.0
    except ValueError:
        mtime = 0.0
    backing_path = root.findtext("backingStore/path") or None
    backing_fmt_element = root.find("backingStore/format")
    backing_format = (backing_fmt_element.get("type") if backing_fmt_element is not None
                      else None) if backing_path else None
    return VolumeRecord(
        name=root.findtext("name") or "",
        path=root.findtext("target/path") or "",
        format=fmt,
        capacity=_int(root, "capacity"),
        allocation=_int(root, "allocation"),
        mtime=mtime,
        readonly=readonly,
        backing_path=backing_path,
        backing_format=backing_format,
    )


def image_format(libvirt_format: str) -> ImageFormat | None:
    """The model's format for libvirt's name of it; None for one the model does not know
    (read as raw, never guessed). "" (LVs, LUNs, RBD images) is raw."""
    if libvirt_format in ("", "none"):
        return ImageFormat.RAW
    return _FORMATS.get(libvirt_format)


def new_volume_xml(name: str, fmt: ImageFormat, capacity: int, *,
                   backing_path: str | None = None, backing_format: str | None = None,
                   allocation: int = 0) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation", unit="bytes").text = str(allocation)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=str(fmt))
    if backing_path:
        backing = ET.SubElement(root, "backingStore")
        ET.SubElement(backing, "path").text = backing_path
        ET.SubElement(backing, "format", type=backing_format or "raw")
    return ET.tostring(root, encoding="unicode")
