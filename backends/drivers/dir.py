"""A directory of image files is a pool; its regular files are its volumes.

Works over any ``Transport``: the listing and probing happen in the transport's
scanner (in-process locally, one round trip remotely), and this module turns its plain
records into model objects.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from typing import Any

from backends import qemuimg
from backends.contract import (
    Capabilities,
    CommandFailed,
    Driver,
    InvalidRequest,
    PoolUnavailable,
    ProgressCallback,
    StorageError,
    Transport,
    VolumeExists,
    VolumeNotFound,
)
from backends.model import (
    Capacity,
    Chain,
    ChainLink,
    ImageFormat,
    ImageInfo,
    LinkProblem,
    Pool,
    PoolScan,
    Progress,
    Volume,
)
from backends.transport.scanner import TEMP_PREFIX

MAX_NAME_BYTES = 255


def validate_name(name: str, *, pool: Pool) -> None:
    """Refuse names that are not one plain file name in the pool's directory."""
    problem = None
    if not name:
        problem = "the name is empty"
    elif name in (".", "..") or "/" in name or "\0" in name:
        problem = "a volume name cannot be '.', '..' or contain '/' or NUL"
    elif name.startswith(TEMP_PREFIX):
        problem = f"names starting with {TEMP_PREFIX!r} are reserved for jobs in progress"
    elif len(os.fsencode(name)) > MAX_NAME_BYTES:
        problem = f"the name is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise InvalidRequest(problem, host=pool.host, pool=pool.name, volume=name,
                             hint="choose another name")


def capacity_from_statvfs(vfs: dict[str, int]) -> Capacity:
    frsize = vfs["frsize"]
    total = vfs["blocks"] * frsize
    return Capacity(capacity=total, allocation=total - vfs["bfree"] * frsize,
                    available=vfs["bavail"] * frsize)


# Enum lookups by value go through EnumMeta.__call__: a dict is ~10x cheaper per volume.
_FORMATS = {str(f): f for f in ImageFormat}
_LINK_PROBLEMS = {str(p): p for p in LinkProblem}


def image_info(record: dict[str, Any] | None, size: int) -> ImageInfo:
    if record is None:
        return ImageInfo(format=ImageFormat.RAW, virtual_size=size)
    fields = dict(record)
    fields["format"] = _FORMATS[fields["format"]]
    fields["problems"] = tuple(fields.get("problems") or ())
    return ImageInfo(**fields)


def chain_from(record: dict[str, Any], leaf_path: str, info: ImageInfo) -> Chain:
    links = [ChainLink(leaf_path, str(info.format), info.virtual_size)]
    links += [ChainLink(link["path"], link["format"], link["capacity"])
              for link in record.get("links", ())]
    problem = record.get("problem")
    return Chain(
        links=tuple(links),
        problem=_LINK_PROBLEMS[problem] if problem else None,
        problem_path=record.get("problem_path"),
        problem_detail=record.get("problem_detail", ""),
    )


def volume_from_entry(pool: Pool, entry: dict[str, Any]) -> Volume:
    size = int(entry.get("size", 0))
    info = image_info(entry.get("info"), size)
    chain = chain_from(entry.get("chain") or {}, entry["path"], info)
    backing: str | None = None
    if info.backing_file:
        backing = chain.links[1].path if chain.depth > 1 else (
            (entry.get("chain") or {}).get("backing") or info.backing_file)
    return Volume(
        host=pool.host,
        pool=pool.name,
        name=entry["name"],
        path=entry["path"],
        format=info.format,
        capacity=info.virtual_size,
        allocation=int(entry.get("allocation", 0)),
        mtime=float(entry.get("mtime", 0.0)),
        info=info,
        chain=chain,
        backing=backing,
        backing_format=info.backing_format,
        readonly=bool(entry.get("readonly", False)),
        error=entry.get("error"),
    )


