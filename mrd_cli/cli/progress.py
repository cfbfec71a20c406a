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

    def add(self, key: str, description: str, total: int) -> None:
        self.tasks[key] = self.progress.add_task(description, total=total, info="")

    def update(self, key: str, log: EpochLog) -> None:
        if key not in self.tasks:
            self.add(key, key, log.epochs)
        loss = " ".join(f"{k}={v:.3f}" for k, v in log.losses.items())
        val = " ".join(
            f"val W-F1[{k}]={v:.2f} (best {log.best_wf1.get(k, v):.2f})"
            for k, v in log.val_wf1.items()
        )
        self.progress.update(
            self.tasks[key], completed=log.epoch, total=log.epochs, info=f"{loss} | {val}"
        )


@contextmanager
def epoch_bars() -> Iterator[EpochBars]:
    with make_progress() as progress:
        yield EpochBars(progress)
