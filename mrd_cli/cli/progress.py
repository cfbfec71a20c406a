"""Progress of epoch loops and of cells or trials, on stderr: the CLI's display of every
recipe's events (``EpochBars`` is the ``on_event`` they get, ``core/events.py``).

On a terminal: Rich bars, one per task, with the epoch counter and the time left first and
as many validation scores and loss terms after them as the width holds (whole terms are
dropped, the last first, rather than cut). Elsewhere (a log file, a pipe): one plain line
per epoch, in the order they happen, naming the step, the role and the fold in full
(``partition fold 2/5 text: epoch 3/25 ...``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mrd_cli.cli.common import err_console, shown

if TYPE_CHECKING:
    from mrd_cli.core.events import Event
    from mrd_cli.core.training import EpochLog

BAR_WIDTH = 20
# Below this width the bar and the elapsed time are left out: the counter and the time
# left say as much, and the room goes to the scores.
WIDE = 120


def make_progress(console: Console | None = None) -> Progress:
    console = console or err_console
    columns: list = [TextColumn("[bold]{task.description}"), MofNCompleteColumn()]
    columns.append(TimeRemainingColumn())
    if console.width >= WIDE:
        columns += [TimeElapsedColumn(), BarColumn(bar_width=BAR_WIDTH)]
    columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, transient=False)


def _fixed_width(console: Console) -> int:
    """What the columns before the details take besides the description: the counter
    ("25/25", up to 7), the time left ("0:00:12"), on a wide console the elapsed time and
    the bar, and one space between columns."""
    fixed = 7 + 1 + 8 + 1
    if console.width >= WIDE:
        fixed += 8 + 1 + BAR_WIDTH + 1
    return fixed


def epoch_terms(log: EpochLog, so_far: Callable[[str, float], str] | None = None) -> list[str]:
    """What an epoch reports, most important first: each model's validation W-F1 (and,
    from ``so_far(model, value)``, the best so far), then the loss terms."""

    def best(name: str, value: float) -> str:
        return f"best {log.best_wf1.get(name, value):.2f}"

    so_far = so_far or best
    val = [f"val W-F1[{k}]={v:.2f} ({so_far(k, v)})" for k, v in log.val_wf1.items()]
    return [*val, *(f"{k}={v:.3f}" for k, v in log.losses.items())]


def fit_terms(terms: list[str], width: int) -> str:
    """As many whole ``terms`` as fit in ``width`` characters, in order, comma-separated."""
    out = ""
    for term in terms:
        candidate = f"{out}, {term}" if out else term
        if len(candidate) > width:
            break
        out = candidate
    return out


class EpochBars:
    """One bar (or, off a terminal, one line per report) per task, and the CLI's one
    ``on_event`` (``core.events``): called with an event, it moves an ``epoch`` event's task
    (``update``), prints a ``step``, ``note`` or ``warning`` line and advances the ``cells``
    task (``add_cells``) on a ``cell`` event, and counts an ``items`` event's task. A command takes any kind itself with
    ``handle(kind, fn)``; kinds nobody shows (``round``, ``trial`` and ``wait`` unless
    handled) are passed over. ``advance`` reports cells or trials done."""

    def __init__(self, progress: Progress | None, console: Console | None = None):
        self.progress = progress
        self.console = console or (progress.console if progress else err_console)
        self.tasks: dict[str, int] = {}
        self.descriptions: dict[str, str] = {}
        self.totals: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self.handlers: dict[str, Callable[[Event], None]] = {}
        self.cells_done = 0
        # Per (task, model): the top validation W-F1 of a trained epoch seen so far.
        self.top: dict[tuple[str, str], float] = {}

    def _so_far(self, task: str, log: EpochLog, name: str, value: float) -> str:
        """The best validation W-F1 so far; with a start candidate (distillation), the
        start's and the top trained epoch's apart, since the start guard decides only at
        the end which is kept (the final message says which and why)."""
        top = self.top[task, name] = max(self.top.get((task, name), value), value)
        if name not in log.start_wf1:
            return f"best {log.best_wf1.get(name, value):.2f}"
        return f"start {log.start_wf1[name]:.2f}, top epoch {top:.2f}"

    def add_cells(self, description: str, total: int) -> None:
        """A task of ``total`` cells that each ``cell`` event advances."""
        self.add("cells", description, total)

    def finish_cells(self) -> None:
        self.advance("cells", self.totals["cells"], "done")

    def handle(self, kind: str, fn: Callable[[Event], None]) -> None:
        """Let ``fn`` take the events of ``kind`` instead of the default display."""
        self.handlers[kind] = fn

    def __call__(self, event: Event) -> None:
        console = self.console
        if event.kind in self.handlers:
            self.handlers[event.kind](event)
        elif event.kind == "epoch" and event.log is not None:
            self.update(event.task, event.log)
        elif event.kind == "step":
            console.print(f"[bold]step:[/] {shown(event.text)}", soft_wrap=True)
        elif event.kind == "note":
            console.print(f"  {shown(event.text)}", soft_wrap=True)
        elif event.kind == "warning":
            console.print(f"[yellow]Warning:[/] {shown(event.text)}", soft_wrap=True)
        elif event.kind == "items":
            if event.task not in self.tasks:
                self.add(event.task, event.task, event.payload["total"])
            done, total = event.payload["done"], event.payload["total"]
            if self.progress is not None:
                self.progress.update(self.tasks[event.task], completed=done)
            elif done >= total:  # off a terminal: one line when the task is complete
                self._line(event.task, f"{done}/{total}", [])
        elif event.kind == "cell" and "cells" in self.tasks:
            self.cells_done += 1
            cell = event.payload
            self.advance(
                "cells",
                self.cells_done,
                f"{cell['name']}, seed {cell['seed']}"
                + (" (reused)" if cell["reused"] else " (done)"),
            )

    @property
    def plain(self) -> bool:
        return self.progress is None

    def add(self, key: str, description: str, total: int) -> None:
        self.descriptions[key] = description
        self.totals[key] = total
        self._started[key] = time.monotonic()
        if self.progress is not None:
            self.tasks[key] = self.progress.add_task(description, total=total, info="")
        else:
            self.tasks[key] = len(self.tasks)

    def rename(self, key: str, description: str) -> None:
        self.descriptions[key] = description
        if self.progress is not None:
            self.progress.update(self.tasks[key], description=description)

    def update(self, key: str, log: EpochLog) -> None:
        if key not in self.tasks:
            self.add(key, describe(key), log.epochs)
        self.totals[key] = log.epochs
        terms = epoch_terms(log, lambda name, value: self._so_far(key, log, name, value))
        if self.progress is None:
            self._line(key, f"epoch {log.epoch}/{log.epochs}", terms)
            return
        desc = max((len(d) for d in self.descriptions.values()), default=0)
        info = fit_terms(terms, self.console.width - desc - 1 - _fixed_width(self.console))
        info = shown(info)  # "[multi]" is text, not Rich markup
        self.progress.update(self.tasks[key], completed=log.epoch, total=log.epochs, info=info)

    def advance(self, key: str, completed: int, info: str) -> None:
        """``completed`` of the task's units (cells, trials) done; ``info`` says the last."""
        if self.progress is None:
            self._line(key, f"{completed}/{self.totals.get(key, '?')}", [info])
            return
        self.progress.update(self.tasks[key], completed=completed, info=info)

    def _line(self, key: str, count: str, terms: list[str]) -> None:
        elapsed = time.monotonic() - self._started.get(key, time.monotonic())
        minutes, seconds = divmod(int(elapsed), 60)
        details = ", ".join(t for t in terms if t)
        self.console.print(
            f"{self.descriptions[key]}: {count} ({minutes}:{seconds:02d} elapsed)"
            + (f": {details}" if details else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def describe(key: str) -> str:
    """The description of a task the recipes name only by ``key``, with its step: a
    pretrained model (``multi``, ``text``) or a partition fold model (``fold 2/5 text``)."""
    if key in ("multi", "text"):
        return f"pretrain {key}"
    return f"partition {key}" if key.startswith("fold ") else key


@contextmanager
def epoch_bars(console: Console | None = None) -> Iterator[EpochBars]:
    console = console or err_console
    if not console.is_terminal:
        yield EpochBars(None, console)
        return
    with make_progress(console) as progress:
        yield EpochBars(progress, console)
