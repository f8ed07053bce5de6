"""The console's agent as one script: the source of its stdlib-only modules, shipped on
stdin to a host's ``python3`` (``SshTransport``), or to this machine's own python for a
stream that must run as a process of its own (``backends.transfer``).

``SshTransport`` runs it through ``CACHED_BOOTSTRAP``, which keeps the agent compiled on
the host, so a request neither ships nor compiles it again (see that constant).

Not shipped itself: only the console side imports it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import marshal
import zlib

# The modules the agent needs, in import order; all stdlib-only (tests check it).
AGENT_MODULES = ("backends", "backends.model", "backends.probe", "backends.archive",
                 "backends.contract", "backends.transport", "backends.transport.lifeline",
                 "backends.transport.scanner", "backends.transport.local",
                 "backends.transport.sparse", "backends.transport.agent")
_BUNDLE = '''import sys, types
def _install(sources):
    for name, source in sources:
        module = types.ModuleType(name)
        if name in ("backends", "backends.transport"):
            module.__path__ = []
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        exec(compile(source, "<sc-agent " + name + ">", "exec"), module.__dict__)
_install(%r)
sys.modules["backends.transport.agent"].main()
'''
# Reads the compressed agent (its length first) from stdin and runs it; stdin then
# carries the request. -I: the host's PYTHON* variables and user site stay out.
BOOTSTRAP = ("import sys,zlib;i=sys.stdin.buffer;"
             "exec(compile(zlib.decompress(i.read(int(i.readline()))),'sc-agent','exec'))")


@functools.cache
def agent_sources() -> tuple[tuple[str, str], ...]:
    """(module name, source) of each agent module, in import order."""
    sources = []
    for name in AGENT_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as f:
            sources.append((name, f.read()))
    return tuple(sources)


@functools.cache
def agent_script() -> bytes:
    """The agent with its modules, compressed: what each request sends first."""
    # Level 9 takes twice the time of 6 for a result 0.5% smaller.
    return zlib.compress((_BUNDLE % (list(agent_sources()),)).encode(), 6)


def agent_argv(python: str) -> list[str]:
    return [python, "-I", "-c", BOOTSTRAP]


# -- the agent kept compiled on the host ------------------------------------------------

# Runs the agent compiled from a cache on the host, or asks for its sources. argv: the
# sha256 of the sources (``agent_digest``). The cache is ~/.cache/storage-console/agent,
# used only when it is a directory of the login user's that nobody else can write (it is
# made so, opened without following a link, and checked on the open descriptor); only
# that user and root can put a file there, and both can run anything as that user
# already. A cached file is the host python's compiled code for those sources, named by
# their digest and the python's bytecode magic, and starts with the sha256 of the code:
# a file that does not match (torn, damaged, changed) is not run but replaced. A miss
# prints {"ship": true}; the console then sends ``SHIP_MARK`` LENGTH, the compressed
# sources and its request again (the one it sent ahead is skipped): they are checked
# against the digest before they are compiled, run and cached. No cache (no home, a
# directory someone else could write): the sources are shipped every time. A read-only
# console (argv "ro") runs a cached agent but writes nothing on the host: no directory
# made, nothing stored.
CACHED_BOOTSTRAP = r'''
import hashlib, marshal, os, stat, sys, time, types, zlib
from importlib.util import MAGIC_NUMBER
digest, stdin = sys.argv[1], sys.stdin.buffer
read_only = sys.argv[2:] == ["ro"]

def private_dir():
    path = os.path.expanduser("~/.cache/storage-console/agent")
    if not os.path.isabs(path):
        return None
    try:
        if not read_only:
            os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return fd
    os.close(fd)
    return None

def cached(fd, name):
    try:
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    with os.fdopen(f, "rb") as file:
        st = os.fstat(f)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        check, _, code = file.read().partition(b"\n")
    if hashlib.sha256(code).hexdigest().encode() != check:
        return None
    try:
        return marshal.loads(code)
    except (EOFError, ValueError, TypeError):
        return None

def shipped():
    sys.stdout.buffer.write(b'{"ship": true}\n')
    sys.stdout.buffer.flush()
    line = b""
    while not line.startswith(b"sc-agent "):
        line = stdin.readline()
        if not line:
            sys.exit("the console sent no agent")
    sources = marshal.loads(zlib.decompress(stdin.read(int(line.split()[1]))))
    h = hashlib.sha256()
    for name, source in sources:
        h.update(name.encode() + b"\0" + source.encode() + b"\0")
    if h.hexdigest() != digest:
        sys.exit("the agent sent does not match its digest")
    return [(name, compile(source, "<sc-agent " + name + ">", "exec"))
            for name, source in sources]

def store(fd, name, modules):
    code = marshal.dumps(modules)
    temp = "%s.%d.tmp" % (name, os.getpid())
    try:
        f = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    | os.O_CLOEXEC, 0o600, dir_fd=fd)
        with os.fdopen(f, "wb") as file:
            file.write(hashlib.sha256(code).hexdigest().encode() + b"\n" + code)
        os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        for other in os.listdir(fd):  # other versions' agents unused for a week
            if other.startswith("agent-") and other != name and os.stat(
                    other, dir_fd=fd, follow_symlinks=False).st_mtime < time.time() - 604800:
                os.unlink(other, dir_fd=fd)
    except OSError:
        try:
            os.unlink(temp, dir_fd=fd)
        except OSError:
            pass

fd = private_dir()
name = "agent-%s-%s" % (digest, MAGIC_NUMBER.hex())
modules = cached(fd, name) if fd is not None else None
if modules is None:
    modules = shipped()
    if fd is not None and not read_only:
        store(fd, name, modules)
for module_name, code in modules:
    module = types.ModuleType(module_name)
    if module_name in ("backends", "backends.transport"):
        module.__path__ = []
    sys.modules[module_name] = module
    parent, _, child = module_name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    exec(code, module.__dict__)
sys.modules["backends.transport.agent"].main()
'''
SHIP = "ship"  # the key of the record a host sends when it needs the agent's sources
SHIP_MARK = b"sc-agent"


@functools.cache
def agent_digest() -> str:
    """sha256 of the agent's modules, as ``CACHED_BOOTSTRAP`` checks them."""
    h = hashlib.sha256()
    for name, source in agent_sources():
        h.update(name.encode() + b"\0" + source.encode() + b"\0")
    return h.hexdigest()


def cached_agent_argv(python: str, *, read_only: bool = False) -> list[str]:
    """The bootstrap's argv; ``read_only``: use the host's cache, never write it."""
    return [python, "-I", "-c", CACHED_BOOTSTRAP, agent_digest(), *(["ro"] if read_only else [])]


@functools.cache
def _shipped_sources() -> bytes:
    return zlib.compress(marshal.dumps(list(agent_sources())), 6)


def shipment(request: bytes) -> bytes:
    """What a host that asked for the agent is sent: the sources, then the request."""
    sources = _shipped_sources()
    return b"%s %d\n" % (SHIP_MARK, len(sources)) + sources + request
