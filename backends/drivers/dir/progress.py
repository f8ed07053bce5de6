"""Progress of an operation as ``Progress``: from ``qemu-img -p`` output, or from a
byte stream's (done, total)."""

from __future__ import annotations

from collections.abc import Callable

from backends import qemuimg
from backends.contract import ProgressCallback
from backends.model import Progress


class CopyProgress:
    """Turns ``qemu-img -p`` output into ``Progress`` in bytes of the source's size,
    reporting only when the percentage goes up."""

    def __init__(self, callback: ProgressCallback | None, total: int, label: str) -> None:
        self.callback = callback
        self.total = total
        self.label = label
        self.parser = qemuimg.ProgressParser()
        self.last = -1.0

    def feed(self, chunk: bytes) -> None:
        percent = self.parser.feed(chunk)
        if percent is not None and percent > self.last:
            self._report(percent)

    def finish(self) -> None:
        if self.last < 100.0:
            self._report(100.0)

    def _report(self, percent: float) -> None:
        self.last = percent
        if self.callback is not None:
            done = self.total if percent >= 100.0 else int(self.total * percent / 100.0)
            self.callback(Progress(1, 1, done, self.total, self.label))


def bytes_progress(progress: ProgressCallback | None,
                   label: str) -> Callable[[int, int], None] | None:
    """A byte stream's (done, total) as ``Progress`` labelled ``label``."""
    if progress is None:
        return None
    report = progress

    def bytes_done(done: int, total: int) -> None:
        report(Progress(1, 1, done, total, label))

    return bytes_done
