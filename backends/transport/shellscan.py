"""Listing a pool on a host without python3: POSIX and GNU tools over a transport's
commands, the probing done here.

Slower than the agent (a command per file header, and per backing link), but the same
records as ``scanner``: one ``find`` lists the directory, ``dd`` reads each header
without following a symlink or blocking on a FIFO (``iflag=nofollow,nonblock``), and
``probe`` and ``scanner.ChainResolver`` run in this process. What it cannot see: QEMU's
lock ("in use" is reported as not in use).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

from backends.contract import CommandResult
from backends.probe import probe as probe_image
from backends.transport.scanner import (
    TEMP_PREFIX,
    ChainResolver,
    Entry,
    file_kind,
    info_record,
    inside_roots,
)

READ_AHEAD = 64 << 10  # the first read of a header fetches this much: most probes need no more
_TYPES = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "p": stat.S_IFIFO,
          "s": stat.S_IFSOCK, "b": stat.S_IFBLK, "c": stat.S_IFCHR}
# find's fields per entry, NUL-terminated: name, type, size, 512-byte blocks, mtime,
# permission bits, inode, device.
_FIND_FORMAT = r"%f\0%y\0%s\0%b\0%T@\0%m\0%i\0%D\0"
_FIND_FIELDS = 8
_SCAN_SCRIPT = ('cd -P -- "$1" || exit 1; stat -f -c "%S %b %a %f" . || exit 1; '
                'printf "%s\\0" "$PWD"; exec find . -mindepth 1 -maxdepth 1 -printf "$2"')

Run = Callable[[list[str]], CommandResult]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class ShellScanner:
    """``scanner``'s functions for a host reached through ``run`` (argv in, result out)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def _check(self, argv: list[str], path: str) -> CommandResult:
        result = self._run(argv)
        if result.returncode != 0:
            message = _decode(result.stderr).strip().splitlines()
            text = message[-1] if message else f"{argv[0]} exited with {result.returncode}"
            code = errno.ENOENT if "No such file" in text else errno.EIO
            raise OSError(code, text, path)
        return result

    def lstat(self, path: str) -> os.stat_result:
        out = self._check(["stat", "-c", "%f %i %d %h %u %g %s %.9X %.9Y %.9Z %o %b", "--",
                           path], path).stdout.split()
        ints = [int(out[0], 16), *(int(x) for x in out[1:7])]
        times = []
        for text in out[7:10]:
            seconds, _, fraction = text.partition(b".")
            times.append((int(seconds), int(fraction.ljust(9, b"0")[:9] or b"0")))
        return os.stat_result((
            *ints, *(sec for sec, _ in times),
            *(sec + ns * 1e-9 for sec, ns in times),  # as os.stat computes its floats
            *(sec * 10**9 + ns for sec, ns in times), int(out[10]), int(out[11]), 0))

    def statvfs(self, path: str) -> os.statvfs_result:
        out = self._check(["stat", "-f", "-c", "%s %S %b %f %a %c %d %d 0 %l", "--", path],
                          path).stdout.split()
        return os.statvfs_result(tuple(int(x) for x in out))

    def read_bytes(self, path: str, offset: int, length: int) -> bytes:
        return self._check(["dd", f"if={path}", "iflag=nofollow,nonblock,skip_bytes,count_bytes",
                            f"skip={offset}", f"count={length}", "bs=64K", "status=none"],
                           path).stdout

    def realpath(self, path: str) -> str:
        result = self._run(["readlink", "-m", "--", path])
        return _decode(result.stdout.rstrip(b"\n")) if result.returncode == 0 else path

    def islink(self, path: str) -> bool:
        return self._run(["test", "-h", path]).returncode == 0

    def _probe_file(self, path: str, st: os.stat_result, declared: str | None) -> Entry:
        result: Entry = {"size": st.st_size, "allocation": st.st_blocks * 512,
                         "mtime": st.st_mtime, "readonly": not (st.st_mode & 0o222),
                         "info": None, "error": None}
        cache: dict[int, bytes] = {}

        def read(offset: int, length: int) -> bytes:
            if offset + length <= READ_AHEAD and st.st_size:
                if 0 not in cache:
                    cache[0] = self.read_bytes(path, 0, READ_AHEAD)
                return cache[0][offset:offset + length]
            return self.read_bytes(path, offset, length)

        try:
            result["info"] = info_record(probe_image(read, st.st_size, declared))
        except OSError as err:
            result["error"] = f"cannot read: {err.strerror}"
        return result

    def probe_path(self, path: str, declared: str | None) -> Entry:
        try:
            st = self.lstat(path)
        except OSError as err:
            if err.errno == errno.ENOENT:
                return {"kind": "missing", "path": path}
            return {"kind": "error", "path": path, "error": err.strerror}
        kind = file_kind(st.st_mode)
        if kind != "file":
            return {"kind": kind, "path": path}
        entry = self._probe_file(path, st, declared)
        entry.update(kind="file", path=path)
        return entry

    def _resolver(self, roots: tuple[str, ...], known: dict[str, Entry] | None = None
                  ) -> ChainResolver:
        return ChainResolver(roots, known, probe=self.probe_path, realpath=self.realpath,
                             islink=self.islink)

    def probe_volume(self, path: str, roots: tuple[str, ...]) -> Entry:
        entry = self.probe_path(path, None)
        entry["name"] = os.path.basename(path)
        if entry["kind"] == "file":
            entry["chain"] = self._resolver(roots).chain(path, entry.get("info"))
        return entry

    def scan_directory(self, path: str, roots: tuple[str, ...]) -> dict[str, Any]:
        out = self._check(["sh", "-c", _SCAN_SCRIPT, "sc-scan", path, _FIND_FORMAT],
                          path).stdout
        vfs_line, _, rest = out.partition(b"\n")
        frsize, blocks, bavail, bfree = (int(x) for x in vfs_line.split())
        real_bytes, _, listing = rest.partition(b"\0")
        real = _decode(real_bytes)
        roots = tuple(roots) or (real,)
        fields = listing.split(b"\0")[:-1]
        records = sorted((fields[i:i + _FIND_FIELDS]
                          for i in range(0, len(fields), _FIND_FIELDS)),
                         key=lambda f: _decode(f[0]))
        entries: list[Entry] = []
        probed: dict[str, Entry] = {}
        for name_b, kind_b, size, blocks512, mtime, perms, ino, dev in records:
            name = _decode(name_b)
            full = os.path.join(real, name)
            entry: Entry = {"name": name, "path": full}
            mode = _TYPES.get(_decode(kind_b), 0) | int(perms, 8)
            st = os.stat_result((mode, int(ino), int(dev), 1, 0, 0, int(size), 0,
                                 int(float(mtime)), 0, 0.0, float(mtime), 0.0, 0, 0, 0,
                                 4096, int(blocks512), 0))
            kind = file_kind(mode)
            if stat.S_ISLNK(mode):
                # A link is a volume only when it lands on a regular file inside the roots.
                target = self.realpath(full)
                try:
                    tst = self.lstat(target)
                except OSError:
                    entry.update(kind="dangling-link")
                    entries.append(entry)
                    continue
                if not stat.S_ISREG(tst.st_mode) or not inside_roots(target, roots):
                    entry.update(kind="link")
                    entries.append(entry)
                    continue
                kind, st, full = "file", tst, target
            entry["kind"] = kind
            if kind == "file" and name.startswith(TEMP_PREFIX):
                entry["kind"] = "temporary"
            elif kind == "file":
                entry.update(self._probe_file(full, st, None))
                probed[full] = entry
            entries.append(entry)
        resolver = self._resolver(roots, probed)
        for entry in entries:
            if entry["kind"] == "file":
                entry["chain"] = resolver.chain(entry["path"], entry.get("info"))
        return {"path": real, "entries": entries,
                "statvfs": {"frsize": frsize, "blocks": blocks, "bavail": bavail,
                            "bfree": bfree}}
