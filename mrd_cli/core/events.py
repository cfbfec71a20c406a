"""One event protocol for progress: what a recipe reports while it runs.

Every recipe takes one ``on_event`` callable (or None) and hands it ``Event``s: the CLI's
Rich display (``cli/progress.py: EpochBars``), a test's ``list.append`` and a library user's
function all receive the same objects, whichever recipe runs. An event says what happened
(``kind``) and carries what that kind needs:

| kind | when | fields |
|---|---|---|
| ``epoch`` | a training task finished an epoch | ``task`` ("multi", "fold 2/5 text", "distill", "text round 1"...), ``log``; a fold model's ``payload``: role, fold (1-based), folds |
| ``step`` | a pipeline step starts or is reused | ``text`` ("pretrain", "partition (reused)") |
| ``note`` | something worth a line (units in other processes, a recipe's remark) | ``text`` |
| ``warning`` | something the user should know (an empty curriculum stage) | ``text`` |
| ``cell`` | an ablation or comparison cell finished or was reused | ``payload``: name, seed, reused |
| ``trial`` | a tuning trial this process ran finished | ``payload``: row, counts |
| ``wait`` | a tuning worker waits for other workers' trials | ``payload``: counts |
| ``round`` | a self-training round finished | ``payload``: the round's report |
| ``items`` | a count of items (texts encoded, audio files, dialogues predicted) moved | ``task`` ("Encoding text"), ``payload``: done, total |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mrd_cli.core.training import EpochLog

KINDS = ("epoch", "step", "note", "warning", "cell", "trial", "wait", "round", "items")


@dataclass(frozen=True)
class Event:
    """One thing a recipe reports (see the module doc for each kind's fields)."""

    kind: str
    task: str = ""
    log: EpochLog | None = None
    text: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; one of {', '.join(KINDS)}")


OnEvent = Callable[[Event], None]


def emit(on_event: OnEvent | None, kind: str, **fields: Any) -> None:
    """Hand ``on_event`` (if any) an ``Event`` of ``kind`` with ``fields``."""
    if on_event is not None:
        on_event(Event(kind, **fields))


def epoch_events(
    on_event: OnEvent | None, task: str, **payload: Any
) -> Callable[[EpochLog], None] | None:
    """What ``Trainer`` calls after each epoch: an ``epoch`` event of ``task`` (None when
    nobody listens)."""
    if on_event is None:
        return None
    return lambda log: on_event(Event("epoch", task=task, log=log, payload=payload))


def items(on_event: OnEvent | None) -> Callable[[str, int], Callable[[int], None]]:
    """Item counters over ``on_event``: ``items(on_event)(task, total)`` reports ``total``
    items of ``task`` to come (an ``items`` event with done 0) and returns ``advance(n)``,
    which reports ``n`` more done."""

    def start(task: str, total: int) -> Callable[[int], None]:
        done = 0
        emit(on_event, "items", task=task, payload={"done": done, "total": total})

        def advance(n: int) -> None:
            nonlocal done
            done += n
            emit(on_event, "items", task=task, payload={"done": done, "total": total})

        return advance

    return start
