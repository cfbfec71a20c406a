"""Distillation never ends below its starting point on validation, its refactoring losses
measure drift rather than dropout noise, and a text-only corpus still gives MRD two
different models to distil."""

from __future__ import annotations

import torch

from mrd_cli import Session, distill, partition, pretrain
from mrd_cli.config import Config
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import role_seed
from mrd_cli.recipes.distill import TERMS

try:
    from conftest import distill_steps, make_toy_corpus
except ImportError:  # pragma: no cover
    from tests.conftest import distill_steps, make_toy_corpus


def _config() -> Config:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.model.dropout = 0.3
    cfg.pretrain.epochs = 12
    cfg.pretrain.batch_size = 8
    cfg.pretrain.lr = 1e-2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 3
    cfg.distill.batch_size = 8
    return cfg


def _pretrained_session(root, cfg: Config | None = None) -> Session:
    session = Session(cfg or _config(), make_toy_corpus(), RunDir(root), torch.device("cpu"))
    pretrain(session)
    partition(session)
    return session


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distilled_model_keeps_pretrained_weights_when_every_epoch_is_worse(tmp_path):
    session = _pretrained_session(tmp_path)
    session.cfg.distill.lr = 5.0  # every Adam step wrecks both models
    logs = []
    result = distill(session, on_event=lambda e: logs.append(e.log)).to_dict()["distill"]
    start = {r: result[r]["start_val_weighted_f1"] for r in ("multi", "text")}
    # The case the test is about: no distillation epoch reached the pretrained W-F1.
    assert logs and all(log.val_wf1[r] < start[r] for log in logs for r in start)
    for role in ("multi", "text"):
        assert result[role]["selected_epoch"] == 0
        assert result[role]["kept_pretrained"] is True
        distilled = load_checkpoint(session.run.distilled(role))
        pretrained = load_checkpoint(session.run.pretrained(role))
        assert distilled["epoch"] == 0 and distilled["kept_pretrained"] is True
        assert _same_weights(distilled["state_dict"], pretrained["state_dict"])


def test_without_keep_start_the_best_distillation_epoch_is_taken(tmp_path):
    session = _pretrained_session(tmp_path)
    session.cfg.distill.lr = 5.0
    session.cfg.distill.keep_start = False
    result = distill(session).to_dict()["distill"]
    for role in ("multi", "text"):
        assert result[role]["selected_epoch"] >= 1
        assert result[role]["keep_start"] is False
        distilled = load_checkpoint(session.run.distilled(role))
        pretrained = load_checkpoint(session.run.pretrained(role))
        assert not _same_weights(distilled["state_dict"], pretrained["state_dict"])


def _first_step_terms(target: str) -> dict[str, float]:
    cfg = _config()
    cfg.distill.refactoring_target = target
    session = Session(cfg, make_toy_corpus(), RunDir("."), torch.device("cpu"))
    return dict(zip(TERMS, distill_steps(session, steps=1)[0]))


def test_matched_dropout_refactoring_loss_is_zero_before_the_first_step():
    terms = _first_step_terms("matched_dropout")
    assert terms["ref_m"] == 0.0 and terms["ref_t"] == 0.0


def test_eval_refactoring_target_measures_dropout_noise_before_the_first_step():
    terms = _first_step_terms("eval")
    # Nothing has moved yet, but dropout alone puts the model far from its eval output.
    assert terms["ref_m"] > 0.05 and terms["ref_t"] > 0.05


def test_text_only_corpus_gives_the_text_model_its_own_seed(tmp_path):
    cfg = _config()
    cfg.dataset.modalities = ["text"]
    assert role_seed(cfg, "multi", 3) == 3 and role_seed(cfg, "text", 3) != 3
    session = _pretrained_session(tmp_path, cfg)
    multi = load_checkpoint(session.run.pretrained("multi"))["state_dict"]
    text = load_checkpoint(session.run.pretrained("text"))["state_dict"]
    assert multi.keys() == text.keys() and not _same_weights(multi, text)


def test_multimodal_corpus_keeps_one_seed_for_both_models():
    cfg = _config()
    assert role_seed(cfg, "multi", 3) == 3 and role_seed(cfg, "text", 3) == 3


def _guard_trainer(confidence: float, better_dialogues: int):
    """A trainer whose starting weights and best epoch differ only in their validation
    predictions: the best epoch is right on ``better_dialogues`` more dialogues."""
    from mrd_cli.core.training import Selected, Trainer

    session = Session(_config(), make_toy_corpus(60), RunDir("."), torch.device("cpu"))
    val = session.tensors("val")
    model = session.build_model("text")
    trainer = Trainer(
        models={"text": model},
        optimizer=torch.optim.Adam(model.parameters()),
        epochs=1,
        val=val,
        label_names=session.corpus.label_names,
        seed=0,
        start_confidence=confidence,
    )
    y = val.labels[val.mask]
    dialogue = torch.nonzero(val.mask)[:, 0]
    wrong = (y + 1) % 6
    start_pred = torch.where(dialogue % 2 == 0, y, wrong)  # right on even dialogues
    best_pred = torch.where((dialogue % 2 == 0) | (dialogue < 2 * better_dialogues), y, wrong)

    def sel(epoch, pred):
        wf1 = 100.0 * (pred == y).float().mean().item()  # stands in for W-F1
        return Selected({}, epoch, {"weighted_f1": wf1}, pred)

    trainer.start_selected = {"text": sel(0, start_pred)}
    trainer.best = {"text": sel(4, best_pred)}
    return trainer


def test_gain_within_validation_noise_keeps_the_starting_weights():
    trainer = _guard_trainer(confidence=0.9, better_dialogues=1)
    assert trainer.selected()["text"].epoch == 0
    guard = trainer.start_guard["text"]
    assert guard["kept_start"] and guard["best_epoch"] == 4 and guard["p_gain"] < 0.9


def test_gain_beyond_validation_noise_replaces_the_starting_weights():
    trainer = _guard_trainer(confidence=0.9, better_dialogues=6)
    assert trainer.selected()["text"].epoch == 4
    assert trainer.start_guard["text"]["p_gain"] >= 0.9


def test_start_confidence_zero_takes_any_higher_validation_score():
    trainer = _guard_trainer(confidence=0.0, better_dialogues=1)
    assert trainer.selected()["text"].epoch == 4 and trainer.start_guard == {}
