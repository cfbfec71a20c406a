"""Wall time per pipeline step, for the time summary of ``mrd run`` and ``mrd ablate``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# The steps of the summary, in pipeline order; each is listed even when it took no time
# (reused outputs).
STEPS = ("load", "pretrain", "partition", "distill", "evaluate")


class StepTimer:
    """Accumulates wall-clock seconds per named step (a step may run several times)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {s: 0.0 for s in STEPS}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def to_dict(self) -> dict[str, float]:
        """Seconds per step (rounded to ms) and their ``total``."""
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["total"] = round(sum(self.seconds.values()), 3)
        return out


@contextmanager
def maybe(timer: StepTimer | None, name: str) -> Iterator[None]:
    """``timer.step(name)``, or nothing without a timer."""
    if timer is None:
        yield
    else:
        with timer.step(name):
            yield
