"""The refusals an operation makes before it changes anything: a cancel already asked
for, a volume a running QEMU holds, a volume qemu-img must not open."""

from __future__ import annotations

from backends.contract import CancelCheck, Cancelled, Driver, InvalidRequest, VolumeBusy
from backends.model import ImageFormat, Volume


def check_cancel(should_cancel: CancelCheck | None, where: dict[str, str],
                 what: str) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled(f"{what} cancelled before it changed anything", **where)


def refuse_in_use(driver: Driver, volume: Volume, what: str) -> None:
    if driver.volume_in_use(volume):
        raise VolumeBusy(f"in use by a running QEMU (its file lock): it is not {what}",
                         host=volume.host, pool=volume.pool, volume=volume.name,
                         hint="stop the VM (or qemu-nbd) using it first")


def require_usable(volume: Volume, action: str) -> None:
    """Refuse volumes qemu-img must not open: damaged, encrypted, with an external
    data file, or with a backing chain the scanner would not follow."""
    info, problem = volume.info, None
    if volume.error:
        problem = volume.error
    elif info.invalid or info.truncated:
        problem = "its header is damaged (" + ("; ".join(info.problems) or "?") + ")"
    elif info.encrypted or volume.format == ImageFormat.LUKS:
        problem = "it is encrypted"
    elif info.data_file:
        problem = f"its data lies in an external file ({info.data_file!r}), never opened"
    elif info.unknown_incompatible:
        problem = "it uses qcow2 features this console does not know"
    elif volume.chain.problem is not None:
        problem = (f"its backing chain is broken ({volume.chain.problem}: "
                   f"{volume.chain.problem_detail})")
    if problem:
        raise InvalidRequest(f"cannot {action} it: {problem}", host=volume.host,
                             pool=volume.pool, volume=volume.name,
                             hint="check and fix the volume first")