class DirDriver(Driver):
    """Directory pools over one transport; ``roots`` bound where backings may lie."""

    capabilities = Capabilities(
        create=True,
        delete=True,
        create_formats=(ImageFormat.RAW, ImageFormat.QCOW2),
        backing=True,
    )

    def __init__(self, transport: Transport, roots: tuple[str, ...] = ()) -> None:
        self.transport = transport
        self.roots = roots

    def _roots(self, pool: Pool) -> tuple[str, ...]:
        return self.roots or (pool.path,)

    def scan_pool(self, pool: Pool) -> PoolScan:
        try:
            listing = self.transport.scan_directory(pool.path, self._roots(pool))
        except FileNotFoundError:
            raise PoolUnavailable(
                f"directory {pool.path} does not exist", host=pool.host, pool=pool.name,
                hint="create it or remove the pool from the config") from None
        except NotADirectoryError:
            raise PoolUnavailable(f"{pool.path} is not a directory", host=pool.host,
                                  pool=pool.name) from None
        except PermissionError:
            raise PoolUnavailable(f"permission denied listing {pool.path}", host=pool.host,
                                  pool=pool.name, hint="run as a user who can read it") from None
        except OSError as err:
            raise PoolUnavailable(f"cannot list {pool.path}: {err.strerror}",
                                  host=pool.host, pool=pool.name) from None
        volumes = []
        skipped = []
        for entry in listing["entries"]:
            if entry["kind"] == "file":
                volumes.append(volume_from_entry(pool, entry))
            else:
                skipped.append(f"{entry['name']} ({entry['kind']})")
        capacity = capacity_from_statvfs(listing["statvfs"])
        committed = sum(v.capacity for v in volumes)
        capacity = Capacity(capacity.capacity, capacity.allocation, capacity.available,
                            committed)
        return PoolScan(
            pool=Pool(pool.host, pool.name, pool.kind, pool.path, capacity),
            volumes=tuple(volumes),
            skipped=tuple(skipped),
        )

    def probe_volume(self, pool: Pool, name: str) -> Volume:
        validate_name(name, pool=pool)
        path = os.path.join(pool.path, name)
        entry = self.transport.probe_volume(path, self._roots(pool))
        if entry["kind"] == "missing":
            raise VolumeNotFound("the volume is not on disk", host=pool.host, pool=pool.name,
                                 volume=name, hint="refresh the pool")
        if entry["kind"] != "file":
            raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume",
                                 host=pool.host, pool=pool.name, volume=name)
        entry["name"] = name
        return volume_from_entry(pool, entry)

    def pool_capacity(self, pool: Pool) -> Capacity:
        try:
            vfs = self.transport.statvfs(pool.path)
        except OSError as err:
            raise PoolUnavailable(f"cannot read space of {pool.path}: {err.strerror}",
                                  host=pool.host, pool=pool.name) from None
        return capacity_from_statvfs({"frsize": vfs.f_frsize, "blocks": vfs.f_blocks,
                                      "bavail": vfs.f_bavail, "bfree": vfs.f_bfree})

    def create_volume(
        self,
        pool: Pool,
        name: str,
        fmt: ImageFormat,
        capacity: int,
        *,
        backing: Volume | None = None,
        progress: ProgressCallback | None = None,
    ) -> Volume:
        validate_name(name, pool=pool)
        where = {"host": pool.host, "pool": pool.name, "volume": name}
        if fmt not in self.capabilities.create_formats:
            raise InvalidRequest(f"cannot create {fmt} volumes here", **where,
                                 hint="use raw or qcow2")
        if capacity <= 0 and backing is None:
            raise InvalidRequest("the size must be larger than 0", **where)
        if backing is not None and fmt != ImageFormat.QCOW2:
            raise InvalidRequest("only qcow2 volumes can have a backing volume", **where)
        final = os.path.join(pool.path, name)
        if self.transport.probe_path(final, None)["kind"] != "missing":
            raise VolumeExists("a file with that name already exists", **where,
                               hint="choose another name; nothing was changed")
        # Built under a temporary name and published by link(), which refuses to
        # replace anything, so a half-built image never carries the final name.
        temp = os.path.join(pool.path, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}"[:255])
        back_name = back_fmt = None
        if backing is not None:
            if backing.chain.problem is not None or backing.error:
                raise InvalidRequest(f"backing volume {backing.name!r} is not usable",
                                     **where, hint="choose a healthy backing volume")
            same_dir = os.path.dirname(backing.path) == os.path.dirname(final)
            back_name = backing.name if same_dir else backing.path
            back_fmt = str(backing.format)
            if capacity <= 0:
                capacity = backing.capacity
        argv = qemuimg.create(temp, fmt, capacity, backing=back_name, backing_format=back_fmt)
        if progress:
            progress(Progress(1, 2, 0, capacity, "create"))
        result = self.transport.run(argv)
        try:
            if result.returncode != 0:
                raise CommandFailed(
                    "qemu-img create failed: "
                    + result.stderr.decode(errors="replace").strip().splitlines()[-1:][0]
                    if result.stderr.strip() else f"qemu-img create exited {result.returncode}",
                    **where)
            if progress:
                progress(Progress(2, 2, 0, capacity, "publish"))
            self._publish(temp, final, pool, name)
        except BaseException:
            self._discard(temp)
            raise
        if progress:
            progress(Progress(2, 2, capacity, capacity, "done"))
        return self.probe_volume(pool, name)

    def _publish(self, temp: str, final: str, pool: Pool, name: str) -> None:
        try:
            self.transport.publish(temp, final)
        except FileExistsError:
            raise VolumeExists("a file with that name appeared meanwhile", host=pool.host,
                               pool=pool.name, volume=name, hint="nothing was changed") from None
        except OSError as err:
            raise StorageError(f"cannot publish the new volume: {err.strerror}",
                               host=pool.host, pool=pool.name, volume=name) from None

    def _discard(self, temp: str) -> None:
        try:
            self.transport.remove_file(temp)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise

    def holds_data(self, volume: Volume) -> bool:
        """Whether the volume's own clusters hold any data (re-read from disk)."""
        if volume.format == ImageFormat.QCOW2:
            result = self.transport.run(qemuimg.allocation_map(volume.path, "qcow2"))
            if result.returncode != 0:
                return True  # unknown: treat as precious
            extents = json.loads(result.stdout or b"[]")
            return any(e.get("data") and e.get("depth", 0) == 0 for e in extents)
        if volume.format in (ImageFormat.RAW, ImageFormat.ISO):
            try:
                return volume.allocation > 0 and self.transport.has_data(volume.path)
            except OSError:
                return True  # unknown: treat as precious
        return volume.allocation > 0

    def delete_volume(self, pool: Pool, name: str) -> None:
        validate_name(name, pool=pool)
        path = os.path.join(pool.path, name)
        entry = self.transport.probe_path(path, None)
        if entry["kind"] == "missing":
            raise VolumeNotFound("the volume is already gone", host=pool.host, pool=pool.name,
                                 volume=name)
        if entry["kind"] != "file":
            raise InvalidRequest(f"{path} is a {entry['kind']}, not a volume: not removed",
                                 host=pool.host, pool=pool.name, volume=name)
        try:
            self.transport.remove_file(path)
        except OSError as err:
            raise StorageError(f"cannot remove {path}: {err.strerror}", host=pool.host,
                               pool=pool.name, volume=name) from None
