"""A check's findings as lines, grouped by severity then fix type: a Line-API ScrollView
drawing only the visible ones, each finding with its fix and whether it is marked."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text

from console.fixes import Finding, Fix, Severity
from console.ui.cells import printable
from console.ui.widgets.line_list import LineList
from console.units import format_size

SEVERITY_MARKS = {Severity.BROKEN: "✗", Severity.DEGRADED: "▲", Severity.INFO: "·"}
SEVERITY_ORDER = (Severity.BROKEN, Severity.DEGRADED, Severity.INFO)
NO_FIX = "no fix"


@dataclass(frozen=True)
class FixLine:
    """A heading (``finding`` None: a severity when ``depth`` is 0, a type when 1) or a
    finding with the fix that answers it (if any)."""

    depth: int
    label: str
    finding: Finding | None = None
    fix: Fix | None = None


def space_effect(change: int) -> str:
    if change < 0:
        return f"frees {format_size(-change)}"
    if change > 0:
        return f"takes {format_size(change)}"
    return "no space change"


def group_lines(findings: Iterable[Finding], fixes: Iterable[Fix]) -> list[FixLine]:
    """Severity headings (broken, degraded, info), type headings within, then each
    finding with its fix, in the check's order."""
    by_key: dict[tuple[str, str, str | None, str], Fix] = {}
    for fix in fixes:
        by_key.setdefault((fix.host, fix.pool, fix.volume, fix.code), fix)
    groups: dict[Severity, dict[str, list[FixLine]]] = {s: {} for s in SEVERITY_ORDER}
    for f in findings:
        answer = by_key.get((f.host, f.pool, f.volume, f.code))
        kind = str(answer.type) if answer is not None else NO_FIX
        groups[f.severity].setdefault(kind, []).append(FixLine(2, f.code, f, answer))
    lines: list[FixLine] = []
    for severity in SEVERITY_ORDER:
        types = groups[severity]
        if not types:
            continue
        count = sum(len(items) for items in types.values())
        lines.append(FixLine(0, f"{severity} ({count})"))
        for kind, items in types.items():
            lines.append(FixLine(1, kind))
            lines.extend(items)
    return lines


class FixList(LineList[FixLine]):
    """Args:
        host: The host shown without its name (the one the console is on).
    """

    HELP_ORDER: ClassVar[int] = 1
    HELP_TITLE: ClassVar[str] = "Findings (focused)"

    COMPONENT: ClassVar[str] = "fix-list"

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "fix-list--cursor",
        "fix-list--heading",
        "fix-list--type",
        "fix-list--muted",
        "fix-list--marked",
        "fix-list--broken",
        "fix-list--degraded",
        "fix-list--info",
        "fix-list--high",
        "fix-list--empty",
    }

    DEFAULT_CSS = """
    FixList {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        & > .fix-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .fix-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .fix-list--heading { text-style: bold; }
        & > .fix-list--type { color: $accent; }
        & > .fix-list--muted { color: $text-muted; }
        & > .fix-list--marked { color: $success; text-style: bold; }
        & > .fix-list--broken { color: $error; text-style: bold; }
        & > .fix-list--degraded { color: $warning; }
        & > .fix-list--info { color: $text-muted; }
        & > .fix-list--high { color: $error; text-style: bold; }
        & > .fix-list--empty { color: $text-muted; text-style: italic; }
    }
    """

    def __init__(self, *, host: str | None, id: str | None = None) -> None:
        super().__init__(empty_text="checking…", id=id)
        self.host = host
        self.marked: set[str] = set()  # fix ids

    def show(self, lines: list[FixLine], *, empty_text: str = "") -> None:
        items = [i for i, line in enumerate(lines) if line.finding is not None]
        self.set_lines(lines, empty_text=empty_text, cursor=items[0] if items else 0)

    @property
    def current(self) -> FixLine | None:
        return self.lines[self.cursor] if 0 <= self.cursor < len(self.lines) else None

    def fixes(self) -> list[Fix]:
        """Every fix shown, in order."""
        return [line.fix for line in self.lines if line.fix is not None]

    def set_marked(self, marked: set[str]) -> None:
        self.marked = marked
        self.refresh()

    def _step(self, direction: int) -> None:
        """To the next finding that way (headings are skipped), if there is one."""
        index = self.cursor + direction
        while 0 <= index < len(self.lines):
            if self.lines[index].finding is not None:
                self._set_cursor(index)
                return
            index += direction
        if direction < 0:
            self.scroll_to(y=0, animate=False)  # the headings above stay in sight

    def action_cursor_up(self) -> None:
        self._step(-1)

    def action_cursor_down(self) -> None:
        self._step(1)

    def line_text(self, line: FixLine) -> Text:
        """A heading, or: mark, severity, volume, the fix's type · risk · space, the
        finding's reason, then the pool (@host when not this one)."""
        text = Text(no_wrap=True, end="")
        finding, fix = line.finding, line.fix
        if finding is None:
            style = self.part("heading") if line.depth == 0 else self.part("type")
            text.append(" " + "  " * line.depth + line.label, style)
            return text
        muted = self.part("muted")
        if fix is None:
            text.append("     ", muted)
        elif fix.id in self.marked:
            text.append("   ✓ ", self.part("marked"))
        else:
            text.append("   ☐ ", muted)
        text.append(SEVERITY_MARKS[finding.severity] + " ", self.part(str(finding.severity)))
        text.append(printable(finding.volume or "(the pool)"))
        where = printable(finding.pool)
        if finding.host != self.host:
            where += f" @{printable(finding.host)}"
        if fix is not None:
            text.append(f"  {fix.type} · ", muted)
            text.append(f"{fix.risk} risk", self.part("high") if fix.needs_confirmation
                        or str(fix.risk) == "high" else muted)
            text.append(f" · {space_effect(fix.space_change)}", muted)
        text.append(f"  {printable(finding.reason)}")
        text.append(f"  {where}", muted)
        return text
