"""Identify disk image formats and parse their headers: pure functions over bytes.

Nothing here does I/O. Callers read :data:`HEAD_SIZE` bytes from offset 0 and hand them
to :func:`detect` (format unknown) or :func:`parse_as` (format declared by the pool or
a backing reference). When a parser needs bytes beyond what it was given, it answers
:class:`NeedBytes`; the caller reads them and calls again with ``extra``. :func:`probe`
is that loop, bounded, over a ``read(offset, length)`` callable.

The virtual size reported for every image ``qemu-img`` makes equals ``qemu-img info
-f FMT``'s ``virtual-size``. The header checks follow qemu's own open-time checks
(block/qcow2.c, vmdk.c, vdi.c, vpc.c, vhdx.c, crypto/block-luks.c): a header qemu
refuses to open comes back with a problem, and ``invalid`` unless the header itself is
sound and only uses something unsupported (unknown qcow2 feature bits, for one).

Parsers never raise on bad input and never allocate more than a few MiB: a magic that
matches with a header cut short gives ``truncated``; fields that do not hold together
give ``invalid``; both come with short human-readable ``problems``.

This module is shipped to remote hosts and run by a bare ``python3``: it imports only
the standard library and :mod:`backends.model`.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from backends.model import ImageFormat, ImageInfo

__all__ = ["HEAD_SIZE", "NeedBytes", "Reader", "detect", "parse_as", "probe"]

HEAD_SIZE: int = 65536
"""Callers read this many bytes from offset 0 first."""

MAX_NEED = 4 << 20  # the largest single NeedBytes (a LUKS2 header area is up to 4 MiB)
MAX_READS = 8  # extra reads probe() makes after the head
MAX_READ_TOTAL = 6 << 20  # bytes probe() reads after the head, all reads together

Reader = Callable[[int, int], bytes]
"""``read(offset, length) -> bytes``; shorter than ``length`` only at end of file."""


@dataclass(frozen=True)
class NeedBytes:
    """A parser needs ``length`` bytes at absolute ``offset`` (always ``< size``)."""

    offset: int
    length: int


_NO_EXTRA: Mapping[int, bytes] = {}

# ---------------------------------------------------------------------------------------
# Plumbing: where bytes come from, and how parsers stop.


class _Need(Exception):
    def __init__(self, offset: int, length: int) -> None:
        super().__init__(offset, length)
        self.offset = offset
        self.length = length


class _Short(Exception):
    """The file ends before bytes a parser needs; ``what`` names them (None: header)."""

    def __init__(self, what: str | None = None) -> None:
        super().__init__(what)
        self.what = what


class _Bad(Exception):
    """The header does not hold together; the message is the problem shown."""


class _NotThis(Exception):
    """The bytes are not this format at all (only for declared formats)."""


class _Source:
    """Bytes of one file: the head plus the chunks read for earlier NeedBytes."""

    __slots__ = ("head", "pieces", "size")

    def __init__(self, head: bytes, size: int, extra: Mapping[int, bytes]) -> None:
        self.head = head
        self.size = max(size, len(head), 0)
        self.pieces: list[tuple[int, bytes]] = [(0, head)]
        for offset, data in extra.items():
            if isinstance(offset, int) and offset >= 0 and data:
                self.pieces.append((offset, bytes(data)))

    def get(self, offset: int, length: int, *, want: int = 0,
            what: str | None = None) -> bytes:
        """Exactly ``length`` bytes at ``offset``.

        Raises ``_Short`` when the file ends first, ``_Need`` when they were not read yet
        (asking for ``want`` bytes from ``offset`` when that is more, to save reads).
        """
        end = offset + length
        if offset < 0 or length < 0 or end > self.size:
            raise _Short(what)
        if length > MAX_NEED:
            raise _Bad(f"{what or 'header'} of {length} bytes is too large to read")
        if end <= len(self.head):
            return self.head[offset:end]
        out = bytearray()
        pos = offset
        while pos < end:
            for start, data in self.pieces:
                if start <= pos < start + len(data):
                    take = data[pos - start:min(end, start + len(data)) - start]
                    out += take
                    pos += len(take)
                    break
            else:
                stop = min(self.size, max(end, offset + want), pos + MAX_NEED)
                raise _Need(pos, stop - pos)
        return bytes(out)

    def prefix(self, length: int) -> bytes:
        """Up to ``length`` bytes from offset 0, fewer when the file is shorter."""
        return self.get(0, min(length, self.size))


def _be(buf: bytes, offset: int, width: int) -> int:
    return int.from_bytes(buf[offset:offset + width], "big")


def _le(buf: bytes, offset: int, width: int) -> int:
    return int.from_bytes(buf[offset:offset + width], "little")


def _cstr(raw: bytes) -> bytes:
    """Bytes up to the first NUL, as C code reading the header would see them."""
    cut = raw.find(b"\0")
    return raw if cut < 0 else raw[:cut]


def _name(raw: bytes) -> str:
    """A file name from a header, decoded as the model wants (surrogateescape)."""
    return os.fsdecode(_cstr(raw))


def _expect_magic(src: _Source, magic: bytes, offset: int = 0) -> None:
    """Stop unless ``magic`` is at ``offset``: truncated when the file ends inside it
    with what is there matching, not this format otherwise."""
    present = src.get(offset, min(len(magic), max(src.size - offset, 0))) \
        if offset <= src.size else b""
    if present == magic:
        return
    if len(present) < len(magic) and magic.startswith(present):
        raise _Short()
    raise _NotThis()


def _digits(value: str, limit: int) -> int | None:
    """``value`` as an int when it is 1..limit ASCII digits, else None."""
    return int(value) if re.fullmatch(f"[0-9]{{1,{limit}}}", value) else None


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


# ---------------------------------------------------------------------------------------
# qcow2 (docs/interop/qcow2.txt; checks as in qcow2_do_open and qcow2_read_extensions)

_QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_EXT_END = 0
_QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
_QCOW2_EXT_DATA_FILE = 0x44415441
_QCOW2_EXT_CRYPTO = 0x0537BE77
_QCOW2_INCOMPAT_DIRTY = 1 << 0
_QCOW2_INCOMPAT_CORRUPT = 1 << 1
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_QCOW2_INCOMPAT_COMPRESSION = 1 << 3
_QCOW2_INCOMPAT_EXTL2 = 1 << 4
_QCOW2_INCOMPAT_KNOWN = 0x1F
_QCOW2_COMPRESSION = {0: None, 1: "zstd"}
_QCOW2_MAX_REFTABLE = 8 << 20
_QCOW2_MAX_L1 = 32 << 20
_QCOW2_MAX_SNAPSHOTS = 65536
_QCOW2_SNAPSHOT_HEADER = 40
_INT64_MAX = (1 << 63) - 1
_INT_MAX = (1 << 31) - 1


def _qcow2_table(name: str, offset: int, entries: int, entry_len: int, max_bytes: int,
                 cluster_size: int) -> None:
    if entries > max_bytes // entry_len:
        raise _Bad(f"qcow2 {name} is too large")
    if _INT64_MAX - entries * entry_len < offset or offset % cluster_size:
        raise _Bad(f"qcow2 {name} offset {offset:#x} is invalid")


def _qcow2(src: _Source) -> ImageInfo:
    _expect_magic(src, _QCOW2_MAGIC)
    head = src.get(0, 72)
    version = _be(head, 4, 4)
    if version == 1:
        raise _Bad("qcow version 1 images are not supported")
    if version not in (2, 3):
        raise _Bad(f"unsupported qcow2 version {version}")
    backing_offset = _be(head, 8, 8)
    backing_size = _be(head, 16, 4)
    cluster_bits = _be(head, 20, 4)
    size = _be(head, 24, 8)
    crypt_method = _be(head, 32, 4)
    l1_size = _be(head, 36, 4)
    l1_offset = _be(head, 40, 8)
    refcount_offset = _be(head, 48, 8)
    refcount_clusters = _be(head, 56, 4)
    nb_snapshots = _be(head, 60, 4)
    snapshots_offset = _be(head, 64, 8)

    if not 9 <= cluster_bits <= 21:
        raise _Bad(f"qcow2 cluster_bits {cluster_bits} is outside 9..21")
    cluster_size = 1 << cluster_bits

    incompatible = 0
    header_length = 72
    compression: str | None = None
    if version == 3:
        head = src.get(0, 104)
        incompatible = _be(head, 72, 8)
        refcount_order = _be(head, 96, 4)
        header_length = _be(head, 100, 4)
        if header_length < 104:
            raise _Bad(f"qcow2 header_length {header_length} is shorter than 104 bytes")
        if header_length > cluster_size:
            raise _Bad(f"qcow2 header_length {header_length} exceeds the cluster size")
        if refcount_order > 6:
            raise _Bad(f"qcow2 refcount_order {refcount_order} is larger than 6")
        compression_type = src.get(104, 1)[0] if header_length > 104 else 0
        if compression_type not in _QCOW2_COMPRESSION:
            raise _Bad(f"unknown qcow2 compression type {compression_type}")
        has_bit = bool(incompatible & _QCOW2_INCOMPAT_COMPRESSION)
        if compression_type == 0 and has_bit:
            raise _Bad("qcow2 compression type bit is set but the compression type is zlib")
        if compression_type != 0 and not has_bit:
            raise _Bad("qcow2 compression type is not zlib but its feature bit is clear")
        compression = _QCOW2_COMPRESSION[compression_type]

    if backing_offset > cluster_size:
        raise _Bad("qcow2 backing file name lies outside the first cluster")
    if backing_offset and backing_offset < header_length:
        raise _Bad("qcow2 backing file name overlaps the header")
    if backing_offset and backing_size > min(1023, cluster_size - backing_offset):
        raise _Bad("qcow2 backing file name is too long")
    if crypt_method > 2:
        raise _Bad(f"unknown qcow2 encryption method {crypt_method}")

    extended_l2 = bool(incompatible & _QCOW2_INCOMPAT_EXTL2)
    if extended_l2 and cluster_bits < 14:
        raise _Bad("qcow2 extended l2 entries need clusters of at least 16 KiB")
    if refcount_clusters == 0:
        raise _Bad("qcow2 image has no refcount table")
    _qcow2_table("refcount table", refcount_offset, refcount_clusters, cluster_size,
                 _QCOW2_MAX_REFTABLE, cluster_size)
    _qcow2_table("snapshot table", snapshots_offset, nb_snapshots, _QCOW2_SNAPSHOT_HEADER,
                 _QCOW2_SNAPSHOT_HEADER * _QCOW2_MAX_SNAPSHOTS, cluster_size)
    _qcow2_table("l1 table", l1_offset, l1_size, 8, _QCOW2_MAX_L1, cluster_size)
    l2_entries = cluster_size // (16 if extended_l2 else 8)
    needed_l1 = -(-size // (cluster_size * l2_entries))
    if needed_l1 > _INT_MAX:
        raise _Bad("qcow2 virtual size is too large")
    if l1_size < needed_l1:
        raise _Bad("qcow2 l1 table is too small for the virtual size")

    # Header extensions: from the end of the header to the backing name (or cluster end).
    backing_format: str | None = None
    data_file: str | None = None
    end = backing_offset or cluster_size
    offset = header_length
    while offset < end:
        ext = src.get(offset, 8, want=end - offset)
        magic, length = _be(ext, 0, 4), _be(ext, 4, 4)
        offset += 8
        if offset > end or length > end - offset:
            raise _Bad(f"qcow2 header extension {magic:#x} runs past the header area")
        if magic == _QCOW2_EXT_END:
            break
        if magic == _QCOW2_EXT_BACKING_FORMAT:
            if length >= 16:
                raise _Bad(f"qcow2 backing format name is too long ({length} bytes)")
            backing_format = _cstr(src.get(offset, length)).decode("utf-8", "replace")
        elif magic == _QCOW2_EXT_DATA_FILE:
            data_file = _name(src.get(offset, length, want=end - offset))
        elif magic == _QCOW2_EXT_CRYPTO:
            if crypt_method != 2:
                raise _Bad("qcow2 crypto header extension without luks encryption")
            if length != 16:
                raise _Bad("qcow2 crypto header extension has a wrong length")
        offset += (length + 7) & ~7

    backing_file: str | None = None
    if backing_offset and backing_size:
        backing_file = _name(src.get(backing_offset, backing_size)) or None

    problems: list[str] = []
    truncated = False
    if incompatible & _QCOW2_INCOMPAT_CORRUPT:
        problems.append("qcow2 corrupt bit is set")
    unknown = incompatible & ~_QCOW2_INCOMPAT_KNOWN
    if unknown:
        problems.append(f"unknown qcow2 incompatible feature bits {unknown:#x}")
    if incompatible & _QCOW2_INCOMPAT_DATA_FILE and data_file is None:
        problems.append("qcow2 needs an external data file but does not name one")
    # Metadata beyond the end of the file means the image was cut short.
    tables = [("refcount table", refcount_offset + refcount_clusters * cluster_size)]
    if l1_size:
        tables.append(("l1 table", l1_offset + l1_size * 8))
    if nb_snapshots:
        tables.append(("snapshot table", snapshots_offset + nb_snapshots * 40))
    for what, table_end in tables:
        if table_end > src.size:
            truncated = True
            problems.append(
                f"qcow2 {what} lies beyond the end of the file (file is {src.size} bytes)")
            break
    return ImageInfo(
        format=ImageFormat.QCOW2,
        virtual_size=size // 512 * 512,
        cluster_size=cluster_size,
        version=version,
        backing_file=backing_file,
        backing_format=backing_format,
        data_file=data_file,
        dirty=bool(incompatible & _QCOW2_INCOMPAT_DIRTY),
        corrupt=bool(incompatible & _QCOW2_INCOMPAT_CORRUPT),
        compression=compression,
        extended_l2=extended_l2,
        unknown_incompatible=unknown,
        encrypted=crypt_method != 0,
        truncated=truncated,
        problems=tuple(problems),
    )


# ---------------------------------------------------------------------------------------
# vmdk: binary sparse extents (KDMV, COWD) and text descriptor files (block/vmdk.c)

_VMDK4_MAGIC = b"KDMV"
_VMDK3_MAGIC = b"COWD"
_VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF
_VMDK_DESC_MAX = 1 << 20
_VMDK_EXTENT = re.compile(
    r'\s*(\S{1,10})\s+(-?[0-9]{1,20})\s+(\S{1,10})\s+"([^\n\r"]{1,511})"'
    r'(?:\s+(-?[0-9]{1,20}))?')
_VMDK_EXTENT_TYPES = {"FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"}


def _vmdk_descriptor_start(head: bytes) -> bool:
    """qemu's vmdk_probe for text: comments and blank lines, then ``version=1|2|3``."""
    if head.startswith(b"# Disk DescriptorFile"):
        return True
    buf = head[:2048]
    pos, end = 0, len(buf)
    while pos < end:
        char = buf[pos:pos + 1]
        if char == b"#":
            newline = buf.find(b"\n", pos)
            if newline < 0:
                return False
            pos = newline + 1
            continue
        if char == b" ":
            while pos < end and buf[pos:pos + 1] == b" ":
                pos += 1
            if buf[pos:pos + 1] == b"\r":
                pos += 1
            if pos >= end or buf[pos:pos + 1] != b"\n":
                return False
            pos += 1
            continue
        return re.match(rb"version=[123]\r?\n", buf[pos:pos + 11]) is not None
    return False


