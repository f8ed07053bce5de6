"""paramiko, as the SSH transport imports it: without loading invoke up front.

paramiko's config module imports invoke only to run the ``Match exec`` lines of
~/.ssh/config, and invoke pulls in asyncio, unittest.mock and a YAML parser: about a
third of paramiko's import time, paid by every ``storage-console ls HOST:POOL``. Here
invoke is a stand-in until something asks it for a name (paramiko: ``invoke.run``, when
a ``Match exec`` line is evaluated); the real module is imported then.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _DeferredInvoke(types.ModuleType):
    """``invoke`` until first used: any attribute imports the real one."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("invoke") is self:
            del sys.modules["invoke"]
        return getattr(importlib.import_module("invoke"), name)


def _defer_invoke() -> None:
    if "invoke" in sys.modules or importlib.util.find_spec("invoke") is None:
        return  # loaded already, or absent (paramiko copes with that itself)
    sys.modules["invoke"] = _DeferredInvoke("invoke")


_defer_invoke()

import paramiko  # noqa: E402  (after the stand-in, which is the point)

__all__ = ["paramiko"]
