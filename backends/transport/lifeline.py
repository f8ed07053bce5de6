"""Commands that die with the process that started them (Linux ``PR_SET_PDEATHSIG``).

A job's qemu-img or zstd must not outlive a console or command line killed with -9: it
would go on writing a temporary file that the next start removes (into an unlinked
inode, for nothing), and hold its source open. The child asks the kernel for SIGKILL
when its parent goes, between fork and exec.

The kernel sends it when the *thread* that forked the child ends, not the process: only
a thread that waits for its child may start one this way. Every caller of the local
transport does (a job's worker waits for its command), so that holds.

ctypes is loaded by ``enable()`` only, which the job runner calls: listings never import
it, and a process that never runs jobs starts its commands as before.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_prctl: Callable[[int, int, int, int, int], int] | None = None


def enable() -> bool:
    """Start every later command with ``preexec()``; False where prctl is missing."""
    global _prctl
    if _prctl is not None:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here, not at the top: see the module's docstring
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    _prctl = prctl  # resolved here, in the parent: the child only calls it
    return True


def enabled() -> bool:
    return _prctl is not None


def preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess`` that makes the child die with this process's
    calling thread; None until ``enable()`` succeeded."""
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent
