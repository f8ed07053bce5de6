"""The libvirt driver's XML helpers, without any daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from backends.contract import InvalidRequest
from backends.drivers.libvirt.domains import collect_users, disk_sources
from backends.drivers.libvirt.poolxml import (
    DirPoolForm,
    IscsiPoolForm,
    NetfsPoolForm,
    check_pool_xml,
    describe_pool,
)
from backends.drivers.libvirt.volxml import image_format, new_volume_xml, parse_volume
from backends.model import ImageFormat

DOMAIN = """<domain type='kvm'><name>web</name><devices>
<disk type='file' device='disk'><source file='/p/web.qcow2'/>
  <backingStore type='file'><format type='raw'/><source file='/p/base.raw'/>
  <backingStore/></backingStore><target dev='vda'/></disk>
<disk type='block' device='disk'><source dev='/dev/vg/data'/><target dev='vdb'/></disk>
<disk type='volume' device='disk'><source pool='images' volume='extra.raw'/>
  <target dev='vdc'/></disk>
<disk type='network' device='disk'><source protocol='rbd' name='rbd/x'/>
  <target dev='vdd'/></disk>
</devices></domain>"""


def test_domain_disks_name_files_devices_volumes_and_their_backing_chain() -> None:
    paths, volumes = disk_sources(DOMAIN)
    assert paths == ["/p/web.qcow2", "/p/base.raw", "/dev/vg/data"]
    assert volumes == [("images", "extra.raw")]
    users = collect_users([("web", True, DOMAIN), ("old", False, DOMAIN)])
    assert users.users("p", "base.raw", "/p/base.raw") == ("old", "web")
    assert users.running_users("images", "extra.raw", "/elsewhere") == ("web",)
    assert users.users("p", "none", "/p/none") == ()


def test_hostile_form_values_stay_inside_their_elements() -> None:
    xml = NetfsPoolForm("sctest-n", "h' evil='1", "/e</dir><x/>", "/t").to_xml()
    root = ET.fromstring(xml)
    assert root.find("source/host").get("name") == "h' evil='1"  # type: ignore[union-attr]
    assert root.find("source/dir").get("path") == "/e</dir><x/>"  # type: ignore[union-attr]
    assert check_pool_xml(xml) == ("sctest-n", "netfs")
    with pytest.raises(InvalidRequest):
        DirPoolForm("a/b", "/t").to_xml()
    with pytest.raises(InvalidRequest):
        IscsiPoolForm("sctest-i", "h", "iqn.x", port=0).to_xml()


def test_describe_pool_falls_back_to_the_source_without_a_target() -> None:
    rbd = ("<pool type='rbd'><name>ceph</name><source><name>rbd</name>"
           "<host name='mon1' port='6789'/></source></pool>")
    assert describe_pool(rbd).path == "mon1/rbd"
    assert describe_pool(DirPoolForm("d", "/srv/d").to_xml()).path == "/srv/d"


def test_volume_xml_round_trip() -> None:
    xml = new_volume_xml("v.qcow2", ImageFormat.QCOW2, 1 << 30, backing_path="/p/b.raw",
                         backing_format="raw")
    record = parse_volume(xml.replace("<target>", "<target><path>/p/v.qcow2</path>"
                                      "<permissions><mode>0444</mode></permissions>"))
    assert (record.name, record.path, record.format, record.capacity) == (
        "v.qcow2", "/p/v.qcow2", "qcow2", 1 << 30)
    assert (record.backing_path, record.backing_format, record.readonly) == (
        "/p/b.raw", "raw", True)
    assert image_format("") == ImageFormat.RAW and image_format("qed") is None
