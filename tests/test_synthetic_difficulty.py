"""The built-in synthetic data is hard in the ways MRD is about: trained models land in a
realistic W-F1 range, the multimodal model beats the text model, and the two disagree on a
non-trivial share of test utterances in both directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrd_cli.config import load_config
from mrd_cli.core.metrics import ambiguity_table, weighted_f1
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.training import predict
from mrd_cli.data.formats import load_corpus
from mrd_cli.recipes.pretrain import train_role

# Trains the real models on the small preset: end-to-end, so in the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg, _ = load_config("synthetic")
    corpus = load_corpus(cfg.dataset)
    session = Session(cfg, corpus, RunDir(tmp_path_factory.mktemp("run")), torch.device("cpu"))
    train, val, test = (session.tensors(s) for s in ("train", "val", "test"))
    out = {}
    for role in ("multi", "text"):
        model, selected = train_role(session, role, train, val, seed=0)
        out[role] = (predict(model, test)[test.mask].numpy(), selected)
    y_true = test.labels[test.mask].numpy()
    return y_true, out, corpus.label_names


def test_pretraining_beats_chance_on_validation(trained):
    _, out, labels = trained
    # Chance level W-F1 for a majority-class guess on this imbalance is about 15-20.
    for _, selected in out.values():
        assert selected.val_metrics["weighted_f1"] > 40.0


def test_multimodal_model_lands_in_a_realistic_range_and_beats_text(trained):
    y_true, out, labels = trained
    multi = weighted_f1(y_true, out["multi"][0], len(labels))
    text = weighted_f1(y_true, out["text"][0], len(labels))
    assert 55.0 <= multi <= 85.0
    assert multi > text


def test_text_and_multimodal_models_disagree_both_ways(trained):
    y_true, out, labels = trained
    amb = ambiguity_table(y_true, out["multi"][0], out["text"][0], labels)
    n = len(y_true)
    mcti, mitc = sum(amb["mcti"].values()), sum(amb["mitc"].values())
    assert mcti / n > 0.05, "multimodal-right / text-wrong should be common"
    assert mitc / n > 0.02, "text-right / multimodal-wrong should exist too"
    assert np.mean(out["multi"][0] != out["text"][0]) > 0.1
