"""List a directory pool and probe every image in it, in one pass.

Stdlib only (plus ``backends.probe`` and ``backends.model``, also stdlib only): the
local transport calls it in-process, and the SSH transport ships the same source to a
remote python3 so one round trip lists a whole pool. Results are plain JSON-able
dicts; names and paths are ``os.fsdecode``d, so non-UTF-8 bytes travel as surrogates.

Safety rules (DESIGN.md, "Rules that keep it real"):
- only regular files are opened, with O_NONBLOCK|O_NOFOLLOW and an fstat check that
  the opened file is the one that was inspected, so a FIFO swapped in is never read;
- a backing reference is followed only when its format is declared, it resolves inside
  the allowed roots, and it is a regular file; loops and missing links are reported;
- a qcow2 data-file name is reported, never opened.
"""

from __future__ import annotations

import dataclasses
import fcntl
import marshal
import os
import re
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

from backends.model import ImageInfo, LinkProblem
from backends.probe import probe as probe_image

MAX_CHAIN = 64  # links followed before giving up: deeper is "too-deep", never a hang
TEMP_PREFIX = ".sc-tmp-"  # job outputs in flight (jobs issue): not volumes
_TEMP_JOB = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")
PARALLEL_MIN = 2000  # files in a directory before probing is split across two processes

Entry = dict[str, Any]


def job_of_temporary(name: str) -> int | None:
    """The id of the job whose output in flight ``name`` is (``.sc-tmp-ID-...``)."""
    match = _TEMP_JOB.match(name)
    return int(match.group(1)) if match else None


def file_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device"
    return "other"


def inside_roots(path: str, roots: Iterable[str]) -> bool:
    """True when ``path`` (already real) is one of ``roots`` or below one."""
    for root in roots:
        root = root.rstrip(os.sep) or os.sep
        if path == root or path.startswith(root + os.sep if root != os.sep else root):
            return True
    return False


# QEMU locks byte 100 + a permission's bit of the image file it holds (whatever the
# format: the lock is the file layer's); 101 is "write". F_GETLK only looks.
QEMU_LOCK_WRITE_BYTE = 101


def lock_conflicts(fd: int, start: int) -> bool:
    """Whether anybody holds a lock on byte ``start`` of ``fd`` that a write lock would
    conflict with (``F_GETLK`` sees OFD and POSIX locks; it takes nothing)."""
    # struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, start, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return False  # a file system without locks: nobody can hold one
    (l_type,) = struct.unpack_from("h", answer)
    return bool(l_type != fcntl.F_UNLCK)


_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(ImageInfo))


def info_record(info: ImageInfo) -> dict[str, Any]:
    """``dataclasses.asdict`` without its deep copies (ImageInfo holds only scalars)."""
    record = {name: getattr(info, name) for name in _INFO_FIELDS}
    record["format"] = str(info.format)
    record["problems"] = list(info.problems)
    return record