def _vmdk_fields(text: str) -> dict[str, str]:
    """``key = "value"`` lines of a descriptor (first occurrence wins)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        fields.setdefault(key.strip(), value.strip().strip('"'))
    return fields


def _vmdk_extents_size(text: str) -> int:
    """Sum of the sectors of the RW extent lines, as vmdk_parse_extents counts them."""
    sectors = 0
    for line in text.splitlines():
        match = _VMDK_EXTENT.match(line)
        if match is None:
            continue
        access, count, kind, _fname, flat_offset = match.groups()
        if access != "RW":
            continue
        if kind == "FLAT":
            if flat_offset is None or int(flat_offset) < 0:
                raise _Bad("vmdk descriptor has a flat extent without a valid offset")
        elif flat_offset is not None:
            raise _Bad("vmdk descriptor has an offset on an extent that takes none")
        if int(count) <= 0 or kind not in _VMDK_EXTENT_TYPES:
            continue
        sectors += int(count)
    return sectors


def _vmdk_descriptor_text(raw: bytes) -> str:
    return _cstr(raw).decode("utf-8", "surrogateescape")


def _vmdk_backing(fields: Mapping[str, str]) -> str | None:
    hint = fields.get("parentFileNameHint")
    if hint is None or hint == "":
        return None
    if len(os.fsencode(hint)) > 4095:
        raise _Bad("vmdk parent file name is too long")
    return hint


def _vmdk_descriptor_file(text: str) -> ImageInfo:
    fields = _vmdk_fields(text)
    if "createType" not in fields:
        raise _Bad("vmdk descriptor has no createType")
    sectors = _vmdk_extents_size(text)
    if sectors == 0:
        raise _Bad("vmdk descriptor lists no extents")
    backing = _vmdk_backing(fields)
    return ImageInfo(
        format=ImageFormat.VMDK,
        virtual_size=sectors * 512,
        version=_digits(fields.get("version", ""), 5),
        backing_file=backing,
        backing_format="vmdk" if backing else None,
        problems=("vmdk descriptor references extent files",),
    )


def _vmdk_embedded(src: _Source, desc_offset: int, desc_size: int) -> str | None:
    """The descriptor embedded in a sparse extent, or None when the file ends first."""
    start = desc_offset * 512
    if start >= src.size:
        return None
    length = min(desc_size * 512 or 512, _VMDK_DESC_MAX, src.size - start)
    return _vmdk_descriptor_text(src.get(start, length, what="descriptor"))


def _vmdk(src: _Source) -> ImageInfo:
    magic = src.prefix(4)
    if magic == _VMDK4_MAGIC:
        return _vmdk4(src)
    if magic == _VMDK3_MAGIC:
        return _vmdk3(src)
    if not _vmdk_descriptor_start(src.prefix(2048)):
        if len(magic) < 4 and (_VMDK4_MAGIC.startswith(magic) or _VMDK3_MAGIC.startswith(magic)):
            raise _Short()
        raise _NotThis()
    text = src.prefix(HEAD_SIZE)
    if b"\0" not in text and src.size > len(text):
        text = src.prefix(_VMDK_DESC_MAX)
    return _vmdk_descriptor_file(_vmdk_descriptor_text(text))


def _vmdk4(src: _Source) -> ImageInfo:
    raw = src.get(4, 75)
    version = _le(raw, 0, 4)
    gd_offset = _le(raw, 52, 8)
    if gd_offset == _VMDK_GD_AT_END:
        # Stream-optimized images written by VMware keep the real header in a footer.
        if src.size < 1536:
            raise _Short("stream footer")
        footer = src.get(src.size - 1536, 1536, what="stream footer")
        if (footer[512:516] != _VMDK4_MAGIC or _le(footer, 8, 4) != 0
                or _le(footer, 12, 4) != 3 or _le(footer, 1024, 8) != 0
                or _le(footer, 1032, 4) != 0 or _le(footer, 1036, 4) != 0):
            raise _Bad("vmdk stream footer is invalid")
        raw = footer[516:516 + 75]
    capacity = _le(raw, 8, 8)
    granularity = _le(raw, 16, 8)
    desc_offset = _le(raw, 24, 8)
    desc_size = _le(raw, 32, 8)
    num_gtes = _le(raw, 40, 4)
    grain_offset = _le(raw, 60, 8)
    if version > 3:
        raise _Bad(f"unsupported vmdk version {version}")
    if capacity == 0 and desc_offset:
        # An extent wrapper whose embedded descriptor lists the real extents.
        text = _vmdk_embedded(src, desc_offset, desc_size)
        if text is None:
            raise _Short("descriptor")
        info = _vmdk_descriptor_file(text)
        return ImageInfo(format=info.format, virtual_size=info.virtual_size, version=version,
                         backing_file=info.backing_file, backing_format=info.backing_format,
                         problems=info.problems)
    if num_gtes > 512:
        raise _Bad(f"vmdk grain table of {num_gtes} entries is too large")
    if num_gtes * granularity == 0:
        raise _Bad("vmdk grain size or grain table size is zero")
    if granularity > 0x200000:
        raise _Bad(f"vmdk grain size of {granularity} sectors is invalid")
    if -(-capacity // (num_gtes * granularity)) > 32 * 1024 * 1024:
        raise _Bad("vmdk grain directory is too large")
    if capacity > _INT64_MAX // 512:
        raise _Bad("vmdk capacity is too large")

    backing: str | None = None
    if desc_offset and desc_size:
        text = _vmdk_embedded(src, desc_offset, desc_size)
        if text is not None:
            backing = _vmdk_backing(_vmdk_fields(text))
    problems: tuple[str, ...] = ()
    truncated = False
    if src.size < grain_offset * 512:
        truncated = True
        problems = (f"vmdk grains lie beyond the end of the file (file is {src.size} bytes)",)
    return ImageInfo(
        format=ImageFormat.VMDK,
        virtual_size=capacity * 512,
        cluster_size=granularity * 512,
        version=version,
        backing_file=backing,
        backing_format="vmdk" if backing else None,
        truncated=truncated,
        problems=problems,
    )


def _vmdk3(src: _Source) -> ImageInfo:
    raw = src.get(4, 40)
    version = _le(raw, 0, 4)
    sectors = _le(raw, 8, 4)
    granularity = _le(raw, 12, 4)
    l1_size = _le(raw, 20, 4)
    if granularity == 0 or granularity > 0x200000:
        raise _Bad(f"vmdk grain size of {granularity} sectors is invalid")
    if l1_size > 32 * 1024 * 1024:
        raise _Bad("vmdk grain directory is too large")
    return ImageInfo(format=ImageFormat.VMDK, virtual_size=sectors * 512,
                     cluster_size=granularity * 512, version=version)


# ---------------------------------------------------------------------------------------
# vdi (VirtualBox; checks as in vdi_open)

_VDI_SIGNATURE = 0xBEDA107F
_VDI_VERSION_1_1 = 0x00010001
_VDI_BLOCK_SIZE = 1 << 20
_VDI_BLOCKS_MAX = 0xFFFFFFFF // 4


_VDI_MAGIC = _VDI_SIGNATURE.to_bytes(4, "little")


def _vdi_signature(head: bytes) -> bool:
    return head[64:68] == _VDI_MAGIC


def _vdi(src: _Source) -> ImageInfo:
    _expect_magic(src, _VDI_MAGIC, 64)
    raw = src.get(0, 512)
    version = _le(raw, 68, 4)
    offset_bmap = _le(raw, 340, 4)
    offset_data = _le(raw, 344, 4)
    sector_size = _le(raw, 360, 4)
    disk_size = _round_up(_le(raw, 368, 8), 512)
    block_size = _le(raw, 376, 4)
    blocks = _le(raw, 384, 4)
    if version != _VDI_VERSION_1_1:
        raise _Bad(f"unsupported vdi version {version >> 16}.{version & 0xFFFF}")
    if offset_bmap % 512:
        raise _Bad("vdi block map offset is not sector aligned")
    if offset_data % 512:
        raise _Bad("vdi data offset is not sector aligned")
    if sector_size != 512:
        raise _Bad(f"vdi sector size {sector_size} is not 512")
    if block_size != _VDI_BLOCK_SIZE:
        raise _Bad(f"vdi block size {block_size} is not 1 MiB")
    if disk_size > blocks * block_size:
        raise _Bad("vdi disk size exceeds what its block map covers")
    if any(raw[424:456]):
        raise _Bad("vdi differencing images are not supported")
    if blocks > _VDI_BLOCKS_MAX:
        raise _Bad(f"vdi image has too many blocks ({blocks})")
    problems: tuple[str, ...] = ()
    if offset_bmap + blocks * 4 > src.size:
        problems = (f"vdi block map lies beyond the end of the file (file is {src.size} bytes)",)
    return ImageInfo(format=ImageFormat.VDI, virtual_size=disk_size, cluster_size=block_size,
                     version=version >> 16, truncated=bool(problems), problems=problems)


# ---------------------------------------------------------------------------------------
# vpc / vhd (checks and sizing as in vpc_open)

_VPC_COOKIE = b"conectix"
_VPC_FIXED = 2
_VPC_DYNAMIC = 3
_VPC_DIFFERENCING = 4
_VPC_MAX_GEOMETRY = 65535 * 16 * 255
_VPC_MAX_SECTORS = 0xFF000000
# Creators whose footer current_size is the disk size; the others (Virtual PC, qemu
# without force_size) define the size by the CHS geometry.
_VPC_CURRENT_SIZE_APPS = {b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"}


def _vpc_footer_size(footer: bytes) -> int:
    checksum = _be(footer, 64, 4)
    total = sum(footer[:64]) + sum(footer[68:512])
    if (~total) & 0xFFFFFFFF != checksum:
        raise _Bad("vpc footer checksum does not match")
    sectors = _be(footer, 56, 2) * footer[58] * footer[59]
    if footer[28:32] in _VPC_CURRENT_SIZE_APPS or sectors == _VPC_MAX_GEOMETRY:
        sectors = _be(footer, 48, 8) // 512
    if sectors > _VPC_MAX_SECTORS:
        raise _Bad("vpc virtual size exceeds 2040 GiB")
    return sectors * 512


def _vpc(src: _Source) -> ImageInfo:
    """A footer at offset 0 is always a dynamic disk's copy (qemu reads it so); a fixed
    disk has its only footer in the last 512 bytes."""
    try:
        _expect_magic(src, _VPC_COOKIE)
    except _NotThis:
        pass
    else:
        return _vpc_dynamic(src, src.get(0, 512))
    if src.size < 512:
        raise _NotThis()
    footer = src.get(src.size - 512, 512)
    if footer[:8] != _VPC_COOKIE:
        raise _NotThis()
    virtual_size = _vpc_footer_size(footer)
    problems: tuple[str, ...] = ()
    if virtual_size > src.size - 512:
        problems = ("vpc data area is shorter than the virtual size "
                    f"(file is {src.size} bytes)",)
    return ImageInfo(format=ImageFormat.VPC, virtual_size=virtual_size,
                     truncated=bool(problems), problems=problems)


def _vpc_dynamic(src: _Source, footer: bytes) -> ImageInfo:
    virtual_size = _vpc_footer_size(footer)
    disk_type = _be(footer, 60, 4)
    if disk_type == _VPC_DIFFERENCING:
        raise _Bad("vpc differencing images are not supported")
    if disk_type != _VPC_DYNAMIC:
        raise _Bad(f"vpc footer at the start of the file has disk type {disk_type}, "
                   "not dynamic")
    header_offset = _be(footer, 16, 8)
    if header_offset > _INT64_MAX:
        raise _Bad("vpc dynamic disk header offset is invalid")
    header = src.get(header_offset, 512, what="dynamic disk header")
    if header[:8] != b"cxsparse":
        raise _Bad("vpc dynamic disk header has no cxsparse magic")
    block_size = _be(header, 32, 4)
    entries = _be(header, 28, 4)
    if not _power_of_two(block_size) or block_size < 512:
        raise _Bad(f"vpc block size {block_size} is invalid")
    if virtual_size // block_size > 0xFFFFFFFF:
        raise _Bad("vpc image has too many blocks")
    if entries * block_size < virtual_size:
        raise _Bad("vpc block table is too small for the virtual size")
    if entries > _INT_MAX // 4:
        raise _Bad(f"vpc block table of {entries} entries is too large")
    problems: tuple[str, ...] = ()
    if _be(header, 16, 8) + entries * 4 > src.size:
        problems = ("vpc block allocation table lies beyond the end of the file "
                    f"(file is {src.size} bytes)",)
    return ImageInfo(format=ImageFormat.VPC, virtual_size=virtual_size,
                     cluster_size=block_size, truncated=bool(problems), problems=problems)


# ---------------------------------------------------------------------------------------
# vhdx (MS-VHDX; checks as in vhdx_open, vhdx_parse_header, vhdx_parse_metadata)

_VHDX_SIGNATURE = b"vhdxfile"
_VHDX_HEADERS = 64 << 10  # two 4 KiB headers at 64 KiB and 128 KiB, region table at 192
_VHDX_REGION_TABLE = 192 << 10
_VHDX_TABLE_SIZE = 64 << 10
_VHDX_HEADER_SECTION = 1 << 20


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


_VHDX_BAT = _guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
_VHDX_METADATA = _guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_VHDX_ITEMS = {
    _guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"): ("file parameters", 8),
    _guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8"): ("virtual disk size", 8),
    _guid("BECA12AB-B2E6-4523-93EF-C309E000C746"): ("page 83 data", 16),
    _guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"): ("logical sector size", 4),
    _guid("CDA348C7-445D-4471-9CC9-E9885251C556"): ("physical sector size", 4),
    _guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"): ("parent locator", 0),
}
_VHDX_REQUIRED_ITEMS = ("file parameters", "virtual disk size", "page 83 data",
                        "logical sector size", "physical sector size")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _vhdx_checksum_ok(block: bytes) -> bool:
    return _crc32c(block[:4] + b"\0\0\0\0" + block[8:]) == _le(block, 4, 4)


def _vhdx_header(src: _Source) -> bytes:
    """The current header: the valid one with the higher sequence number."""
    area = src.get(_VHDX_HEADERS, 2 * _VHDX_HEADERS + _VHDX_TABLE_SIZE, what=None)
    valid = []
    for start in (0, _VHDX_HEADERS):
        block = area[start:start + 4096]
        if block[:4] == b"head" and _le(block, 66, 2) == 1 and _vhdx_checksum_ok(block):
            valid.append(block)
    if not valid:
        raise _Bad("vhdx has no valid header")
    if len(valid) == 2:
        first, second = _le(valid[0], 8, 8), _le(valid[1], 8, 8)
        if first == second and valid[0] != valid[1]:
            raise _Bad("vhdx headers differ but have the same sequence number")
        return valid[1] if second > first else valid[0]
    return valid[0]


def _vhdx(src: _Source) -> ImageInfo:
    _expect_magic(src, _VHDX_SIGNATURE)
    header = _vhdx_header(src)
    table = src.get(_VHDX_REGION_TABLE, _VHDX_TABLE_SIZE)
    if table[:4] != b"regi":
        raise _Bad("vhdx region table has no signature")
    if not _vhdx_checksum_ok(table):
        raise _Bad("vhdx region table checksum does not match")
    count = _le(table, 8, 4)
    if count > 2047:
        raise _Bad(f"vhdx region table has too many entries ({count})")
    regions: dict[bytes, tuple[int, int]] = {}
    spans: list[tuple[int, int]] = [(0, _VHDX_HEADER_SECTION)]
    for index in range(count):
        entry = table[16 + 32 * index:48 + 32 * index]
        guid, offset, length = entry[:16], _le(entry, 16, 8), _le(entry, 24, 4)
        if any(offset < end and start < offset + length for start, end in spans):
            raise _Bad("vhdx regions overlap")
        spans.append((offset, offset + length))
        if guid in (_VHDX_BAT, _VHDX_METADATA):
            if guid in regions:
                raise _Bad("vhdx region table lists a region twice")
            regions[guid] = (offset, length)
        elif _le(entry, 28, 4) & 1:
            raise _Bad("vhdx region table has an unknown required region")
    if _VHDX_BAT not in regions:
        raise _Bad("vhdx region table has no block allocation table")
    if _VHDX_METADATA not in regions:
        raise _Bad("vhdx region table has no metadata region")
    meta_offset, meta_length = regions[_VHDX_METADATA]

    meta = src.get(meta_offset, _VHDX_TABLE_SIZE, what="metadata region")
    if meta[:8] != b"metadata":
        raise _Bad("vhdx metadata table has no signature")
    count = _le(meta, 10, 2)
    if count * 32 > _VHDX_TABLE_SIZE - 32:
        raise _Bad(f"vhdx metadata table has too many entries ({count})")
    items: dict[str, tuple[int, int]] = {}
    for index in range(count):
        entry = meta[32 + 32 * index:64 + 32 * index]
        known = _VHDX_ITEMS.get(entry[:16])
        offset, length, flags = _le(entry, 16, 4), _le(entry, 20, 4), _le(entry, 24, 4)
        if known is None:
            if flags & 4:
                raise _Bad("vhdx metadata has an unknown required item")
            continue
        name, needed = known
        if name in items:
            raise _Bad(f"vhdx metadata lists the {name} item twice")
        if length < needed or offset + length > meta_length:
            raise _Bad(f"vhdx metadata {name} item is out of bounds")
        items[name] = (offset, needed)
    for name in _VHDX_REQUIRED_ITEMS:
        if name not in items:
            raise _Bad(f"vhdx metadata has no {name} item")

    wanted = [items[name] for name in ("file parameters", "virtual disk size",
                                       "logical sector size")]
    low = min(offset for offset, _ in wanted)
    high = max(offset + length for offset, length in wanted)
    if high - low <= _VHDX_TABLE_SIZE:
        # The items usually sit together: one read for all of them.
        src.get(meta_offset + low, high - low, what="metadata region")

    def item(name: str) -> bytes:
        offset, length = items[name]
        return src.get(meta_offset + offset, length, what="metadata region")

    params = item("file parameters")
    block_size, param_flags = _le(params, 0, 4), _le(params, 4, 4)
    disk_size = _le(item("virtual disk size"), 0, 8)
    sector_size = _le(item("logical sector size"), 0, 4)
    if param_flags & 2:
        raise _Bad("vhdx differencing images are not supported")
    if not _power_of_two(block_size) or not (1 << 20) <= block_size <= (256 << 20):
        raise _Bad(f"vhdx block size {block_size} is invalid")
    if sector_size not in (512, 4096):
        raise _Bad(f"vhdx logical sector size {sector_size} is invalid")

    problems: list[str] = []
    if header[48:64] != bytes(16):
        # Only entries with this guid count; qemu scans the log for them before use.
        problems.append("vhdx log may hold entries that need replaying")
    if sector_size != 512:
        problems.append(f"vhdx logical sector size {sector_size} is not supported by qemu")
    truncated = False
    bat_offset, bat_length = regions[_VHDX_BAT]
    if max(bat_offset + bat_length, meta_offset + meta_length) > src.size:
        truncated = True
        problems.append(
            f"vhdx regions lie beyond the end of the file (file is {src.size} bytes)")
    return ImageInfo(format=ImageFormat.VHDX, virtual_size=disk_size // sector_size * sector_size,
                     cluster_size=block_size, version=_le(header, 66, 2),
                     truncated=truncated, problems=tuple(problems))


# ---------------------------------------------------------------------------------------
# luks (LUKS1 as crypto/block-luks.c checks it; LUKS2 from its JSON area)

_LUKS_MAGIC = b"LUKS\xba\xbe"
_LUKS_SLOT_ENABLED = 0x00AC71F3
_LUKS_SLOT_DISABLED = 0x0000DEAD
_LUKS_HEADER_SECTORS = 8  # key material starts at 4 KiB
_LUKS2_HEADER_SIZES = {1 << n for n in range(14, 23)}  # 16 KiB .. 4 MiB


def _luks(src: _Source) -> ImageInfo:
    _expect_magic(src, _LUKS_MAGIC)
    version = _be(src.get(0, 8), 6, 2)
    if version == 1:
        return _luks1(src)
    if version == 2:
        return _luks2(src)
    raise _Bad(f"unsupported luks version {version}")


def _luks_payload(src: _Source, payload: int, version: int, virtual_size: int) -> ImageInfo:
    if payload > src.size:
        return ImageInfo(format=ImageFormat.LUKS, virtual_size=0, version=version,
                         encrypted=True, truncated=True, problems=(
                             f"luks payload lies beyond the end of the file "
                             f"(file is {src.size} bytes)",))
    return ImageInfo(format=ImageFormat.LUKS, virtual_size=virtual_size, version=version,
                     encrypted=True)


def _luks1(src: _Source) -> ImageInfo:
    raw = src.get(0, 592)
    for start, what in ((8, "cipher name"), (40, "cipher mode"), (72, "hash spec")):
        if b"\0" not in raw[start:start + 32]:
            raise _Bad(f"luks {what} is not nul terminated")
    payload = _be(raw, 104, 4)
    key_bytes = _be(raw, 108, 4)
    if payload < _LUKS_HEADER_SECTORS:
        raise _Bad("luks payload overlaps the header")
    if _be(raw, 164, 4) == 0:
        raise _Bad("luks key iteration count is zero")
    slots: list[tuple[int, int]] = []
    for index in range(8):
        slot = raw[208 + 48 * index:256 + 48 * index]
        active, iterations = _be(slot, 0, 4), _be(slot, 4, 4)
        start, stripes = _be(slot, 40, 4), _be(slot, 44, 4)
        if stripes != 4000:
            raise _Bad(f"luks key slot {index} is corrupt (stripes {stripes} != 4000)")
        if active not in (_LUKS_SLOT_ENABLED, _LUKS_SLOT_DISABLED):
            raise _Bad(f"luks key slot {index} state is corrupt")
        if active == _LUKS_SLOT_ENABLED and iterations == 0:
            raise _Bad(f"luks key slot {index} iteration count is zero")
        if start < _LUKS_HEADER_SECTORS:
            raise _Bad(f"luks key slot {index} overlaps the header")
        length = _round_up(-(-key_bytes * stripes // 512), _LUKS_HEADER_SECTORS)
        if start + length > payload:
            raise _Bad(f"luks key slot {index} overlaps the payload")
        for other, (other_start, other_length) in enumerate(slots):
            if start < other_start + other_length and other_start < start + length:
                raise _Bad(f"luks key slots {other} and {index} overlap")
        slots.append((start, length))
    payload *= 512
    return _luks_payload(src, payload, 1, src.size - payload)


def _luks2_int(value: object) -> int:
    number = _digits(value, 20) if isinstance(value, str) else None
    if number is None:
        raise _Bad("luks2 metadata has an invalid number")
    return number


def _luks2(src: _Source) -> ImageInfo:
    raw = src.get(0, 4096)
    header_size = _be(raw, 8, 8)
    if header_size not in _LUKS2_HEADER_SIZES:
        raise _Bad(f"luks2 header size {header_size} is invalid")
    if _be(raw, 256, 8) != 0:
        raise _Bad("luks2 primary header records a wrong offset")
    area = src.get(4096, header_size - 4096, what="json area")
    try:
        metadata = json.loads(_cstr(area).decode("utf-8"))  # UnicodeError is a ValueError
    except (ValueError, RecursionError):
        raise _Bad("luks2 json metadata is not valid") from None
    segments = metadata.get("segments") if isinstance(metadata, dict) else None
    if not isinstance(segments, dict) or not segments:
        raise _Bad("luks2 metadata has no segments")
    try:
        ordered = sorted(segments.items(), key=lambda item: int(item[0]))
    except ValueError:
        raise _Bad("luks2 metadata has an invalid segment name") from None
    first_offset = -1
    total = 0
    for _key, segment in ordered:
        if not isinstance(segment, dict):
            raise _Bad("luks2 metadata has an invalid segment")
        offset = _luks2_int(segment.get("offset"))
        if first_offset < 0:
            first_offset = offset
        if offset > src.size:
            return _luks_payload(src, offset, 2, 0)
        size = segment.get("size")
        total += src.size - offset if size == "dynamic" else _luks2_int(size)
    return _luks_payload(src, first_offset, 2, total)


# ---------------------------------------------------------------------------------------
# Dispatch

_ISO_OFFSET = 32769
_MAGICS = (
    (_QCOW2_MAGIC, ImageFormat.QCOW2), (_VMDK4_MAGIC, ImageFormat.VMDK),
    (_VMDK3_MAGIC, ImageFormat.VMDK), (_VPC_COOKIE, ImageFormat.VPC),
    (_VHDX_SIGNATURE, ImageFormat.VHDX), (_LUKS_MAGIC, ImageFormat.LUKS),
)
_PARSERS: dict[ImageFormat, Callable[[_Source], ImageInfo]] = {
    ImageFormat.QCOW2: _qcow2,
    ImageFormat.VMDK: _vmdk,
    ImageFormat.VDI: _vdi,
    ImageFormat.VPC: _vpc,
    ImageFormat.VHDX: _vhdx,
    ImageFormat.LUKS: _luks,
}
_NOT_THIS = {
    ImageFormat.QCOW2: "the first bytes are not a qcow2 header",
    ImageFormat.VMDK: "the first bytes are not a vmdk header or descriptor",
    ImageFormat.VDI: "the first bytes are not a vdi header",
    ImageFormat.VPC: "the file has no vpc footer at its start or its end",
    ImageFormat.VHDX: "the first bytes are not a vhdx header",
    ImageFormat.LUKS: "the first bytes are not a luks header",
}


def _failed(fmt: ImageFormat, problem: str, *, truncated: bool = False) -> ImageInfo:
    return ImageInfo(format=fmt, virtual_size=0, invalid=not truncated, truncated=truncated,
                     problems=(problem,))


def _run(fmt: ImageFormat, parser: Callable[[_Source], ImageInfo], src: _Source,
         final: bool) -> ImageInfo | NeedBytes:
    """Run one parser, turning its ways of stopping into answers."""
    try:
        return parser(src)
    except _Need as need:
        if final:
            return _failed(fmt, f"{fmt} header needs more reads than the probe allows")
        return NeedBytes(need.offset, need.length)
    except _Short as short:
        where = f"(file is {src.size} bytes)"
        if short.what is None:
            problem = f"{fmt} header is truncated {where}"
        else:
            problem = f"{fmt} {short.what} lies beyond the end of the file {where}"
        return _failed(fmt, problem, truncated=True)
    except _Bad as bad:
        return _failed(fmt, str(bad))
    except _NotThis:
        return _failed(fmt, _NOT_THIS[fmt])
    except Exception as exc:  # a parser bug must not break a whole pool listing
        return _failed(fmt, f"{fmt} header could not be parsed ({type(exc).__name__})")


def _identify(src: _Source) -> ImageFormat:
    """The format whose magic the bytes carry; RAW when none does."""
    head = src.prefix(HEAD_SIZE)
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    if _vdi_signature(head):
        return ImageFormat.VDI
    if _vmdk_descriptor_start(head):
        return ImageFormat.VMDK
    if src.size >= _ISO_OFFSET + 5 and src.get(_ISO_OFFSET, 5) == b"CD001":
        return ImageFormat.ISO
    if src.size >= 512:
        # A fixed vhd has its only footer in its last sector: looking costs one read.
        tail = src.get(src.size - 512, 512)
        if tail[:8] == _VPC_COOKIE and _be(tail, 60, 4) == _VPC_FIXED:
            return ImageFormat.VPC
    return ImageFormat.RAW


def _detect(src: _Source, size: int, final: bool) -> ImageInfo | NeedBytes:
    try:
        fmt = _identify(src)
    except _Need as need:
        if not final:
            return NeedBytes(need.offset, need.length)
        fmt = ImageFormat.RAW
    if fmt in (ImageFormat.RAW, ImageFormat.ISO):
        return ImageInfo(format=fmt, virtual_size=size)
    return _run(fmt, _PARSERS[fmt], src, final)


def _analyse(head: bytes, size: int, extra: Mapping[int, bytes],
             declared: ImageFormat | str | None, explicit: bool,
             final: bool) -> ImageInfo | NeedBytes:
    size = max(int(size), 0)
    src = _Source(bytes(head), size, extra)
    if not explicit:
        return _detect(src, size, final)
    try:
        fmt = ImageFormat(str(declared))
    except ValueError:
        return ImageInfo(format=ImageFormat.RAW, virtual_size=0, invalid=True,
                         problems=(f"{str(declared)[:64]!r} is not a known image format",))
    if fmt in (ImageFormat.RAW, ImageFormat.ISO):
        return ImageInfo(format=fmt, virtual_size=size)
    return _run(fmt, _PARSERS[fmt], src, final)


# ---------------------------------------------------------------------------------------
# Public API


def detect(head: bytes, size: int,
           extra: Mapping[int, bytes] = _NO_EXTRA) -> ImageInfo | NeedBytes:
    """Identify the format of an image by its magic and parse its header.

    Args:
        head: the bytes at offset 0, normally :data:`HEAD_SIZE` of them (fewer only when
            the file is shorter).
        size: the file size in bytes. When a read made for a :class:`NeedBytes` came back
            short, pass ``offset + len(data)`` here: the file ends there.
        extra: bytes read at absolute offsets for earlier :class:`NeedBytes` answers.

    Returns:
        The parsed :class:`ImageInfo`, or :class:`NeedBytes` naming what to read next.
        Bytes matching no magic are ``raw`` with ``virtual_size=size``; an ISO 9660
        volume descriptor at 32769 gives ``iso``. A fixed vhd is recognised by the
        footer in its last 512 bytes, so unknown files ask for their tail once.
    """
    return _analyse(head, size, extra, None, explicit=False, final=False)


def parse_as(fmt: ImageFormat | str, head: bytes, size: int,
             extra: Mapping[int, bytes] = _NO_EXTRA) -> ImageInfo | NeedBytes:
    """Parse an image as the format it is declared to be, never guessing.

    Declared ``raw`` (or ``iso``) is that format with ``virtual_size=size`` whatever the
    bytes say: an image the pool calls raw is never probed. A header that does not
    match the declared format is ``invalid``; an unknown format name is ``invalid``
    with a problem naming it. Arguments and answers are as for :func:`detect`.
    """
    return _analyse(head, size, extra, fmt, explicit=True, final=False)


def probe(read: Reader, size: int, declared: ImageFormat | str | None = None) -> ImageInfo:
    """Read an image's header through ``read`` and parse it.

    Reads :data:`HEAD_SIZE` bytes at offset 0, then satisfies the parsers'
    :class:`NeedBytes` requests: at most ``MAX_READS`` more reads and ``MAX_READ_TOTAL``
    bytes. A header needing more than that is reported ``invalid``.

    Args:
        read: ``read(offset, length) -> bytes``, shorter only at end of file.
        size: the file size in bytes.
        declared: the format the pool or a backing reference declares, or None to detect.

    Raises:
        Whatever ``read`` raises (``OSError``): I/O failures are the caller's to report.
    """
    explicit = declared is not None
    head = bytes(read(0, HEAD_SIZE))[:HEAD_SIZE]
    size = len(head) if len(head) < HEAD_SIZE else max(size, len(head))
    extra: dict[int, bytes] = {}
    total = 0
    for _ in range(MAX_READS + 1):
        answer = _analyse(head, size, extra, declared, explicit, final=False)
        if isinstance(answer, ImageInfo):
            return answer
        if (len(extra) >= MAX_READS or total + answer.length > MAX_READ_TOTAL
                or (answer.offset in extra and len(extra[answer.offset]) >= answer.length)):
            break
        data = bytes(read(answer.offset, answer.length))[:answer.length]
        extra[answer.offset] = data
        total += len(data)
        if len(data) < answer.length:
            size = answer.offset + len(data)
    answer = _analyse(head, size, extra, declared, explicit, final=True)
    if isinstance(answer, ImageInfo):
        return answer
    return ImageInfo(format=ImageFormat.RAW, virtual_size=0, invalid=True,
                     problems=("the header needs more reads than the probe allows",))
