"""libvirt's default event loop, run in one daemon thread for the whole process.

libvirt delivers events (and keeps remote connections alive) only through an event
implementation registered before a connection is opened, and only while something runs
its loop. ``EventLoop.ensure()`` registers the default implementation once and starts the
thread; ``stop()`` ends the thread (the registration itself cannot be undone in libvirt,
so a later ``ensure()`` simply starts a new thread on it).
"""

from __future__ import annotations

import threading
from typing import Any


class EventLoop:
    _lock = threading.Lock()
    _registered = False
    _thread: threading.Thread | None = None
    _stopping = False

    @classmethod
    def ensure(cls, libvirt: Any) -> None:
        """Register the default implementation (once) and run its loop (if not running)."""
        with cls._lock:
            if not cls._registered:
                libvirt.virEventRegisterDefaultImpl()
                cls._registered = True
            if cls._thread is not None and cls._thread.is_alive():
                return
            cls._stopping = False
            cls._thread = threading.Thread(target=cls._run, args=(libvirt,),
                                           name="libvirt-events", daemon=True)
            cls._thread.start()

    @classmethod
    def _run(cls, libvirt: Any) -> None:
        while not cls._stopping:
            try:
                libvirt.virEventRunDefaultImpl()
            except libvirt.libvirtError:
                if cls._stopping:
                    break

    @classmethod
    def stop(cls, libvirt: Any, timeout: float = 2.0) -> None:
        """Stop the loop's thread: a zero timeout wakes ``virEventRunDefaultImpl``."""
        with cls._lock:
            thread = cls._thread
            if thread is None:
                return
            cls._stopping = True
            timer = libvirt.virEventAddTimeout(0, lambda _timer, _opaque: None, None)
        thread.join(timeout)
        libvirt.virEventRemoveTimeout(timer)
        with cls._lock:
            if not thread.is_alive():
                cls._thread = None

    @classmethod
    def running(cls) -> bool:
        return cls._thread is not None and cls._thread.is_alive()
