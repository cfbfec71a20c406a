"""Masking and batching: padding never changes a prediction, and batching everything on the
device gives the same losses and predictions as processing dialogues one by one."""

import pytest
import torch

from mrd_cli.config import Config
from mrd_cli.core.losses import classification_loss, refactoring_loss
from mrd_cli.core.session import build_model
from mrd_cli.core.training import predict_logits
from mrd_cli.data.tensors import pad_dialogues
from mrd_cli.models.dialogue import run_model


def _models(corpus, encoder):
    cfg = Config()
    cfg.model.hidden = 16
    cfg.model.encoder = encoder
    torch.manual_seed(0)
    return build_model(corpus, cfg, "multi", torch.device("cpu")).eval()


def test_padding_never_changes_predictions(toy_corpus):
    for encoder in ("gru", "transformer"):
        model = _models(toy_corpus, encoder)
        d = toy_corpus.split("train")[0]
        alone = pad_dialogues([d], toy_corpus.modalities)
        longest = max(toy_corpus.split("train"), key=len)
        assert len(longest) > len(d)
        together = pad_dialogues([d, longest], toy_corpus.modalities)
        # Garbage in the padded positions must not leak into real utterances.
        for x in together.features.values():
            x[0, len(d) :] = 1e3
        with torch.no_grad():
            a = model(alone.features, alone.speakers, alone.mask, alone.lengths)[0]
            b = model(together.features, together.speakers, together.mask, together.lengths)
        assert torch.allclose(a, b[0, : len(d)], atol=1e-5), encoder


def test_batched_losses_and_predictions_equal_one_by_one(toy_corpus):
    model = _models(toy_corpus, "gru")
    dialogues = toy_corpus.split("train")
    data = pad_dialogues(dialogues, toy_corpus.modalities)
    logits = predict_logits(model, data, batch_size=7)
    batched_loss = classification_loss(logits, data.labels, data.mask)
    singles, losses, weights = [], [], []
    for d in dialogues:
        one = pad_dialogues([d], toy_corpus.modalities)
        with torch.no_grad():
            z = run_model(model, one.batch(torch.tensor([0])))
        singles.append(z[0])
        losses.append(classification_loss(z, one.labels, one.mask) * len(d))
        weights.append(len(d))
    flat_batched = logits[data.mask]
    flat_single = torch.cat(singles)
    assert torch.allclose(flat_batched, flat_single, atol=1e-5)
    assert torch.equal(flat_batched.argmax(-1), flat_single.argmax(-1))
    one_by_one = torch.stack(losses).sum().item() / sum(weights)
    assert batched_loss.item() == pytest.approx(one_by_one, rel=1e-5)


def test_ilc_is_zero_before_the_first_step_and_grows_when_weights_move(toy_corpus):
    model = _models(toy_corpus, "gru")
    data = pad_dialogues(toy_corpus.split("train"), toy_corpus.modalities)
    frozen = predict_logits(model, data)
    now = predict_logits(model, data)
    assert refactoring_loss(now, frozen, data.mask).item() == 0.0
    with torch.no_grad():
        for p in model.classify.parameters():
            p.add_(0.05)
    moved = refactoring_loss(predict_logits(model, data), frozen, data.mask).item()
    assert moved > 0.0
    with torch.no_grad():
        for p in model.classify.parameters():
            p.add_(0.05)
    assert refactoring_loss(predict_logits(model, data), frozen, data.mask).item() > moved
