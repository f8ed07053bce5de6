"""Pool XML: forms for the common pool types, checks for raw XML, and reading it back.

A form is the handful of fields an administrator fills in; ``to_xml`` builds libvirt's
pool XML from it (elements built with ElementTree, so no value can break out of its
attribute). Any other pool type is defined from raw XML, checked by ``check_pool_xml``
before libvirt sees it (libvirt validates it again against its schema).
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from backends.contract import InvalidRequest

# A pool name becomes a file name in /etc/libvirt/storage: no slashes, no leading dot.
_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}$")
NETFS_FORMATS = ("auto", "nfs", "glusterfs", "cifs")


def check_pool_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidRequest(f"{name!r} is not a usable pool name",
                             hint="use letters, digits and . _ + - (at most 100), "
                                  "not starting with a dot")


def _absolute(path: str, what: str, name: str) -> None:
    if not path.startswith("/") or "\0" in path:
        raise InvalidRequest(f"the {what} {path!r} is not an absolute path", pool=name)


def _pool(kind: str, name: str) -> ET.Element:
    check_pool_name(name)
    root = ET.Element("pool", type=kind)
    ET.SubElement(root, "name").text = name
    return root


def _target(root: ET.Element, path: str) -> None:
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path


def _text(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class DirPoolForm:
    """A directory on the host's file system."""

    name: str
    target: str

    def to_xml(self) -> str:
        _absolute(self.target, "target directory", self.name)
        root = _pool("dir", self.name)
        _target(root, self.target)
        return _text(root)


@dataclass(frozen=True)
class FsPoolForm:
    """A block device holding a file system, mounted on ``target`` when started."""

    name: str
    device: str
    target: str
    format: str = "auto"  # ext4, xfs, ... or auto

    def to_xml(self) -> str:
        _absolute(self.device, "device", self.name)
        _absolute(self.target, "target directory", self.name)
        root = _pool("fs", self.name)
        source = ET.SubElement(root, "source")
        ET.SubElement(source, "device", path=self.device)
        ET.SubElement(source, "format", type=self.format)
        _target(root, self.target)
        return _text(root)


@dataclass(frozen=True)
class NetfsPoolForm:
    """A network file system export (NFS by default), mounted on ``target``."""

    name: str
    host: str
    export: str
    target: str
    format: str = "auto"

    def to_xml(self) -> str:
        if not self.host:
            raise InvalidRequest("a network file system pool needs a server", pool=self.name)
        if self.format not in NETFS_FORMATS:
            raise InvalidRequest(f"unknown network file system {self.format!r}",
                                 pool=self.name, hint=f"one of {', '.join(NETFS_FORMATS)}")
        _absolute(self.target, "target directory", self.name)
        root = _pool("netfs", self.name)
        source = ET.SubElement(root, "source")
        ET.SubElement(source, "host", name=self.host)
        ET.SubElement(source, "dir", path=self.export)
        ET.SubElement(source, "format", type=self.format)
        _target(root, self.target)
        return _text(root)


@dataclass(frozen=True)
class LogicalPoolForm:
    """An LVM volume group; ``devices`` are its physical volumes when libvirt builds it."""

    name: str
    vg_name: str = ""  # the volume group's name: the pool's name when empty
    devices: tuple[str, ...] = ()

    def to_xml(self) -> str:
        vg = self.vg_name or self.name
        for device in self.devices:
            _absolute(device, "device", self.name)
        root = _pool("logical", self.name)
        source = ET.SubElement(root, "source")
        for device in self.devices:
            ET.SubElement(source, "device", path=device)
        ET.SubElement(source, "name").text = vg
        ET.SubElement(source, "format", type="lvm2")
        _target(root, f"/dev/{vg}")
        return _text(root)


