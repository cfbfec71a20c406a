"""Rich progress bars for epoch loops, showing the loss terms and validation W-F1, and the
CLI's display of every recipe's events (``EpochBars`` is the ``on_event`` they get)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mrd_cli.cli.common import err_console, shown
from mrd_cli.core.events import Event
from mrd_cli.core.training import EpochLog


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=False,
    )


class EpochBars:
    """One bar per training task, and the CLI's one ``on_event`` (``core.events``): called
    with an event, it moves an ``epoch`` event's task bar (``update``), prints a ``step``,
    ``note`` or ``warning`` line and advances the ``cells`` bar (``add_cells``) on a
    ``cell`` event, and counts an ``items`` event's task on a bar of its own. A command
    takes any kind itself with ``handle(kind, fn)``; kinds nobody
    shows (``round``, ``trial`` and ``wait`` unless handled) are passed over."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}
        # Per (task, model): the top validation W-F1 of a trained epoch seen so far.
        self.top: dict[tuple[str, str], float] = {}
        self.handlers: dict[str, Callable[[Event], None]] = {}
        self.cells_done = 0

    def add(self, key: str, description: str, total: int) -> None:
        self.tasks[key] = self.progress.add_task(description, total=total, info="")

    def _so_far(self, task: str, log: EpochLog, name: str, value: float) -> str:
        """The best validation W-F1 so far; with a start candidate (distillation), the
        start's and the top trained epoch's apart, since the start guard decides only at
        the end which is kept (the final message says which and why)."""
        top = self.top[task, name] = max(self.top.get((task, name), value), value)
        if name not in log.start_wf1:
            return f"best {log.best_wf1.get(name, value):.2f}"
        return f"start {log.start_wf1[name]:.2f}, top epoch {top:.2f}"

    def add_cells(self, description: str, total: int) -> None:
        """A bar of ``total`` cells that each ``cell`` event advances."""
        self.add("cells", description, total)

    def finish_cells(self) -> None:
        task = self.tasks["cells"]
        self.progress.update(task, completed=self.progress.tasks[task].total, info="done")

    def handle(self, kind: str, fn: Callable[[Event], None]) -> None:
        """Let ``fn`` take the events of ``kind`` instead of the default display."""
        self.handlers[kind] = fn

    def __call__(self, event: Event) -> None:
        console = self.progress.console
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
            self.progress.update(self.tasks[event.task], completed=event.payload["done"])
        elif event.kind == "cell" and "cells" in self.tasks:
            self.cells_done += 1
            cell = event.payload
            self.progress.update(
                self.tasks["cells"],
                completed=self.cells_done,
                info=f"{cell['name']}, seed {cell['seed']}"
                + (" (reused)" if cell["reused"] else " (done)"),
            )

    def update(self, key: str, log: EpochLog) -> None:
        if key not in self.tasks:
            self.add(key, key, log.epochs)
        loss = " ".join(f"{k}={v:.3f}" for k, v in log.losses.items())
        val = " ".join(
            # "\\[" so that Rich prints "[multi]" instead of reading it as markup.
            f"val W-F1\\[{k}]={v:.2f} ({self._so_far(key, log, k, v)})"
            for k, v in log.val_wf1.items()
        )
        self.progress.update(
            self.tasks[key], completed=log.epoch, total=log.epochs, info=f"{loss} | {val}"
        )


@contextmanager
def epoch_bars() -> Iterator[EpochBars]:
    with make_progress() as progress:
        yield EpochBars(progress)
