"""Shared fixtures: a tiny in-memory corpus for unit tests of the core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.device import seed_everything
from mrd_cli.core.partition import GROUP_CODE
from mrd_cli.data.corpus import Corpus, Dialogue
from mrd_cli.recipes.distill import DistillStep

LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]

# One thread, as the CLI runs by default: the tests' thousands of small operations are
# several times slower with two OpenMP threads when other processes hold the cores.
torch.set_num_threads(1)


def make_toy_corpus(num_dialogues: int = 30, seed: int = 0) -> Corpus:
    """Random dialogues whose classes are separable (prototype + noise) in every modality."""
    rng = np.random.default_rng(seed)
    dims = {"text": 12, "audio": 8, "visual": 6}
    protos = {m: rng.normal(size=(len(LABELS), d)) * 2 for m, d in dims.items()}
    dialogues = {}
    for i in range(num_dialogues):
        n = int(rng.integers(3, 12))
        y = rng.integers(0, len(LABELS), n)
        feats = {
            m: (p[y] + rng.normal(size=(n, p.shape[1]))).astype(np.float32)
            for m, p in protos.items()
        }
        dialogues[f"d{i}"] = Dialogue(f"d{i}", rng.integers(0, 2, n), y, feats)
    ids = list(dialogues)
    a, b = int(num_dialogues * 0.6), int(num_dialogues * 0.8)
    corpus = Corpus(
        "toy", LABELS, dialogues, {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}, 2
    )
    corpus.validate()
    return corpus


@pytest.fixture
def toy_corpus() -> Corpus:
    return make_toy_corpus()


def distill_steps(session, steps: int = 3) -> list[list[float]]:
    """The loss terms (``recipes.distill.TERMS``) of the first ``steps`` distillation steps
    of a freshly built pair, every utterance active; the regression pins and the
    refactoring-target tests read them."""
    seed_everything(0)
    multi, text = session.build_model("multi"), session.build_model("text")
    train = session.tensors("train")
    for model in (multi, text):
        sel = train.select(model.modalities)
        model.set_input_stats(sel.features, sel.mask)
    groups = torch.full_like(train.labels, GROUP_CODE["simple"])
    d = session.cfg.distill
    curriculum = Curriculum.build("none", d.epochs, d.stage_fractions, True, {"simple": 1})
    step = DistillStep(multi, text, train, groups, d, curriculum, 6)
    generator = torch.Generator().manual_seed(0)
    multi.train()
    text.train()
    batches = step.batches(0, generator)
    return [step.update(next(batches)).tolist() for _ in range(steps)]
