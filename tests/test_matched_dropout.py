"""Distillation's matched-dropout refactoring target in one pass
(``DialogueModel.forward_matched``) equals the two passes it replaces: the frozen copy under a
forked random state (``same_dropout_logits``), then the model. Same logits, same gradients,
same random state afterwards, bit for bit; so distillation trains exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrd_cli import Session
from mrd_cli.config import Config
from mrd_cli.core.device import seed_everything
from mrd_cli.core.rundir import RunDir
from mrd_cli.models.dialogue import run_model
from mrd_cli.recipes import distill as distill_recipe
from mrd_cli.recipes.distill import frozen_copy, same_dropout_logits

try:
    from conftest import distill_steps, make_toy_corpus
except ImportError:  # run as a script
    from tests.conftest import distill_steps, make_toy_corpus


def _session(tmp_path: Path) -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.batch_size = 4
    cfg.distill.batch_size = 4
    return Session(cfg, make_toy_corpus(num_dialogues=20), RunDir(tmp_path), torch.device("cpu"))


@pytest.mark.parametrize("role", ["multi", "text"])
def test_one_pass_equals_frozen_then_model_bit_for_bit(tmp_path, role):
    session = _session(tmp_path)
    seed_everything(0)
    model = session.build_model(role).train()
    train = session.tensors("train").select(model.modalities)
    model.set_input_stats(train.features, train.mask)
    frozen = frozen_copy(model)
    with torch.no_grad():  # the model has moved away from its frozen copy
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = next(iter(train.batches(4)))

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    torch.manual_seed(7)
    frozen_two = same_dropout_logits(frozen, batch)
    logits_two = run_model(model, batch)
    state_two = torch.get_rng_state()
    (logits_two * frozen_two).sum().backward()
    grads_two = grads()

    torch.manual_seed(7)
    logits_one, frozen_one = model.forward_matched(
        frozen, batch.features, batch.speakers, batch.mask, batch.lengths
    )
    state_one = torch.get_rng_state()
    (logits_one * frozen_one).sum().backward()
    grads_one = grads()

    assert torch.equal(logits_one, logits_two)
    assert torch.equal(frozen_one, frozen_two)
    assert not frozen_one.requires_grad
    assert torch.equal(state_one, state_two)
    for name in grads_two:
        assert torch.equal(grads_one[name], grads_two[name]), name
    assert not any(p.grad is not None for p in frozen.parameters())


def test_distillation_steps_are_unchanged_by_the_one_pass(tmp_path, monkeypatch):
    one_pass = distill_steps(_session(tmp_path / "a"))
    monkeypatch.setattr(distill_recipe, "matched_in_one_pass", lambda model, batch: False)
    two_passes = distill_steps(_session(tmp_path / "b"))
    assert one_pass == two_passes


def test_one_pass_refuses_a_copy_with_other_input_statistics(tmp_path):
    session = _session(tmp_path)
    model = session.build_model("text").train()
    frozen = frozen_copy(model)
    frozen.mean_text.add_(1.0)
    batch = next(iter(session.tensors("train").select(["text"]).batches(4)))
    with pytest.raises(ValueError, match="input statistics"):
        model.forward_matched(frozen, batch.features, batch.speakers, batch.mask, batch.lengths)
