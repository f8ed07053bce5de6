"""File systems inside raw images: what an ext2/3/4 superblock says, and the commands
that check and grow one.

Stdlib only and free of I/O: callers hand in a ``read(offset, length)`` over the image
(a local ``os.pread``, or a transport's read on another host), as ``backends.probe``
does. Only a file system that starts at offset 0 of the image is seen: one inside a
partition is the guest's business.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

Read = Callable[[int, int], bytes]

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT_MAGIC = 0xEF53

# Feature bits (e2fsprogs lib/ext2fs/ext2_fs.h).
_COMPAT_HAS_JOURNAL = 0x0004
_INCOMPAT_EXTENTS = 0x0040
_INCOMPAT_64BIT = 0x0080
_INCOMPAT_FLEX_BG = 0x0200
_MAX_LOG_BLOCK_SIZE = 6  # 64 KiB blocks, the largest ext4 allows


@dataclass(frozen=True)
class ExtFilesystem:
    """An ext2/3/4 file system at offset 0: ``size`` bytes = ``block_count`` blocks."""

    kind: str  # "ext2", "ext3" or "ext4" (as blkid names them, from the feature bits)
    block_size: int
    block_count: int
    bits64: bool = False

    @property
    def size(self) -> int:
        return self.block_size * self.block_count


def parse_ext_superblock(sb: bytes) -> ExtFilesystem | None:
    """The file system an ext superblock (the 1024 bytes at offset 1024) describes, or
    None when it is not one (wrong magic, short, nonsensical sizes)."""
    if len(sb) < SUPERBLOCK_SIZE:
        return None
    (magic,) = struct.unpack_from("<H", sb, 0x38)
    if magic != EXT_MAGIC:
        return None
    (blocks_lo,) = struct.unpack_from("<I", sb, 0x04)
    (log_block_size,) = struct.unpack_from("<I", sb, 0x18)
    compat, incompat = struct.unpack_from("<II", sb, 0x5C)
    if log_block_size > _MAX_LOG_BLOCK_SIZE:
        return None
    bits64 = bool(incompat & _INCOMPAT_64BIT)
    # The high half of the block count exists only with the 64bit feature; without it
    # the field is not part of the superblock and may hold anything.
    blocks_hi = struct.unpack_from("<I", sb, 0x150)[0] if bits64 else 0
    block_count = blocks_hi << 32 | blocks_lo
    if block_count == 0:
        return None
    if incompat & (_INCOMPAT_EXTENTS | _INCOMPAT_64BIT | _INCOMPAT_FLEX_BG):
        kind = "ext4"
    elif compat & _COMPAT_HAS_JOURNAL:
        kind = "ext3"
    else:
        kind = "ext2"
    return ExtFilesystem(kind, 1024 << log_block_size, block_count, bits64)


def ext_filesystem(read: Read) -> ExtFilesystem | None:
    """The ext2/3/4 file system starting at offset 0 of an image, or None."""
    return parse_ext_superblock(read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE))


def ext_filesystem_size(read: Read) -> int | None:
    """Bytes of the ext2/3/4 file system starting at offset 0 of an image, or None."""
    fs = ext_filesystem(read)
    return fs.size if fs else None


def has_boot_signature(first_sector: bytes) -> bool:
    """Whether sector 0 ends in 0x55AA: a partition table (MBR, or GPT's protective
    MBR) or a boot sector, so a file system, if any, does not start at offset 0."""
    return len(first_sector) >= 512 and first_sector[510:512] == b"\x55\xaa"


def e2fsck(path: str) -> list[str]:
    """Check and fix, forced even when clean: resize2fs refuses a file system that was not
    checked since it was last mounted. Exit 0 clean, 1 (or 2) fixed, 4+ failed, 8 also
    when the file system is mounted (a loop mount of the image is noticed)."""
    return ["e2fsck", "-f", "-y", "--", path]


def resize2fs(path: str) -> list[str]:
    """Grow the file system in the image file ``path`` to the file's size."""
    return ["resize2fs", "--", path]


E2FSCK_FIXED = frozenset({0, 1, 2})  # clean, or errors corrected