def probe_open_file(path: str, st: os.stat_result, declared: str | None) -> Entry:
    """Open the regular file ``path`` safely and probe its header.

    ``st`` is what the caller saw; if the opened file differs (it was swapped for
    something else in between) nothing is read.
    """
    result: Entry = {
        "size": st.st_size,
        "allocation": st.st_blocks * 512,
        "mtime": st.st_mtime,
        "readonly": not (st.st_mode & 0o222),
        "info": None,
        "error": None,
    }
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        result["error"] = f"cannot open: {err.strerror}"
        return result
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            st.st_dev, st.st_ino
        ):
            result["error"] = "file changed while it was being read; refresh again"
            return result

        def read(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        result["info"] = info_record(probe_image(read, opened.st_size, declared))
        result["in_use"] = lock_conflicts(fd, QEMU_LOCK_WRITE_BYTE)
    except OSError as err:
        result["error"] = f"cannot read: {err.strerror}"
    finally:
        os.close(fd)
    return result


def probe_path(path: str, declared: str | None) -> Entry:
    """Probe one file by path (a backing file), following no symlink at the end."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "missing", "path": path}
    except OSError as err:
        return {"kind": "error", "path": path, "error": err.strerror}
    kind = file_kind(st.st_mode)
    if kind != "file":
        return {"kind": kind, "path": path}
    entry = probe_open_file(path, st, declared)
    entry.update(kind="file", path=path)
    return entry


class ChainResolver:
    """Follows backing references safely, probing each file at most once."""

    def __init__(self, roots: Iterable[str], known: dict[str, Entry] | None = None, *,
                 probe: Callable[[str, str | None], Entry] | None = None,
                 realpath: Callable[[str], str] = os.path.realpath,
                 islink: Callable[[str], bool] = os.path.islink) -> None:
        # probe/realpath/islink: the file system's, here; another host's through its
        # shell when it has no python3 (``shellscan``).
        self._probe_path = probe or probe_path
        self._realpath = realpath
        self._islink = islink
        self.roots = tuple(realpath(r) for r in roots)
        # path -> probe entry, seeded with the pool's own files (probed as detected);
        # a backing declared with another format than detected is probed again.
        self.known: dict[tuple[str, str | None], Entry] = {}
        for path, entry in (known or {}).items():
            self.known[(path, None)] = entry
        self.outside: dict[str, Entry] = {}
        self._real_dirs: dict[str, str] = {}

    def real_path(self, directory: str, name: str) -> str:
        """``realpath(join(directory, name))``, cheaply for the common case: a plain
        name (no ``/``, not ``..``) that is not a symlink, in a directory seen before."""
        if os.sep in name or name in (".", "..") or not name:
            return self._realpath(os.path.join(directory, name))
        real_dir = self._real_dirs.get(directory)
        if real_dir is None:
            real_dir = self._real_dirs[directory] = self._realpath(directory)
        joined = os.path.join(real_dir, name)
        return self._realpath(joined) if self._islink(joined) else joined

    def _probe(self, path: str, declared: str) -> Entry:
        key = (path, declared)
        if key not in self.known:
            detected = self.known.get((path, None))
            info = detected.get("info") if detected else None
            if detected and info and info["format"] == declared:
                self.known[key] = detected
            else:
                self.known[key] = self._probe_path(path, declared)
        return self.known[key]

    def chain(self, path: str, info: dict[str, Any] | None) -> Entry:
        """The chain below an image: links (leaf excluded) and the problem, if any."""
        links: list[dict[str, Any]] = []
        if info is None or not info.get("backing_file"):
            return {"links": links, "problem": None, "problem_path": None, "problem_detail": ""}
        seen = {self.real_path(os.path.dirname(path), os.path.basename(path))}
        current_dir = os.path.dirname(path)
        while info is not None and info.get("backing_file"):
            name: str = info["backing_file"]
            declared: str | None = info.get("backing_format")
            joined = os.path.join(current_dir, name)
            target = self.real_path(current_dir, name)
            problem: LinkProblem | None = None
            detail = ""
            if len(links) + 1 >= MAX_CHAIN:
                problem, detail = LinkProblem.TOO_DEEP, f"more than {MAX_CHAIN} links"
            elif not declared:
                problem, detail = LinkProblem.UNDECLARED_FORMAT, "backing format is not declared"
            elif not inside_roots(target, self.roots):
                problem, detail = LinkProblem.ESCAPE, "backing lies outside the allowed roots"
            elif target in seen:
                problem, detail = LinkProblem.LOOP, "backing chain loops"
            if problem is None:
                assert declared is not None
                entry = self._probe(target, declared)
                kind = entry.get("kind", "file")
                if kind == "missing":
                    problem, detail = LinkProblem.MISSING, "backing file does not exist"
                elif kind != "file":
                    problem, detail = LinkProblem.NOT_REGULAR, f"backing is a {kind}, not a file"
                elif entry.get("error") or entry.get("info") is None:
                    problem = LinkProblem.UNREADABLE
                    detail = str(entry.get("error") or "unreadable")
                elif entry["info"].get("invalid") or entry["info"].get("truncated"):
                    problem = LinkProblem.UNREADABLE
                    detail = "; ".join(entry["info"].get("problems") or ()) or "bad header"
                else:
                    next_info: dict[str, Any] = entry["info"]
                    links.append({
                        "path": target,
                        "format": next_info["format"],
                        "capacity": next_info["virtual_size"],
                    })
                    if (target, None) not in self.known:
                        self.outside[target] = entry
                    seen.add(target)
                    current_dir = os.path.dirname(target)
                    info = next_info
                    continue
            return {
                "links": links,
                "problem": str(problem),
                "problem_path": target if problem not in (LinkProblem.UNDECLARED_FORMAT,)
                else joined,
                "problem_detail": detail,
                "backing": target,
            }
        return {"links": links, "problem": None, "problem_path": None, "problem_detail": ""}


def probe_volume(path: str, roots: Iterable[str]) -> Entry:
    """One volume by path, as ``scan_directory`` would report it, chain included."""
    entry = probe_path(path, None)
    entry["name"] = os.path.basename(path)
    if entry["kind"] == "file":
        entry["chain"] = ChainResolver(roots).chain(path, entry.get("info"))
    return entry


def probe_files(files: list[tuple[str, os.stat_result]]) -> list[Entry]:
    """``probe_open_file`` for each (path, stat), in order, on two cores when it pays.

    Probing is CPU-bound Python, so a big directory is split with one forked child.
    Only a single-threaded process forks (the command line, the remote scanner): a fork
    beside other threads may inherit a lock held forever. Any failure of the child
    (killed, out of memory, bad output) falls back to probing its half here.
    """
    half = len(files) // 2
    if (len(files) < PARALLEL_MIN or (os.cpu_count() or 1) < 2
            or threading.active_count() > 1 or not hasattr(os, "fork")):
        return [probe_open_file(path, st, None) for path, st in files]
    # The child's results go to an anonymous file, not a pipe: a pipe would stall the
    # child once full, until the parent finishes its own half and starts reading.
    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:  # the child: probe the second half, write it, leave without cleanup
            code = 1
            try:
                out.write(marshal.dumps([probe_open_file(p, st, None)
                                         for p, st in files[half:]]))
                out.flush()
                code = 0
            finally:
                os._exit(code)
        first = [probe_open_file(path, st, None) for path, st in files[:half]]
        second: list[Entry] | None = None
        try:
            _, status = os.waitpid(pid, 0)
            if status == 0:
                out.seek(0)
                loaded = marshal.loads(out.read())
                if isinstance(loaded, list) and len(loaded) == len(files) - half:
                    second = loaded
        except (OSError, EOFError, ValueError, TypeError):
            second = None
    if second is None:
        second = [probe_open_file(path, st, None) for path, st in files[half:]]
    return first + second


def scan_directory(path: str, roots: Iterable[str]) -> dict[str, Any]:
    """Every entry of the directory ``path``: volumes probed, the rest only named.

    Returns ``{"path", "entries": [...], "statvfs": {...}}``; each entry has ``name``,
    ``path``, ``kind`` and, for files, size/allocation/mtime/readonly/info/error/chain.
    Raises ``OSError`` when the directory itself cannot be listed.
    """
    real = os.path.realpath(path)
    roots = tuple(roots) or (real,)
    entries: list[Entry] = []
    probed: dict[str, Entry] = {}  # real path -> its entry, for the chain resolver
    todo: list[tuple[str, os.stat_result]] = []
    # Every entry landing on each real path: a link and its target share one probe.
    landing: dict[str, list[Entry]] = {}
    with os.scandir(real) as it:
        dirents = sorted(it, key=lambda d: d.name)
    for d in dirents:
        full = os.path.join(real, d.name)
        entry: Entry = {"name": d.name, "path": full}
        try:
            st = d.stat(follow_symlinks=False)
        except OSError as err:
            entry.update(kind="error", error=err.strerror)
            entries.append(entry)
            continue
        kind = file_kind(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            # A link is a volume only when it lands on a regular file inside the roots.
            target = os.path.realpath(full)
            try:
                tst = os.stat(target, follow_symlinks=False)
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
        if kind == "file" and d.name.startswith(TEMP_PREFIX):
            entry["kind"] = "temporary"
        elif kind == "file":
            if full not in landing:
                todo.append((full, st))
                landing[full] = []
            landing[full].append(entry)
            # The resolver wants the file under its own name when it is in the listing.
            if full == entry["path"] or full not in probed:
                probed[full] = entry
        entries.append(entry)
    for (full, _), result in zip(todo, probe_files(todo), strict=True):
        for landed in landing[full]:
            landed.update(result)
    resolver = ChainResolver(roots, probed)
    for entry in entries:
        if entry["kind"] == "file":
            entry["chain"] = resolver.chain(entry["path"], entry.get("info"))
    vfs = os.statvfs(real)
    return {
        "path": real,
        "entries": entries,
        "statvfs": {"frsize": vfs.f_frsize, "blocks": vfs.f_blocks, "bavail": vfs.f_bavail,
                    "bfree": vfs.f_bfree},
    }
