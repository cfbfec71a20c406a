"""Rich progress bars for epoch loops, showing the loss terms and validation W-F1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mrd_cli.cli.common import err_console
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
    """One bar per training task; ``update(key, log)`` is the core's ``on_epoch`` callback."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}
        # Per (task, model): the top validation W-F1 of a trained epoch seen so far.
        self.top: dict[tuple[str, str], float] = {}

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
