"""Copying a volume from one host to another (``TransferVolume``).

The image file travels as it is (a qcow2 stays a qcow2, its own holes stay holes) as a
sparse stream, compressed with zstd when both hosts have it (``backends.transfer``),
into a temporary name in the target pool, journaled before it is created, then
published whole there. With ``base`` only the top overlay travels and is rebased onto
the target host's copy of its base. A volume with a backing chain (and no ``base``), or
one asked for in another format, is first converted on the source host into a staging
file in its pool (reserved and journaled like the target's temporary), which travels
and is removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from backends import qemuimg
from backends.contract import (
    CommandFailed,
    Driver,
    InvalidRequest,
    NotSupported,
    StorageError,
    Transport,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from backends.drivers.dir.copies import COPY_FORMATS
from backends.drivers.dir.names import backing_reference
from backends.drivers.dir.progress import CopyProgress
from backends.model import ImageFormat, Pool, Progress, Volume
from backends.transfer import copy_file, has_zstd
from backends.transport.scanner import TEMP_PREFIX
from backends.transport.sparse import COMPRESS, DECOMPRESS
from console.inventory import Inventory
from console.jobs.locks import host_transport
from console.jobs.operations import Context, Operation, _as_os_error, _fmt, temp_name
from console.jobs.reservations import NoSpace

SPACE_MARGIN = 1 << 20  # beyond the source's allocation: file system rounding


@dataclasses.dataclass(frozen=True)
class TransferVolume(Operation):
    """Copy the volume ``volume`` of ``host`` into ``dest_name`` of ``dest_pool`` on
    ``dest_host`` (another host), between directory pools.

    The image file is sent as it is, sparse (only allocated ranges travel; ranges that
    hold only zeroes become holes), through ``zstd -1 -T0`` when both hosts have zstd
    (``compress`` False: never), with the stream's sha256 checked by the receiver.
    With ``base`` (a volume of the target pool that is a byte-identical copy of the
    source's backing file: same size and sha256, computed on each host) only the top
    overlay travels, and is rebased onto it (``qemu-img rebase -u``). Without it a
    volume with a backing chain is copied flattened, and with ``format`` (other than
    the source's) converted: ``qemu-img convert`` on the source host writes a staging
    file in the source pool (its space reserved there), which travels and is removed.
    An existing ``dest_name`` is refused unless ``overwrite`` (then replaced atomically
    at the end).
    """

    kind: ClassVar[str] = "transfer"

    dest_host: str = ""
    dest_pool: str = ""
    dest_name: str = ""
    overwrite: bool = False
    base: str | None = None
    compress: bool = True  # zstd on the wire when both hosts have it
    format: str | None = None  # the copy's; None: the source's (a chain is flattened)

    @property
    def stages(self) -> tuple[str, ...]:
        if self.base:
            return ("check", "verify base", "transfer", "rebase", "publish")
        # Whether a conversion is needed is known once the source is probed: a copy
        # that needs none passes its stage at once.
        return ("check", "convert", "transfer", "publish")

    def host_locks(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume),
                (self.dest_host, self.dest_pool, self.dest_name)]

    def reservation(self, inventory: Inventory) -> tuple[str, str, int]:
        return self.reservations(inventory)[0]

    def reservations(self, inventory: Inventory) -> tuple[tuple[str, str, int], int]:
        """(host, pool, bytes) reserved in the target pool for the whole job, and the
        bytes of the staging file reserved in the source pool while it is converted
        and sent (0: the file travels as it is). Probes the source once."""
        src_pool, _, source = self._source(inventory)
        out_fmt = self._converts_to(source)
        if out_fmt is None:
            return (self.dest_host, self.dest_pool, source.allocation + SPACE_MARGIN), 0
        need = self._staging_size(inventory, src_pool, out_fmt)
        return (self.dest_host, self.dest_pool, need), need

    def describe(self) -> str:
        return (f"copy {_where(self.host, self.pool, self.volume)} → "
                f"{_where(self.dest_host, self.dest_pool, self.dest_name)}")

    def results(self) -> list[tuple[str, str, str]]:
        return [(self.dest_host, self.dest_pool, self.dest_name)]

    def commands(self, inventory: Inventory) -> list[list[str]]:
        src_pool, _, source = self._source(inventory)
        dest, _, _ = self._target(inventory)
        temp = os.path.join(dest.path, temp_name(0, self.dest_name))
        sent = source.path
        out_fmt = self._converts_to(source)
        argvs = []
        if out_fmt is not None:
            sent = os.path.join(src_pool.path, temp_name(0, self.dest_name))
            argvs.append(qemuimg.convert(source.path, source.format, sent, out_fmt,
                                         out_of_order=True))
        argvs += [["sparse-send", sent, "|", *COMPRESS],
                  [*DECOMPRESS, "|", "sparse-receive", temp]]
        if out_fmt is not None:
            argvs.append(["rm", "--", sent])
        if self.base:
            base = inventory.probe_volume(self.dest_host, self.dest_pool, self.base)
            argvs.append(qemuimg.rebase(temp, ImageFormat.QCOW2,
                                        backing_reference(base, dest.path), base.format,
                                        unsafe=True))
        argvs.append(["mv", "-T", "--", temp, os.path.join(dest.path, self.dest_name)])
        return argvs

    def run(self, ctx: Context) -> None:
        ctx.stage(1, "check")
        inventory = ctx.inventory
        if self.dest_host == self.host:
            raise InvalidRequest("a copy between hosts needs two hosts: use a copy "
                                 "within the host", host=self.host, volume=self.volume)
        # The two hosts are asked at once: each question is a round trip to its host.
        # The helper threads run in copies of this context: the job's agent sessions.
        with ThreadPoolExecutor(2, thread_name_prefix="transfer-check") as both:
            on_source = both.submit(contextvars.copy_context().run, self._check_source,
                                    inventory)
            on_target = both.submit(contextvars.copy_context().run, self._check_target,
                                    inventory)
            src, source, src_zstd = on_source.result()
            dest, dst, dst_driver, dst_zstd = on_target.result()
        base = self._check_base(ctx, source, src, dest, dst, dst_driver)
        step = 3
        temp = temp_name(ctx.job_id, self.dest_name)
        temp_path = os.path.join(dest.path, temp)
        sent = source.path
        if not self.base:
            ctx.stage(2, "convert")
            out_fmt = self._converts_to(source)
            if out_fmt is not None:
                sent = self._convert(ctx, source, src, out_fmt)
        # Journaled before the file exists: a rollback on the target host finds it.
        ctx.remember(temp=temp, temp_pool=dest.name, temp_host=self.dest_host)
        ctx.stage(step, "transfer")
        compress = self.compress and src_zstd and dst_zstd
        try:
            result = copy_file(
                src, sent, dst, temp_path, compress=compress,
                progress=lambda done, total: ctx.progress(Progress(done=done, total=total,
                                                                   label="transfer")),
                should_cancel=ctx.should_cancel)
        finally:
            if sent != source.path:  # the staging file has travelled (or failed to)
                with contextlib.suppress(FileNotFoundError):
                    src.remove_file(sent)
                ctx.release_staging()
        ctx.remember(transfer={"size": result.size, "data_bytes": result.data_bytes,
                               "wire_bytes": result.wire_bytes, "sha256": result.sha256,
                               "zstd": result.compressed, "seconds": result.seconds})
        if base is not None:
            ctx.stage(step + 1, "rebase")
            argv = qemuimg.rebase(temp_path, ImageFormat.QCOW2,
                                  backing_reference(base, dest.path), base.format,
                                  unsafe=True)
            done = dst.run(argv, should_cancel=ctx.should_cancel)
            if done.returncode != 0:
                raise CommandFailed(f"qemu-img rebase failed: "
                                    f"{done.stderr.decode(errors='replace').strip()}",
                                    host=self.dest_host, pool=self.dest_pool,
                                    volume=self.dest_name)
        ctx.stage(len(self.stages), "publish")
        if ctx.should_cancel():
            return  # the runner sees the cancel and rolls back: nothing is published
        try:
            dst.publish(temp_path, os.path.join(dest.path, self.dest_name),
                        replace=self.overwrite)
        except FileExistsError:
            raise VolumeExists("the target appeared while copying; nothing was touched",
                               host=self.dest_host, pool=self.dest_pool,
                               volume=self.dest_name) from None
        inventory.refresh_quietly(dest)

    def rollback(self, ctx: Context) -> None:
        # The staging file on the source host, then the temporary on the target host.
        for key, default_host, default_pool in (
                ("staging", self.host, self.pool), ("temp", self.dest_host, self.dest_pool)):
            temp = ctx.resume.get(key)
            if not temp or not str(temp).startswith(TEMP_PREFIX):
                continue  # only ever a job's temporary file
            host = str(ctx.resume.get(f"{key}_host") or default_host)
            try:
                pool = ctx.inventory.pool(host, str(ctx.resume.get(f"{key}_pool") or
                                                    default_pool))
                transport = host_transport(ctx.inventory.driver(pool), host)
                with contextlib.suppress(FileNotFoundError):
                    transport.remove_file(os.path.join(pool.path, str(temp)))
            except StorageError as err:
                raise _as_os_error(err) from None

    # -- helpers ----------------------------------------------------------------------

    def _check_source(self, inventory: Inventory) -> tuple[Transport, Volume, bool]:
        """The source re-probed, readable and not written by a running QEMU."""
        src_pool, src, source = self._source(inventory)
        if source.error:
            raise InvalidRequest(f"cannot be read: {source.error}", host=self.host,
                                 pool=self.pool, volume=self.volume)
        if inventory.driver(src_pool).volume_in_use(source):
            raise VolumeBusy("a running QEMU holds it for writing: the copy would be torn",
                             host=self.host, pool=self.pool, volume=self.volume,
                             hint="shut the VM down, or snapshot it and copy the snapshot")
        return src, source, self.compress and has_zstd(src)

    def _check_target(self, inventory: Inventory) -> tuple[Pool, Transport, Driver, bool]:
        """The target pool, and no volume under the target name (unless overwrite)."""
        dest, dst, dst_driver = self._target(inventory)
        if not self.overwrite:
            with contextlib.suppress(VolumeNotFound):
                dst_driver.probe_volume(dest, self.dest_name)
                raise VolumeExists("the target exists; nothing was touched",
                                   host=self.dest_host, pool=self.dest_pool,
                                   volume=self.dest_name, hint="pass --overwrite to "
                                   "replace it")
        return dest, dst, dst_driver, self.compress and has_zstd(dst)

    def _source(self, inventory: Inventory) -> tuple[Pool, Transport, Volume]:
        pool = inventory.pool(self.host, self.pool)
        driver = inventory.driver(pool)
        transport = _dir_transport(driver, pool)
        return pool, transport, driver.probe_volume(pool, self.volume)

    def _target(self, inventory: Inventory) -> tuple[Pool, Transport, Driver]:
        pool = inventory.pool(self.dest_host, self.dest_pool)
        driver = inventory.driver(pool)
        return pool, _dir_transport(driver, pool), driver

    def _converts_to(self, source: Volume) -> ImageFormat | None:
        """The format the source is converted to on its host before it travels; None
        when the file travels as it is (``base``: only the overlay, as it is)."""
        where = {"host": self.host, "pool": self.pool, "volume": self.volume}
        out_fmt = _fmt(self.format) if self.format else None
        if self.base:
            if out_fmt is not None and out_fmt != source.format:
                raise InvalidRequest("--base ships the top overlay as it is: it cannot "
                                     "change its format", **where,
                                     hint="drop --format, or copy it flattened without "
                                          "--base")
            return None
        if out_fmt is not None and out_fmt not in COPY_FORMATS:
            raise InvalidRequest(f"cannot write {out_fmt} volumes", **where,
                                 hint="copy as raw or qcow2")
        if _has_chain(source):
            if source.chain.problem is not None:
                raise InvalidRequest(f"its backing chain is broken "
                                     f"({source.chain.problem}): it cannot be flattened",
                                     **where, hint="run check on the pool and mend it "
                                                   "first")
            return out_fmt or source.format
        return out_fmt if out_fmt not in (None, source.format) else None

    def _staging_size(self, inventory: Inventory, src_pool: Pool,
                      out_fmt: ImageFormat) -> int:
        """What the converted image takes, with a margin: ``qemu-img measure``'s
        required size. For raw it would say the virtual size; a sparse raw holds the
        chain's data, which the qcow2 measure bounds."""
        measured = ImageFormat.QCOW2 if out_fmt == ImageFormat.RAW else out_fmt
        return (inventory.driver(src_pool).measure_copy(src_pool, self.volume, measured)
                + SPACE_MARGIN)

    def _convert(self, ctx: Context, source: Volume, src: Transport,
                 out_fmt: ImageFormat) -> str:
        """Convert (flatten) the source into a staging file of its pool, with its space
        reserved there; returns the file's path on the source host."""
        inventory = ctx.inventory
        src_pool = inventory.pool(self.host, self.pool)
        need = self._staging_size(inventory, src_pool, out_fmt)
        what = "flattening it" if _has_chain(source) else f"converting it to {out_fmt}"
        try:
            ctx.reserve_staging(self.host, self.pool, need)
        except NoSpace as err:
            raise NoSpace(f"{what} needs room for a staging copy in its pool first: "
                          f"{err.what}", host=self.host,
                          pool=self.pool, volume=self.volume,
                          hint="free space in the source pool, or flatten or convert it "
                               "on a host with room and copy that") from None
        staging = temp_name(ctx.job_id, self.dest_name)
        path = os.path.join(src_pool.path, staging)
        ctx.remember(staging=staging, staging_pool=self.pool, staging_host=self.host)
        reporter = CopyProgress(ctx.progress, source.capacity, "convert")
        # Out of order is safe: nobody reads the staging file before it is whole.
        argv = qemuimg.convert(source.path, source.format, path, out_fmt,
                               out_of_order=True)
        done = src.run(argv, on_output=reporter.feed, should_cancel=ctx.should_cancel)
        if done.returncode != 0:
            raise CommandFailed(f"qemu-img convert failed: "
                                f"{done.stderr.decode(errors='replace').strip()}",
                                host=self.host, pool=self.pool, volume=self.volume,
                                hint="the staging file is removed; nothing was sent")
        reporter.finish()
        return path

    def _check_base(self, ctx: Context, source: Volume, src: Transport, dest: Pool,
                    dst: Transport, dst_driver: Driver) -> Volume | None:
        """The target's base, checked to be a byte-identical copy of the source's
        backing file; None without ``base``."""
        links = source.chain.links
        if not self.base:
            return None
        if len(links) < 2 or qemuimg.qemu_format(source.format) != "qcow2":
            raise InvalidRequest("--base needs a qcow2 volume with a backing file",
                                 host=self.host, pool=self.pool, volume=self.volume)
        base = dst_driver.probe_volume(dest, self.base)
        ctx.stage(2, "verify base")
        backing = links[1].path
        if src.lstat(backing).st_size != dst.lstat(base.path).st_size:
            raise InvalidRequest(f"{self.base!r} is not a copy of {backing}: the sizes "
                                 "differ", host=self.dest_host, pool=self.dest_pool,
                                 volume=self.base, hint="copy the base first")
        with ThreadPoolExecutor(2) as pool:  # each host reads its own file, at once
            here = pool.submit(contextvars.copy_context().run, src.sha256_file, backing,
                               should_cancel=ctx.should_cancel)
            there = pool.submit(contextvars.copy_context().run, dst.sha256_file, base.path,
                                should_cancel=ctx.should_cancel)
            if here.result() != there.result():
                raise InvalidRequest(f"{self.base!r} is not a byte-identical copy of "
                                     f"{backing} (sha256 differs)", host=self.dest_host,
                                     pool=self.dest_pool, volume=self.base,
                                     hint="copy the base first (a copy between hosts "
                                          "keeps the file as it is)")
        return base


def _has_chain(volume: Volume) -> bool:
    return volume.backing is not None or len(volume.chain.links) > 1


def _dir_transport(driver: Driver, pool: Pool) -> Transport:
    transport = getattr(driver, "transport", None)
    if not isinstance(transport, Transport):
        raise NotSupported("a copy between hosts works between directory pools",
                           host=pool.host, pool=pool.name)
    return transport


def _where(host: str, pool: str, name: str) -> str:
    return f"{host}:{os.path.join(pool, name)}"
