"""The cross-fitted partition's fold models (``recipes.partition.cross_fitted_predictions``):
each is the model ``train_role`` trains on that fold's training dialogues alone, and an
interrupted partition resumes each fold model from its last finished epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrd_cli import Session
from mrd_cli.cli.common import resume_advice
from mrd_cli.config import Config
from mrd_cli.core.partition import fold_assignment
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.training import predict
from mrd_cli.recipes.partition import cross_fitted_predictions
from mrd_cli.recipes.pretrain import train_role

try:
    from conftest import make_toy_corpus
except ImportError:  # run as a script
    from tests.conftest import make_toy_corpus

FOLDS = 3
EPOCHS = 4


def _session(root: Path, patience: int = 0) -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = EPOCHS
    cfg.pretrain.batch_size = 4
    cfg.pretrain.lr = 1e-2
    cfg.pretrain.patience = patience
    return Session(cfg, make_toy_corpus(num_dialogues=40), RunDir(root), torch.device("cpu"))


def test_fold_predictions_equal_each_fold_model_trained_alone(tmp_path):
    session = _session(tmp_path / "run")
    preds = cross_fitted_predictions(session, FOLDS)
    train, val = session.tensors("train"), session.tensors("val")
    assignment = fold_assignment(train.num_dialogues, FOLDS, session.cfg.seed)
    for role in ROLES:
        for k in range(FOLDS):
            held = np.flatnonzero(assignment == k)
            model, _ = train_role(
                session,
                role,
                train.subset(np.flatnonzero(assignment != k)),
                val,
                session.cfg.seed + 1000 * (k + 1),
            )
            alone = predict(model, train.subset(held))
            rows = preds[role][torch.as_tensor(held)]
            assert torch.equal(rows[:, : alone.shape[1]], alone), f"{role} fold {k + 1}"
            assert not rows[:, alone.shape[1] :].any()  # padding stays 0
    # Every fold model's state is gone once the partition is made, and their folder.
    assert not (tmp_path / "run" / "folds").exists()


class _Stop(KeyboardInterrupt):
    """Ctrl-C, raised from the progress callback after a chosen epoch."""


@pytest.mark.parametrize(
    "patience", [0, pytest.param(1, marks=pytest.mark.slow)]  # 1: fold models stop early too
)
def test_interrupted_partition_resumes_each_fold_model_from_its_last_epoch(tmp_path, patience):
    reference = cross_fitted_predictions(_session(tmp_path / "ref", patience), FOLDS)

    def interrupt_at(key: str, epoch: int):
        def on_event(event) -> None:
            assert event.kind == "epoch"
            seen.append((event.task, event.log.epoch))
            if (event.task, event.log.epoch) == (key, epoch):
                raise _Stop

        return on_event

    seen: list[tuple[str, int]] = []
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        cross_fitted_predictions(_session(run, patience), FOLDS, interrupt_at("fold 2/3 multi", 2))
    states = sorted(p.name for p in (run / "folds").iterdir())
    assert states == [".multi.fold1.state.pt", ".multi.fold2.state.pt"]

    seen.clear()
    resumed = cross_fitted_predictions(_session(run, patience), FOLDS, interrupt_at("", 0))
    for role in ROLES:
        assert torch.equal(resumed[role], reference[role]), role
    # Fold 1 had finished: no epoch of it again. Fold 2 goes on after its epoch 2.
    assert not [e for k, e in seen if k == "fold 1/3 multi"]
    assert [e for k, e in seen if k == "fold 2/3 multi"][:1] in ([3], [])
    assert [e for k, e in seen if k == "fold 3/3 multi"][:1] == [1]
    assert not list(run.rglob("*.state.pt"))


@pytest.mark.slow
def test_a_state_of_other_settings_is_not_resumed_and_is_removed_at_the_end(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(_Stop):

        def stop(event) -> None:
            if event.log.epoch == 2:
                raise _Stop

        cross_fitted_predictions(_session(run), FOLDS, stop)
    assert (run / "folds" / ".multi.fold1.state.pt").is_file()
    other = _session(run)
    other.cfg.pretrain.lr = 5e-3  # another config: the saved state must not be continued
    fresh = _session(tmp_path / "fresh")
    fresh.cfg.pretrain.lr = 5e-3
    stray = run / "folds" / ".text.fold5.state.pt"  # of an interrupted 5-fold partition
    stray.write_bytes(b"not a state")
    got, want = cross_fitted_predictions(other, FOLDS), cross_fitted_predictions(fresh, FOLDS)
    for role in ROLES:
        assert torch.equal(got[role], want[role]), role
    assert not (run / "folds").exists()


def test_the_interrupt_message_names_the_interrupted_command():
    assert "rerun `mrd partition` as it was" in resume_advice("mrd partition")
    assert "fold models resume from their last finished epoch" in resume_advice("mrd run")
    assert resume_advice("mrd pretrain").endswith("rerun `mrd pretrain` with --resume.")
    assert "--resume" not in resume_advice("mrd compare")
