"""The console's agent as one script: the source of its stdlib-only modules, shipped on
stdin to a host's ``python3`` (``SshTransport``), or to this machine's own python for a
stream that must run as a process of its own (``backends.transfer``).

Not shipped itself: only the console side imports it.
"""

from __future__ import annotations

import functools
import importlib.util
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
def agent_script() -> bytes:
    """The agent with its modules, compressed: what each request sends first."""
    sources = []
    for name in AGENT_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as f:
            sources.append((name, f.read()))
    return zlib.compress((_BUNDLE % (sources,)).encode(), 6)  # 9: twice the time, 0.5% smaller


def agent_argv(python: str) -> list[str]:
    return [python, "-I", "-c", BOOTSTRAP]