@dataclass(frozen=True)
class IscsiPoolForm:
    """The LUNs of one iSCSI target; volumes appear under ``target`` (by-path names)."""

    name: str
    host: str
    iqn: str
    port: int = 3260
    initiator_iqn: str = ""
    target: str = "/dev/disk/by-path"

    def to_xml(self) -> str:
        if not self.host or not self.iqn:
            raise InvalidRequest("an iSCSI pool needs a portal host and a target IQN",
                                 pool=self.name)
        if not 0 < self.port < 65536:
            raise InvalidRequest(f"port {self.port} is out of range", pool=self.name)
        _absolute(self.target, "target directory", self.name)
        root = _pool("iscsi", self.name)
        source = ET.SubElement(root, "source")
        ET.SubElement(source, "host", name=self.host, port=str(self.port))
        ET.SubElement(source, "device", path=self.iqn)
        if self.initiator_iqn:
            ET.SubElement(ET.SubElement(source, "initiator"), "iqn", name=self.initiator_iqn)
        _target(root, self.target)
        return _text(root)


PoolForm = DirPoolForm | FsPoolForm | NetfsPoolForm | LogicalPoolForm | IscsiPoolForm
FORM_TYPES = ("dir", "fs", "netfs", "logical", "iscsi")
# What each form needs besides its name; the command line's flags and the console's
# fields carry these names (source_path: a netfs export, an iSCSI target's IQN).
REQUIRED: dict[str, tuple[str, ...]] = {
    "dir": ("target",), "fs": ("device", "target"),
    "netfs": ("source_host", "source_path", "target"), "logical": (),
    "iscsi": ("source_host", "source_path")}


def missing_fields(kind: str, fields: dict[str, str]) -> list[str]:
    """The fields of ``REQUIRED[kind]`` that ``fields`` leaves empty."""
    return [name for name in REQUIRED[kind] if not fields.get(name, "").strip()]


def pool_form(kind: str, name: str, fields: dict[str, str]) -> PoolForm:
    """The form of type ``kind`` (``FORM_TYPES``) from the fields the user filled in
    (``target``, ``device``, ``source_host``, ``source_path``, ``vg``; empty ones unset).
    ``InvalidRequest`` names what is missing; ``to_xml`` checks the values themselves."""
    if kind not in REQUIRED:
        raise InvalidRequest(f"no form for pool type {kind!r}", pool=name,
                             hint=f"one of {', '.join(FORM_TYPES)}, or raw XML")
    missing = missing_fields(kind, fields)
    if missing:
        raise InvalidRequest(f"a {kind} pool needs {', '.join(missing)}", pool=name)
    f = {key: value.strip() for key, value in fields.items()}
    if kind == "dir":
        return DirPoolForm(name, f["target"])
    if kind == "fs":
        return FsPoolForm(name, f["device"], f["target"])
    if kind == "netfs":
        return NetfsPoolForm(name, f["source_host"], f["source_path"], f["target"])
    if kind == "logical":
        device = f.get("device", "")
        return LogicalPoolForm(name, f.get("vg", ""), (device,) if device else ())
    form = IscsiPoolForm(name, f["source_host"], f["source_path"])
    return dataclasses.replace(form, target=f["target"]) if f.get("target") else form


def check_pool_xml(xml: str) -> tuple[str, str]:
    """(name, type) of raw pool XML, or ``InvalidRequest`` saying what is wrong with it."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InvalidRequest(f"the pool XML does not parse: {err}",
                             hint="fix the XML; nothing was defined") from None
    if root.tag != "pool":
        raise InvalidRequest(f"the XML describes a <{root.tag}>, not a <pool>")
    kind = root.get("type", "")
    if not kind:
        raise InvalidRequest("the pool XML has no type attribute",
                             hint="e.g. <pool type='dir'>")
    name = (root.findtext("name") or "").strip()
    check_pool_name(name)
    return name, kind


@dataclass(frozen=True)
class PoolDescription:
    """What the pool XML says about where its volumes are."""

    name: str
    type: str
    path: str  # the target path, or the source (rbd image pool, zfs dataset, ...)


def describe_pool(xml: str) -> PoolDescription:
    root = ET.fromstring(xml)
    kind = root.get("type", "")
    path = root.findtext("target/path") or ""
    if not path:
        source = root.find("source")
        if source is not None:
            host = source.find("host")
            name = source.findtext("name") or ""
            device = source.find("device")
            device_path = device.get("path", "") if device is not None else ""
            host_name = host.get("name", "") if host is not None else ""
            path = "/".join(p for p in (host_name, name or device_path) if p)
    return PoolDescription(root.findtext("name") or "", kind, path)
