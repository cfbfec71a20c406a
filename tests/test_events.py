"""One event protocol for progress (``core.events``): every recipe reports through one
``on_event`` callable, and the CLI's display (``cli.progress.EpochBars``) shows each kind."""

from __future__ import annotations

import inspect
import io

import pytest
from rich.console import Console
from rich.progress import Progress, TextColumn

from mrd_cli.cli.progress import EpochBars
from mrd_cli.core.events import KINDS, Event, emit, items
from mrd_cli.core.training import EpochLog
from mrd_cli.recipes.ablate import ablate
from mrd_cli.recipes.compare import compare
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import cross_fitted_predictions, ensure_partitioned, partition
from mrd_cli.recipes.predict import predict
from mrd_cli.recipes.pretrain import pretrain
from mrd_cli.recipes.selftrain import selftrain
from mrd_cli.recipes.tune import tune

RECIPES = [
    pretrain,
    partition,
    cross_fitted_predictions,
    ensure_partitioned,
    distill,
    ablate,
    compare,
    selftrain,
    tune,
    predict,
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda f: f.__name__)
def test_every_recipe_reports_through_one_on_event_callable(recipe):
    params = inspect.signature(recipe).parameters
    callbacks = [name for name in params if name.startswith("on_")]
    assert callbacks == ["on_event"], f"{recipe.__name__}: {callbacks}"
    assert params["on_event"].default is None


def test_an_event_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown event kind"):
        Event("epochs")
    got: list[Event] = []
    emit(got.append, "step", text="pretrain")
    emit(None, "step", text="nobody listens")
    assert got == [Event("step", text="pretrain")]
    assert set(KINDS) >= {"epoch", "step", "note", "warning", "cell", "trial", "wait", "round"}
    counted: list[Event] = []
    items(counted.append)("Predicting", 3)(2)
    assert [e.payload for e in counted] == [{"done": 0, "total": 3}, {"done": 2, "total": 3}]
    assert {e.kind for e in counted} == {"items"} and counted[0].task == "Predicting"


def _display() -> tuple[EpochBars, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    progress = Progress(TextColumn("{task.description} {task.fields[info]}"), console=console)
    return EpochBars(progress), out


def test_the_cli_display_shows_each_kind_of_event():
    bars, out = _display()
    log = EpochLog(2, 5, {"total": 1.25}, {"model": 61.5}, {"model": 62.0})
    bars(Event("epoch", task="fold 2/5 text", log=log))
    task = bars.progress.tasks[bars.tasks["fold 2/5 text"]]
    assert (task.completed, task.total) == (2, 5)
    assert "total=1.250" in task.fields["info"] and "61.50" in task.fields["info"]
    bars(Event("step", text="partition (reused)"))
    bars(Event("note", text="fold 1/5 multi: done"))
    bars(Event("warning", text="The simple group of the partition is empty"))
    bars.add_cells("ablation cells", 3)
    bars(Event("cell", payload={"name": "MRD", "seed": 0, "reused": True}))
    bars(Event("cell", payload={"name": "MRD w/o ILC", "seed": 0, "reused": False}))
    cells = bars.progress.tasks[bars.tasks["cells"]]
    assert cells.completed == 2 and cells.fields["info"] == "MRD w/o ILC, seed 0 (done)"
    bars.finish_cells()
    assert cells.completed == 3 and cells.fields["info"] == "done"
    advance = items(bars)("Encoding text", 10)
    advance(4)
    advance(3)
    encoded = bars.progress.tasks[bars.tasks["Encoding text"]]
    assert (encoded.completed, encoded.total) == (7, 10)
    bars(Event("round", payload={"round": 0}))  # shown by nobody here: passed over
    text = out.getvalue()
    assert "step: partition (reused)" in text
    assert "fold 1/5 multi: done" in text
    assert "Warning: The simple group of the partition is empty" in text


def test_a_command_takes_a_kind_of_event_itself():
    bars, _ = _display()
    trials: list[dict] = []
    bars.handle("trial", lambda e: trials.append(e.payload["row"]))
    bars(Event("trial", payload={"row": {"number": 3}, "counts": {}}))
    assert trials == [{"number": 3}]
