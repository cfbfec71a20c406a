"""Early stopping in ``core.training.Trainer``: the rule, what is recorded, the floor that
keeps distillation's curriculum stages whole."""

from __future__ import annotations

import pytest
import torch

from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.training import Trainer, patience_exhausted

try:
    from conftest import LABELS, make_toy_corpus
except ImportError:  # run as a script
    from tests.conftest import LABELS, make_toy_corpus


@pytest.mark.parametrize(
    ("done", "best", "patience", "floor", "expected"),
    [
        (5, [2], 3, 0, True),
        (4, [2], 3, 0, False),
        (5, [2, 4], 3, 0, False),  # every model must have run out of patience
        (7, [2, 3], 3, 0, True),
        (5, [1], 0, 0, False),  # patience 0: off
        (10, [1], 3, 0, False),  # the last epoch: nothing left to skip
        (8, [1], 3, 6, False),  # counted from the floor only
        (9, [1], 3, 6, True),
    ],
)
def test_patience_rule(done, best, patience, floor, expected):
    assert patience_exhausted(done, best, patience, floor, max_epochs=10) is expected


def _trainer(patience: int, floor: int = 0, epochs: int = 12) -> Trainer:
    from mrd_cli.config import Config
    from mrd_cli.core.session import build_model
    from mrd_cli.data.tensors import split_tensors

    corpus = make_toy_corpus()
    cfg = Config()
    cfg.model.hidden = 8
    model = build_model(corpus, cfg, "text", torch.device("cpu"))
    val = split_tensors(corpus, "val", torch.device("cpu"))
    return Trainer(
        models={"model": model},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        epochs=epochs,
        val=val,
        label_names=LABELS,
        seed=0,
        patience=patience,
        stop_floor=floor,
    )


def test_trainer_stops_when_validation_stops_improving_and_records_why():
    # lr 0: the model never changes, so epoch 1 stays the best.
    trainer = _trainer(patience=3)
    ran = []
    for epoch in trainer.epochs():
        ran.append(epoch)
        trainer.end_epoch(epoch, {"total": torch.tensor(1.0)})
    assert ran == [0, 1, 2, 3]
    sel = trainer.selected()["model"]
    assert sel.epoch == 1
    assert sel.stopping["stopped_at"] == 4 and sel.stopping["epochs_run"] == 4
    assert "early stop" in sel.stopping["stop_reason"]


def test_trainer_without_patience_runs_every_epoch():
    trainer = _trainer(patience=0, epochs=5)
    for epoch in trainer.epochs():
        trainer.end_epoch(epoch, {"total": torch.tensor(1.0)})
    stopping = trainer.selected()["model"].stopping
    assert stopping["stopped_at"] is None and stopping["epochs_run"] == 5


def test_distillation_stops_only_within_the_last_curriculum_stage():
    curriculum = Curriculum.build(
        "reverse",
        12,
        {"difficult": 0.3, "general": 0.3, "simple": 0.4},
        True,
        {"mcti": 5, "mitc": 5, "general": 5, "simple": 5},
    )
    floor = curriculum.last_stage_start
    assert floor == 12 - curriculum.stages[-1][1] > 0
    trainer = _trainer(patience=2, floor=floor)
    ran = [e for e in trainer.epochs() if trainer.end_epoch(e, {"total": torch.tensor(1.0)})]
    assert len(ran) == floor + 2  # two epochs into the last stage, never earlier
