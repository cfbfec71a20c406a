"""Models trained together (``models.stacked``, ``recipes.pretrain.train_role_stacked``)
equal the same models trained alone (``train_role``) with the same seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrd_cli import Session
from mrd_cli.config import Config
from mrd_cli.core.device import seed_everything
from mrd_cli.core.rundir import RunDir
from mrd_cli.data.tensors import SplitTensors
from mrd_cli.models.stacked import StackedModels
from mrd_cli.recipes.pretrain import train_role, train_role_stacked

try:
    from conftest import make_toy_corpus
except ImportError:  # run as a script
    from tests.conftest import make_toy_corpus

# float32 rounding of batched vs unbatched kernels, over a few dozen Adam steps.
ATOL = 1e-4


def _session(tmp_path: Path, epochs: int = 3, patience: int = 0, lr: float = 1e-2) -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = epochs
    cfg.pretrain.batch_size = 4
    cfg.pretrain.lr = lr
    cfg.pretrain.patience = patience
    corpus = make_toy_corpus(num_dialogues=40)
    return Session(cfg, corpus, RunDir(tmp_path), torch.device("cpu"))


def _folds(train: SplitTensors, k: int) -> list[SplitTensors]:
    # Unequal parts, so that the models have different numbers of batches per epoch.
    n = train.num_dialogues
    return [train.subset(np.arange(n)[np.arange(n) % k != i][: n - 3 - i]) for i in range(k)]


@pytest.mark.parametrize("role", ["multi", "text"])
def test_stacked_forward_equals_each_model(tmp_path, role):
    session = _session(tmp_path)
    val = session.tensors("val")
    models = []
    for seed in (1, 2, 3):
        seed_everything(seed)
        models.append(session.build_model(role).eval())
    stack = StackedModels(models)
    batches = list(val.select(models[0].modalities).batches(5))
    for batch in batches:
        # Each model its own batch; one model sits out.
        trio = [batch, batches[0], None]
        logits, lay = stack.forward(trio, None)
        for k, b in enumerate(trio):
            if b is None:
                assert lay.counts[k] == 0
                continue
            alone = models[k](b.features, b.speakers, b.mask, b.lengths)[b.mask]
            torch.testing.assert_close(logits[k, : lay.counts[k]], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("patience", "lr"),
    [(0, 1e-2), (1, 1e-5)],  # the second case stops early: validation barely moves
)
def test_models_trained_together_equal_models_trained_alone(tmp_path, patience, lr):
    session = _session(tmp_path, epochs=6, patience=patience, lr=lr)
    train, val = session.tensors("train"), session.tensors("val")
    parts = _folds(train, 3)
    seeds = [11, 22, 33]
    together = train_role_stacked(session, "multi", list(zip(parts, seeds)), val)
    for part, seed, (model, sel) in zip(parts, seeds, together):
        alone, alone_sel = train_role(session, "multi", part, val, seed)
        assert sel.epoch == alone_sel.epoch
        assert sel.stopping["epochs_run"] == alone_sel.stopping["epochs_run"]
        assert sel.stopping["stopped_at"] == alone_sel.stopping["stopped_at"]
        assert sel.val_metrics["weighted_f1"] == pytest.approx(
            alone_sel.val_metrics["weighted_f1"], abs=1e-9
        )
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], value, atol=ATOL, rtol=1e-3)
    if patience:  # the case exercises early stopping
        assert any(sel.stopping["stopped_at"] for _, sel in together)
