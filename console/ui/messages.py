"""Typed messages that thread workers and widgets post to the screens.

Workers never touch widgets: they post these (``post_message`` is thread-safe) and the
screen handles them with ``@on``. Floods collapse: a newer message replaces a queued one
about the same thing (``can_replace``).
"""

from __future__ import annotations

from textual.message import Message

from backends.model import Progress
from console.cache import VolumeRow
from console.jobs.journal import JobRecord


class PoolRefreshed(Message):
    """A pool was re-read from disk and written to the cache (or failed: ``error``)."""

    def __init__(self, host: str, pool: str, error: str | None = None) -> None:
        super().__init__()
        self.host = host
        self.pool = pool
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, PoolRefreshed) and message.host == self.host
                and message.pool == self.pool and message.error is None)


class HostChanged(Message):
    """A host's state changed (connecting, online, offline, ...) or it was added or
    removed; its pools may have changed too. ``error``: why it is not online."""

    def __init__(self, host: str, error: str | None = None) -> None:
        super().__init__()
        self.host = host
        self.error = error


class PoolEvent(Message):
    """A host reported a pool event (libvirt: defined, started, refreshed, ...)."""

    def __init__(self, host: str, pool: str, kind: str) -> None:
        super().__init__()
        self.host = host
        self.pool = pool
        self.kind = kind

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PoolEvent) and message.host == self.host


class RefreshFinished(Message):
    """A whole refresh ended; ``error`` when it could not run at all."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error = error


class VolumeHighlighted(Message):
    """The volume table's cursor is on ``volume`` (``None``: nothing to show)."""

    def __init__(self, host: str | None, pool: str | None, volume: VolumeRow | None) -> None:
        super().__init__()
        self.host = host
        self.pool = pool
        self.volume = volume

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, VolumeHighlighted)


class OperationProgress(Message):
    """Progress of a create or delete running in a worker."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, OperationProgress)


class OperationFailed(Message):
    """A worker's operation raised a ``StorageError``; ``text`` is its one-line message."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class JobUpdated(Message):
    """This console's runner reports a job (from a job's thread, ~10 times a second)."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__()
        self.job = job

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobUpdated) and message.job.id == self.job.id


class JobsPolled(Message):
    """The newest jobs as the journal has them; posted only when they changed."""

    def __init__(self, jobs: list[JobRecord]) -> None:
        super().__init__()
        self.jobs = jobs

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsPolled)


class JobsRecovered(Message):
    """At start: jobs whose process died, now marked interrupted."""

    def __init__(self, jobs: list[JobRecord]) -> None:
        super().__init__()
        self.jobs = jobs


class JobSubmitted(Message):
    """A dialog's job is in the journal (durable); the dialog closes."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__()
        self.job = job


class JobActionFailed(Message):
    """Cancel, resume or roll back was refused (or the journal cannot be read);
    ``text`` says why."""

    def __init__(self, text: str, *, job_id: int | None = None) -> None:
        super().__init__()
        self.text = text
        self.job_id = job_id
