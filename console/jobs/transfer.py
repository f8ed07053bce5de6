"""Copying a volume from one host to another (``TransferVolume``).

The image file travels as it is (a qcow2 stays a qcow2, its own holes stay holes) as a
sparse stream, compressed with zstd when both hosts have it (``backends.transfer``),
into a temporary name in the target pool, journaled before it is created, then
published whole there. With ``base`` only the top overlay travels and is rebased onto
the target host's copy of its base.
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
from backends.drivers.dir import backing_reference
from backends.model import ImageFormat, Pool, Progress, Volume
from backends.transfer import copy_file, has_zstd
from backends.transport.scanner import TEMP_PREFIX
from backends.transport.sparse import COMPRESS, DECOMPRESS
from console.inventory import Inventory
from console.jobs.locks import host_transport
from console.jobs.operations import Context, Operation, _as_os_error, temp_name

SPACE_MARGIN = 1 << 20  # beyond the source's allocation: file system rounding


@dataclasses.dataclass(frozen=True)
class TransferVolume(Operation):
    """Copy the volume ``volume`` of ``host`` into ``dest_name`` of ``dest_pool`` on
    ``dest_host`` (another host), between directory pools.

    The image file is sent as it is, sparse (only allocated ranges travel; ranges that
    hold only zeroes become holes), through ``zstd -1 -T0`` when both hosts have zstd
    (``compress`` False: never), with the stream's sha256 checked by the receiver.
    A volume with a backing chain needs ``base``: a volume of the target pool that is a
    byte-identical copy of the source's backing file (same size and sha256, computed on
    each host): only the top overlay travels, and is rebased onto it (``qemu-img rebase
    -u``). Without ``base`` such a volume is refused. An existing ``dest_name`` is
    refused unless ``overwrite`` (then replaced atomically at the end).
    """

    kind: ClassVar[str] = "transfer"

    dest_host: str = ""
    dest_pool: str = ""
    dest_name: str = ""
    overwrite: bool = False
    base: str | None = None
    compress: bool = True  # zstd on the wire when both hosts have it

    @property
    def stages(self) -> tuple[str, ...]:
        if self.base:
            return ("check", "verify base", "transfer", "rebase", "publish")
        return ("check", "transfer", "publish")

    def host_locks(self) -> list[tuple[str, str, str]]:
        return [(self.host, self.pool, self.volume),
                (self.dest_host, self.dest_pool, self.dest_name)]

    def reservation(self, inventory: Inventory) -> tuple[str, str, int]:
        source = self._source(inventory)[2]
        return (self.dest_host, self.dest_pool, source.allocation + SPACE_MARGIN)

    def describe(self) -> str:
        return (f"copy {_where(self.host, self.pool, self.volume)} → "
                f"{_where(self.dest_host, self.dest_pool, self.dest_name)}")

    def commands(self, inventory: Inventory) -> list[list[str]]:
        _, _, source = self._source(inventory)
        dest, _, _ = self._target(inventory)
        temp = os.path.join(dest.path, temp_name(0, self.dest_name))
        argvs = [["sparse-send", source.path, "|", *COMPRESS],
                 [*DECOMPRESS, "|", "sparse-receive", temp]]
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
        step = 3 if self.base else 2
        temp = temp_name(ctx.job_id, self.dest_name)
        temp_path = os.path.join(dest.path, temp)
        # Journaled before the file exists: a rollback on the target host finds it.
        ctx.remember(temp=temp, temp_pool=dest.name, temp_host=self.dest_host)
        ctx.stage(step, "transfer")
        compress = self.compress and src_zstd and dst_zstd
        result = copy_file(
            src, source.path, dst, temp_path, compress=compress,
            progress=lambda done, total: ctx.progress(Progress(done=done, total=total,
                                                               label="transfer")),
            should_cancel=ctx.should_cancel)
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
        temp = ctx.resume.get("temp")
        if not temp or not str(temp).startswith(TEMP_PREFIX):
            return  # only ever a job's temporary file
        host = str(ctx.resume.get("temp_host") or self.dest_host)
        try:
            pool = ctx.inventory.pool(host, str(ctx.resume.get("temp_pool") or
                                                self.dest_pool))
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

    def _check_base(self, ctx: Context, source: Volume, src: Transport, dest: Pool,
                    dst: Transport, dst_driver: Driver) -> Volume | None:
        """The target's base, checked to be a byte-identical copy of the source's
        backing file; None without ``base``. A chain without ``base`` is refused."""
        links = source.chain.links
        if not self.base:
            if source.backing is not None or len(links) > 1:
                raise InvalidRequest(
                    "it has a backing chain, and a copy between hosts ships the image "
                    "file as it is", host=self.host, pool=self.pool, volume=self.volume,
                    hint="copy its base first and give it as --base, or make a "
                         "standalone copy on this host first")
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


def _dir_transport(driver: Driver, pool: Pool) -> Transport:
    transport = getattr(driver, "transport", None)
    if not isinstance(transport, Transport):
        raise NotSupported("a copy between hosts works between directory pools",
                           host=pool.host, pool=pool.name)
    return transport


def _where(host: str, pool: str, name: str) -> str:
    return f"{host}:{os.path.join(pool, name)}"
