"""The sub-commands of ``storage-console``, one concept per module; ``console.cli`` parses
the command line and imports only the module a command needs (``ls`` must start fast:
no Textual, no job engine).

Every error is one line on stderr naming what failed, with exit status 2; a handler
raises ``UsageError`` (or ``ConfigError``, ``StorageError``) and ``console.cli.main``
prints it.
"""

from __future__ import annotations

PROG = "storage-console"


class UsageError(Exception):
    pass
