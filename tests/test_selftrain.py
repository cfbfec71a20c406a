"""`mrd selftrain` (MER2024-SEMI with few labels): the label budget never leaks a hidden
label, per-class thresholds, NT-Xent and the noise schedule against hand computations, a
round without accepted samples, resuming, and the result as an ordinary checkpoint."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config, load_config
from mrd_cli.core.losses import nt_xent
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.selftrain import (
    accept_pseudo_labels,
    class_thresholds,
    label_budget,
    noise_schedule,
)
from mrd_cli.core.session import Session
from mrd_cli.data.corpus import Corpus, Dialogue
from mrd_cli.errors import MRDError
from mrd_cli.models.semi import soft_vote
from mrd_cli.recipes.evaluate import evaluate
from mrd_cli.recipes.selftrain import _select_round, selftrain
from tests.conftest import LABELS, make_toy_corpus


def tiny_cfg(**selftrain_keys) -> Config:
    cfg = Config()
    cfg.dataset.label_names = list(LABELS)
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 2
    cfg.distill.epochs = 2
    st = cfg.selftrain
    st.labeled_fraction = 0.3
    st.contrastive_epochs = 1
    st.epochs = 3
    st.rounds = 1
    st.batch_size = 4
    st.lr = 5e-3
    st.default_threshold = 0.2  # low, so that the tiny models accept pool utterances
    for key, value in selftrain_keys.items():
        setattr(st, key, value)
    return cfg


def session_on(corpus: Corpus, cfg: Config, root: Path) -> Session:
    return Session(cfg=cfg, corpus=corpus, run=RunDir(root), device=torch.device("cpu"))


def hidden_ids(corpus: Corpus, cfg: Config) -> list[str]:
    train = corpus.split("train")
    budget = label_budget(len(train), cfg.selftrain.labeled_fraction, cfg.seed)
    return [train[i].id for i in budget.hidden]


def poisoned(corpus: Corpus, ids: list[str], seed: int = 1) -> Corpus:
    """The corpus with the labels of dialogues ``ids`` replaced by random ones."""
    rng = np.random.default_rng(seed)
    dialogues = dict(corpus.dialogues)
    for i in ids:
        d = dialogues[i]
        wrong = (d.labels + rng.integers(1, len(LABELS), len(d.labels))) % len(LABELS)
        dialogues[i] = Dialogue(d.id, d.speakers, wrong, d.features)
    return Corpus(corpus.name, corpus.label_names, dialogues, corpus.splits, corpus.num_speakers)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nt_xent_matches_a_hand_computation():
    z_i = [[1.0, 0.0], [1.0, 1.0]]
    z_j = [[0.0, 2.0], [3.0, 1.0]]
    tau = 0.5
    rows = z_i + z_j
    unit = [[x / math.hypot(*r) for x in r] for r in rows]
    n = len(z_i)
    total = 0.0
    for k in range(2 * n):
        positive = (k + n) % (2 * n)
        sims = {
            j: sum(a * b for a, b in zip(unit[k], unit[j])) / tau for j in range(2 * n) if j != k
        }
        total += -(sims[positive] - math.log(sum(math.exp(s) for s in sims.values())))
    expected = total / (2 * n)
    got = nt_xent(torch.tensor(z_i), torch.tensor(z_j), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # The loss falls as the two views of each sample align.
    aligned = nt_xent(torch.tensor(z_i), torch.tensor(z_i) * 3, tau)
    assert aligned.item() < got.item()


def test_noise_schedule_is_the_originals_scaled_linear_one():
    abar = noise_schedule(100, 0.001, 0.1)
    signal, noise = abar.sqrt(), (1 - abar).sqrt()
    # The original's figures: 0.9995 / 0.03 at t=0, 0.72 / 0.69 at t=50, 0.15 / 0.99 at t=99.
    assert (signal[0].item(), noise[0].item()) == pytest.approx((0.9995, 0.0316), abs=1e-3)
    assert (signal[50].item(), noise[50].item()) == pytest.approx((0.72, 0.69), abs=0.01)
    assert (signal[99].item(), noise[99].item()) == pytest.approx((0.15, 0.99), abs=0.01)


def test_soft_vote_is_the_weighted_mean_of_the_heads_probabilities():
    logits = {"text": torch.tensor([[2.0, 0.0]]), "fused": torch.tensor([[0.0, 1.0]])}
    voted = soft_vote(logits, {"text": 0.3, "fused": 0.7}).softmax(-1)
    p_text = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    p_fused = [1 / (1 + math.e), math.e / (1 + math.e)]
    expected = [0.3 * a + 0.7 * b for a, b in zip(p_text, p_fused)]
    assert voted[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_label_budget_hides_whole_dialogues_by_a_seeded_draw():
    b = label_budget(50, 0.3, seed=3)
    assert len(b.labelled) == 15 and len(b.hidden) == 35
    assert set(b.labelled) | set(b.hidden) == set(range(50))
    assert not set(b.labelled) & set(b.hidden)
    assert np.array_equal(b.labelled, label_budget(50, 0.3, seed=3).labelled)
    assert not np.array_equal(b.labelled, label_budget(50, 0.3, seed=4).labelled)
    assert len(label_budget(50, 1.0, seed=3).hidden) == 0
    assert len(label_budget(50, 0.001, seed=3).labelled) == 1  # never zero labelled dialogues


def test_thresholds_are_honoured_per_class():
    thresholds = class_thresholds(["a", "b", "c"], {"a": 0.9, "b": 0.5}, default=1.0)
    assert thresholds.tolist() == pytest.approx([0.9, 0.5, 1.0])
    probs = torch.tensor(
        [
            [
                [0.95, 0.05, 0.00],  # a above 0.9: accepted
                [0.85, 0.15, 0.00],  # a below 0.9: refused, though above b's 0.5
                [0.20, 0.60, 0.20],  # b above 0.5: accepted
                [0.30, 0.45, 0.25],  # b below 0.5: refused
                [0.00, 0.00, 1.00],  # c's threshold 1 accepts nothing, not even certainty
                [0.99, 0.01, 0.00],  # padding: never accepted
            ]
        ]
    )
    mask = torch.tensor([[True, True, True, True, True, False]])
    labels, accepted = accept_pseudo_labels(probs, mask, thresholds)
    assert labels.tolist() == [[0, 0, 1, 1, 2, 0]]
    assert accepted.tolist() == [[True, False, True, False, False, False]]


def test_thresholds_must_name_known_classes_and_lie_in_range(tmp_path):
    session = session_on(make_toy_corpus(), tiny_cfg(thresholds={"happy": 0.9}), tmp_path)
    with pytest.raises(MRDError, match="selftrain.thresholds names happy"):
        selftrain(session)
    assert not (tmp_path / "selftrain").exists()  # refused before any training
    with pytest.raises(MRDError, match="selftrain.thresholds"):
        load_config("synthetic", overrides={"selftrain": {"thresholds": {"hap": 1.5}}})
    with pytest.raises(MRDError, match="selftrain.labeled_fraction"):
        load_config("synthetic", overrides={"selftrain": {"labeled_fraction": 0.0}})
    cfg, _ = load_config("synthetic")
    assert cfg.selftrain.thresholds["hap"] == 0.99 and cfg.selftrain.thresholds["fru"] == 0.85


def test_the_result_is_the_last_round_or_the_best_on_validation():
    rounds = [
        {"round": 0, "val_weighted_f1": 50.0},
        {"round": 1, "val_weighted_f1": 61.0},
        {"round": 2, "val_weighted_f1": 58.0},
    ]
    assert _select_round(rounds, "last") == 2
    assert _select_round(rounds, "val") == 1
    tie = [{"round": 0, "val_weighted_f1": 60.0}, {"round": 1, "val_weighted_f1": 60.0}]
    assert _select_round(tie, "val") == 0  # a round must beat the earlier ones to be chosen


@pytest.mark.slow
def test_poisoned_hidden_labels_change_nothing_but_the_diagnostic(tmp_path):
    corpus = make_toy_corpus()
    cfg = tiny_cfg()
    clean = selftrain(session_on(corpus, cfg, tmp_path / "clean"))
    bad_corpus = poisoned(corpus, hidden_ids(corpus, cfg))
    bad = selftrain(session_on(bad_corpus, copy.deepcopy(cfg), tmp_path / "bad"))
    accepted = clean.rounds[0]["accepted"]
    assert accepted["total"] > 0  # pseudo-labels were used, so the check has teeth
    assert bad.rounds[0]["accepted"]["by_class"] == accepted["by_class"]
    assert [r["val_weighted_f1"] for r in bad.rounds] == [
        r["val_weighted_f1"] for r in clean.rounds
    ]
    for r in range(len(clean.rounds)):
        assert same_weights(
            RunDir(tmp_path / "clean").selftrain_round("multi", r),
            RunDir(tmp_path / "bad").selftrain_round("multi", r),
        )
    # The poison did reach the diagnostic, the one place that reads the hidden labels.
    assert bad.rounds[0]["accepted"]["diagnostic_accuracy"] != accepted["diagnostic_accuracy"]


@pytest.mark.slow
def test_a_round_without_accepted_samples_ends_cleanly_with_a_message(tmp_path):
    corpus = make_toy_corpus()
    session = session_on(corpus, tiny_cfg(default_threshold=1.0, rounds=3), tmp_path)
    messages: list[str] = []
    result = selftrain(
        session, on_event=lambda e: messages.append(e.text) if e.kind == "note" else None
    )
    assert [r["round"] for r in result.rounds] == [0]
    assert result.rounds[0]["accepted"]["total"] == 0
    assert any("no pool utterance passed its class threshold" in m for m in messages)
    assert result.messages == messages
    assert same_weights(result.checkpoint, session.run.selftrain_round("multi", 0))
    # No pool at all (every label kept): the same clean end, saying why.
    full = session_on(corpus, tiny_cfg(labeled_fraction=1.0), tmp_path / "full")
    done = selftrain(full)
    assert [r["round"] for r in done.rounds] == [0] and done.pool_dialogues == 0
    assert any("pool is empty" in m for m in done.messages)


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.slow
def test_interrupted_selftrain_resumes_to_the_same_result(tmp_path):
    corpus = make_toy_corpus()
    cfg = tiny_cfg(rounds=2)
    whole = selftrain(session_on(corpus, cfg, tmp_path / "whole"))
    assert len(whole.rounds) == 3

    # Interrupted between rounds (after round 0 was saved) ...
    def stop_after_round_0(event):
        if event.kind == "round" and event.payload["round"] == 0:
            raise Interrupt

    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        selftrain(session_on(corpus, copy.deepcopy(cfg), cut), on_event=stop_after_round_0)

    # ... and then inside round 1, after its second epoch.
    def stop_in_round_1(event):
        if event.kind == "epoch" and (event.task, event.log.epoch) == ("multi round 1", 2):
            raise Interrupt

    with pytest.raises(Interrupt):
        selftrain(
            session_on(corpus, copy.deepcopy(cfg), cut), resume=True, on_event=stop_in_round_1
        )
    assert (cut / "selftrain" / ".multi.round1.state.pt").is_file()
    seen: list[str] = []
    resumed = selftrain(
        session_on(corpus, copy.deepcopy(cfg), cut),
        resume=True,
        on_event=lambda e: seen.append(f"{e.task} {e.log.epoch}") if e.kind == "epoch" else None,
    )
    assert not any("contrastive" in s or "round 0" in s for s in seen)  # kept, not redone
    assert "multi round 1 1" not in seen and "multi round 1 3" in seen  # continued

    def reports(result):
        return [{k: v for k, v in r.items() if k != "checkpoint"} for r in result.rounds]

    assert reports(resumed) == reports(whole)
    assert same_weights(resumed.checkpoint, whole.checkpoint)


@pytest.mark.slow
def test_selftrain_model_is_evaluated_and_serves_as_mrds_multimodal_model(tmp_path):
    from mrd_cli.recipes.distill import distill
    from mrd_cli.recipes.partition import partition
    from mrd_cli.recipes.pretrain import pretrain

    corpus = make_toy_corpus()
    session = session_on(corpus, tiny_cfg(), tmp_path)
    result = selftrain(session)
    shown = evaluate(session)
    assert "selftrain/multi" in shown.models
    assert shown.models["selftrain/multi"]["selftrain"]["labeled_fraction"] == 0.3
    # As MRD's multimodal model: next to a pretrained text model of the same settings.
    pretrain(session, roles=("text",))
    shutil.copyfile(result.checkpoint, session.run.pretrained("multi"))
    partition(session, method="in_sample")
    distill(session)
    models = evaluate(session).models
    assert {"distill/multi", "distill/text", "pretrain/multi"} <= set(models)


def test_text_role_trains_the_text_alone_and_is_listed_as_such(tmp_path):
    session = session_on(make_toy_corpus(), tiny_cfg(rounds=0, epochs=1), tmp_path)
    result = selftrain(session, role="text")
    spec = torch.load(result.checkpoint, weights_only=True)["model_spec"]
    assert spec["modalities"] == ["text"] and spec["backbone"] == "semi"
    assert torch.load(result.checkpoint, weights_only=True)["role"] == "text"
    assert "selftrain/text" in evaluate(session).models


@pytest.mark.slow
def test_cli_marks_a_transductive_run_in_every_output(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {hidden: 16}\n"
        "selftrain: {contrastive_epochs: 1, epochs: 2, rounds: 1, default_threshold: 0.3,\n"
        "            thresholds: {}}\n"
    )
    run = tmp_path / "run"
    common = ["--config", str(cfg), "--run-dir", str(run)]
    res = CliRunner().invoke(
        app,
        ["selftrain", "--labeled-fraction", "0.2", "--transductive", "--json", *common],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["transductive"] is True and "TRANSDUCTIVE" in out["note"]
    assert "TRANSDUCTIVE" in res.stderr
    again = CliRunner().invoke(
        app,
        ["selftrain", "--labeled-fraction", "0.2", "--transductive", "--resume", *common],
    )
    assert again.exit_code == 0, again.output
    assert "TRANSDUCTIVE" in again.stdout and "diag. acc." in again.stdout  # the rounds table
    shown = CliRunner().invoke(app, ["evaluate", *common, "--no-confusion"])
    assert shown.exit_code == 0, shown.output
    assert "selftrain/multi is TRANSDUCTIVE" in " ".join(shown.stderr.split())
    js = CliRunner().invoke(app, ["evaluate", *common, "--json"])
    assert json.loads(js.stdout)["models"]["selftrain/multi"]["selftrain"]["transductive"] is True
