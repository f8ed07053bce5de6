"""``audit``: every command run on a host, newest first (the log beside the journal)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex

from console.commands import UsageError
from console.commands.text import printable, table
from console.config import journal_path


def cmd_audit(args: argparse.Namespace) -> int:
    from console.audit import AuditLog

    if args.limit < 1:
        raise UsageError("--limit: must be 1 or more")
    path = journal_path()
    # Nothing has run yet: say so without creating the log (this command only reads).
    entries = AuditLog(path).entries(host=args.host, limit=args.limit) \
        if path.exists() else []
    if args.json:
        print(json.dumps([dict(dataclasses.asdict(e), argv=list(e.argv)) for e in entries]))
        return 0
    if entries:
        rows = [("WHEN", "WHO", "HOST", "EXIT", "TIME", "COMMAND")]
        rows += [(datetime.datetime.fromtimestamp(e.when).isoformat(" ", "seconds"), e.who,
                  e.host, str(e.returncode), f"{e.duration:.2f}s",
                  printable(shlex.join(e.argv))) for e in entries]
        print(table(rows, {3, 4}))
    return 0
