"""The layers of DESIGN.md: backends know nothing of console, Textual or SQLite;
console's non-UI code knows nothing of Textual. Checked on the source, so a lazy import
inside a function counts too."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offenders(package: str, forbidden: tuple[str, ...], skip: str | None = None) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if skip and rel.startswith(skip):
            continue
        for name in imported_modules(path):
            if name.split(".")[0] in forbidden or any(name.startswith(f + ".") or name == f
                                                      for f in forbidden):
                found.append(f"{rel} imports {name}")
    return found


def test_backends_import_no_console_textual_or_sqlite() -> None:
    assert offenders("backends", ("console", "textual", "sqlite_utils", "sqlite3")) == []


def test_console_core_imports_no_textual() -> None:
    assert offenders("console", ("textual",), skip="console/ui/") == []


def test_scanner_and_probe_are_stdlib_only() -> None:
    """They are shipped to remote python3 hosts: only the stdlib and each other."""
    allowed_local = {"backends", "backends.probe", "backends.model"}
    for rel in ("backends/probe.py", "backends/model.py", "backends/transport/scanner.py"):
        for name in imported_modules(ROOT / rel):
            top = name.split(".")[0]
            assert name in allowed_local or top in sys.stdlib_module_names, \
                f"{rel} imports {name}"


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from textual.app import App\n")
    assert "textual.app" in imported_modules(bad)

