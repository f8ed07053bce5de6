"""The jobs panel: one line per recent job with a live progress bar.

A line shows the job's state (in its colour), its id, what it does, and then, while it
runs, a bar of the current stage with stage X/Y, percent, throughput and time left; once
it ended, how long it took or why it failed. The panel draws what the screen's
``JobBoard`` holds and asks the screen (``JobsPanel.Act``) to cancel, resume or roll
back the job under the cursor; it never calls the runner itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Literal

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.jobs.journal import JobRecord, JobState
from console.jobs.operations import describe_job
from console.ui.cells import fit, printable
from console.ui.job_board import JobBoard, short_error
from console.ui.widgets.painted_lines import PaintedLines
from console.units import format_age, format_duration, format_rate

JobAction = Literal["cancel", "resume", "rollback"]

ICONS: dict[JobState, str] = {
    JobState.PENDING: "·", JobState.RUNNING: "▸", JobState.ABORTING: "■",
    JobState.DONE: "✓", JobState.FAILED: "✗", JobState.ABORTED: "−",
    JobState.INTERRUPTED: "!",
}
TITLE_ORDER = (JobState.RUNNING, JobState.ABORTING, JobState.PENDING, JobState.INTERRUPTED,
               JobState.FAILED, JobState.ABORTED, JobState.DONE)
EIGHTHS = " ▏▎▍▌▋▊▉"
STATE_WIDTH = 11  # "interrupted"
ID_WIDTH = 5
# A job's rate and time left change with every report: they are shown anew at most this
# often (seconds), the bar and percent with every report (legible, and fewer bytes).
SLOW_WORDS_EVERY = 2.0


def progress_bar(percent: float, width: int) -> tuple[str, str]:
    """(done, rest) cells of a bar ``width`` wide; eighth blocks make it move smoothly.
    An unknown percent (< 0) is all rest."""
    if width <= 0:
        return "", ""
    if percent < 0:
        return "", "╌" * width
    filled = max(0.0, min(100.0, percent)) * width / 100
    full = int(filled)
    partial = EIGHTHS[int((filled - full) * 8)] if full < width else ""
    done = "█" * full + partial.strip()
    return done, "─" * (width - cell_len(done))


class JobsPanel(ScrollView, can_focus=True):
    """Recent jobs, newest first; keys act on the job under the cursor."""

    HELP_ORDER: ClassVar[int] = 3
    HELP_TITLE: ClassVar[str] = "Jobs (panel focused)"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("R", "resume_job", "Resume"),
        Binding("b", "rollback_job", "Roll back"),
        Binding("z", "dismiss_finished", "Dismiss ended"),  # D is the screen's dependants
        Binding("enter", "details", "Details", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "jobs-panel--cursor",
        "jobs-panel--pending",
        "jobs-panel--running",
        "jobs-panel--aborting",
        "jobs-panel--done",
        "jobs-panel--failed",
        "jobs-panel--aborted",
        "jobs-panel--interrupted",
        "jobs-panel--bar",
        "jobs-panel--bar-rest",
        "jobs-panel--muted",
        "jobs-panel--error",
    }

    DEFAULT_CSS = """
    JobsPanel {
        display: none;
        height: 2;
        background: $surface;
        border-top: solid $panel-lighten-2;
        border-title-color: $text-muted;
        border-title-style: bold;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        &.-shown { display: block; }
        &:focus { border-top: solid $primary; border-title-color: $primary; }
        & > .jobs-panel--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .jobs-panel--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
        }
        & > .jobs-panel--pending { color: $text-muted; }
        & > .jobs-panel--running { color: $primary; text-style: bold; }
        & > .jobs-panel--aborting { color: $warning; text-style: bold; }
        & > .jobs-panel--done { color: $success; }
        & > .jobs-panel--failed { color: $error; text-style: bold; }
        & > .jobs-panel--aborted { color: $warning; }
        & > .jobs-panel--interrupted { color: $warning; text-style: bold; }
        & > .jobs-panel--bar { color: $primary; }
        & > .jobs-panel--bar-rest { color: $panel-lighten-2; }
        & > .jobs-panel--muted { color: $text-muted; }
        & > .jobs-panel--error { color: $error; }
    }
    """

    class Act(Message):
        """Cancel, resume or roll back ``job`` (the screen runs it in a worker)."""

        def __init__(self, action: JobAction, job: JobRecord) -> None:
            super().__init__()
            self.action = action
            self.job = job

    class Details(Message):
        """Show everything about ``job``."""

        def __init__(self, job: JobRecord) -> None:
            super().__init__()
            self.job = job

    def __init__(self, board: JobBoard, *, clock: Callable[[], float],
                 can_act: bool = True, id: str | None = None,
                 pace: Callable[[], float] = time.monotonic) -> None:
        super().__init__(id=id)
        self.painted = PaintedLines()  # what each line showed: ticks repaint only changes
        self.board = board
        self.clock = clock
        self.pace = pace  # for SLOW_WORDS_EVERY (``clock`` stands still in tests)
        self.slow_words: dict[int, tuple[float, str, str]] = {}  # job -> (when, rate, eta)
        self.can_act = can_act
        self.rows: list[JobRecord] = []
        self.cursor = 0
        self.max_lines = 4
        self._height = 0
        self._keys_for: tuple[int, JobState] | None = None

    # -- data -------------------------------------------------------------------------

    @property
    def current(self) -> JobRecord | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def update_jobs(self) -> None:
        """The board changed: re-read its rows, the cursor staying on its job."""
        keep = self.current.id if self.current is not None else None
        self.rows = self.board.rows()
        listed = {job.id for job in self.rows}
        self.slow_words = {i: words for i, words in self.slow_words.items() if i in listed}
        ids = [j.id for j in self.rows]
        self.cursor = ids.index(keep) if keep in ids else min(self.cursor,
                                                              max(len(ids) - 1, 0))
        size = Size(1, max(len(self.rows), 1))
        if size != self.virtual_size:
            self.virtual_size = size
        self._fit_height()
        title = self.title()
        if title != self.border_title:
            self.border_title = title
        self._scroll_to_cursor()
        self.refresh()
        current = self.current
        keys = (current.id, self.board.state(current)) if current is not None else None
        if keys != self._keys_for:  # the footer's keys depend on the job under the cursor
            self._keys_for = keys
            self.refresh_bindings()

    def set_max_lines(self, lines: int) -> None:
        if lines != self.max_lines:
            self.max_lines = lines
            self._fit_height()

    def _fit_height(self) -> None:
        height = 1 + min(max(len(self.rows), 1), self.max_lines)
        if height != self._height:  # a new height lays the screen out again: rarely
            self._height = height
            self.styles.height = height

    def title(self) -> str:
        counts: dict[JobState, int] = {}
        for job in self.rows:
            state = self.board.state(job)
            counts[state] = counts.get(state, 0) + 1
        words = [f"{counts[state]} {state}" for state in TITLE_ORDER if state in counts]
        return "jobs" + (" · " + ", ".join(words) if words else "")

    # -- keys -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        job = self.current
        state = self.board.state(job) if job is not None else None
        if action in ("cancel_job", "resume_job", "rollback_job"):
            if not self.can_act:
                return False
            ok = {"cancel_job": (JobState.PENDING, JobState.RUNNING),
                  "resume_job": (JobState.INTERRUPTED, JobState.FAILED, JobState.ABORTED),
                  "rollback_job": (JobState.INTERRUPTED, JobState.FAILED)}[action]
            return True if state in ok else None
        if action == "dismiss_finished":
            return True if any(j.state.finished or j.state == JobState.INTERRUPTED
                               for j in self.rows) else None
        if action == "details":
            return True if job is not None else None
        return True

    def _set_cursor(self, index: int) -> None:
        index = max(0, min(index, len(self.rows) - 1)) if self.rows else 0
        if index != self.cursor:
            self.refresh_line(self.cursor)
            self.cursor = index
            self.refresh_line(index)
            current = self.rows[index] if self.rows else None
            self._keys_for = (current.id, self.board.state(current)) if current else None
            self.refresh_bindings()
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height)
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor + 1)

    def _act(self, action: JobAction) -> None:
        job = self.current
        if job is not None:
            self.post_message(self.Act(action, job))

    def action_cancel_job(self) -> None:
        self._act("cancel")

    def action_resume_job(self) -> None:
        self._act("resume")

    def action_rollback_job(self) -> None:
        self._act("rollback")

    def action_dismiss_finished(self) -> None:
        if self.board.dismiss_finished():
            self.update_jobs()

    def action_details(self) -> None:
        if self.current is not None:
            self.post_message(self.Details(self.current))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None:
            self._set_cursor(round(self.scroll_y) + offset.y)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    # -- painting ---------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        return self.painted.remember(y, self._render_line(y))

    def repaint_changed(self) -> None:
        """A clock tick: repaint only the lines whose text moved on (ages, times)."""
        self.painted.repaint_changed(self, self._render_line)

    def _render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        index = round(self.scroll_y) + y
        if not self.rows:
            if y == 0:
                style = base + self.get_component_rich_style("jobs-panel--muted",
                                                             partial=True)
                return Strip([Segment(fit(" no jobs yet", width), style)], width)
            return Strip.blank(width, base)
        if index >= len(self.rows):
            return Strip.blank(width, base)
        return self._line(self.rows[index], index == self.cursor, width, base)

    def _line(self, job: JobRecord, is_cursor: bool, width: int, base: Style) -> Strip:
        line = base + self.get_component_rich_style("jobs-panel--cursor") \
            if is_cursor else base

        def part(name: str) -> Style:
            return line + self.get_component_rich_style(f"jobs-panel--{name}", partial=True)

        state = self.board.state(job)
        wide = width >= 110
        bar_width = 20 if wide else 10
        # bar, " 2/3", " label", " 100%", " 999M/s", " eta 0:34"
        right = bar_width + 5 + (10 if wide else 0) + 5 + 8 + 10
        prefix = 2 + STATE_WIDTH + 1 + ID_WIDTH + 1
        title_width = max(width - prefix - right - 1, 8)
        segments = [
            Segment(f"{ICONS[state]} {fit(str(state), STATE_WIDTH)} ", part(str(state))),
            Segment(fit(f"#{job.id}", ID_WIDTH) + " ", part("muted")),
        ]
        title = printable(describe_job(job))
        # The words after the title take what they need; the title gets the rest of the
        # line (at least ``title_width``, which keeps the bars of running jobs in a column).
        if state in (JobState.RUNNING, JobState.ABORTING, JobState.PENDING):
            after = self._progress(job, state, bar_width, wide, part)
            # No rate or time left yet (a job that just started): blank fields need no
            # room; a field with words keeps its width, so bars stay in one column.
            shown = list(after)
            while shown and not shown[-1].text.strip():
                shown.pop()
            need = sum(cell_len(segment.text) for segment in shown)
            cells = max(title_width, min(cell_len(title), width - prefix - 1 - need))
            segments.append(Segment(fit(title, cells) + " ", line))
            segments += after
        else:
            words, style = self._outcome(job, state)
            room = width - prefix - 2 - cell_len(words)
            used = min(cell_len(title), max(title_width, room))
            segments.append(Segment(fit(title, used) + "  ", line))
            segments.append(Segment(fit(words, max(width - prefix - used - 2, 0)),
                                    part(style)))
        return Strip(segments).crop_extend(0, width, line)

    def _progress(self, job: JobRecord, state: JobState, bar_width: int, wide: bool,
                  part: Callable[[str], Style]) -> list[Segment]:
        if state == JobState.PENDING or (job.stage == 0 and job.percent < 0):
            return [Segment("waiting for its turn", part("muted"))]
        done, rest = progress_bar(job.percent, bar_width)
        stage = fit(f"{job.stage}/{job.stages}", 4, "right")
        segments = [Segment(done, part("bar")), Segment(rest, part("bar-rest")),
                    Segment(" " + stage, part("muted"))]
        if wide:
            segments.append(Segment(" " + fit(job.stage_label, 9), part("muted")))
        percent = f"{job.percent:.0f}%" if job.percent >= 0 else ""
        eta = job.eta
        when = f"eta {format_duration(eta)}" if eta is not None else ""
        if eta is None and job.percent < 0 and job.started:
            # No measure of how far (a libvirt wipe): how long it has run, at least.
            when = f"for {format_duration(max(0.0, self.clock() - job.started))}"
        rate, when = self._slow_words(job.id, format_rate(job.throughput), when)
        segments += [
            Segment(" " + fit(percent, 4, "right"), part(str(state))),
            Segment(" " + fit(rate, 7, "right"), part("muted")),
            Segment(" " + fit(when, 9), part("muted")),
        ]
        return segments

    def _slow_words(self, job_id: int, rate: str, when: str) -> tuple[str, str]:
        """The rate and time left as last shown, unless SLOW_WORDS_EVERY has passed."""
        now = self.pace()
        shown = self.slow_words.get(job_id)
        if shown is None or now - shown[0] >= SLOW_WORDS_EVERY:
            shown = self.slow_words[job_id] = (now, rate, when)
        return shown[1], shown[2]

    def _outcome(self, job: JobRecord, state: JobState) -> tuple[str, str]:
        """What an ended job came to, and the part that styles it."""
        if state == JobState.DONE:
            took = (job.finished - job.started) if job.finished and job.started else None
            words = f"took {format_age(took) if took and took >= 1 else '<1s'}" \
                if took is not None else "done"
            if job.finished:
                ago = format_age(max(0.0, self.clock() - job.finished))
                words += " · just now" if ago == "now" else f" · {ago} ago"
            return words, "muted"
        text = printable(short_error(job.error or str(state)))
        return text, "error" if state == JobState.FAILED else "muted"
