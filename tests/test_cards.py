"""Model cards: every checkpoint that pretrain, distill and selftrain write has a card beside
it whose fields agree with the checkpoint (and evaluate adds the test scores)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config
from mrd_cli.core.card import card_path, read_card_fields
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.io import file_sha256
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.evaluate import evaluate
from mrd_cli.recipes.partition import partition
from mrd_cli.recipes.pretrain import pretrain
from mrd_cli.recipes.selftrain import selftrain
from tests.conftest import LABELS, make_toy_corpus

runner = CliRunner()


def _cfg() -> Config:
    cfg = Config()
    cfg.dataset.label_names = list(LABELS)
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 2
    cfg.selftrain.contrastive_epochs = 1
    cfg.selftrain.epochs = 2
    cfg.selftrain.rounds = 1
    cfg.selftrain.default_threshold = 0.2
    cfg.selftrain.labeled_fraction = 0.3
    cfg.selftrain.batch_size = 4
    cfg.selftrain.lr = 5e-3
    return cfg


def _check(card: dict, path, corpus) -> dict:
    ckpt = load_checkpoint(path)
    assert card["checkpoint_sha256"] == file_sha256(path)
    assert card["stage"] == ckpt["stage"] and card["role"] == ckpt["role"]
    assert card["backbone"] == ckpt["model_spec"]["backbone"]
    assert card["data"]["fingerprint"] == ckpt["data_fingerprint"] == corpus.fingerprint()
    sizes = {s: corpus.num_utterances(s) for s in ("train", "val", "test")}
    assert {s: v["utterances"] for s, v in card["data"]["splits"].items()} == sizes
    assert card["selection"]["chosen_epoch"] == ckpt["epoch"]
    assert card["selection"]["test_split_used"] is False
    assert card["validation_metrics"]["weighted_f1"] == ckpt["val_metrics"]["weighted_f1"]
    assert card["seed"] == ckpt["seed"]
    assert card["config"] == ckpt["config"]
    assert card["mrd_version"] == ckpt["mrd_version"] and card["mrd_version"]
    assert card["git_commit"] == ckpt["git_commit"]
    return ckpt


def test_every_written_checkpoint_has_a_card_that_matches_it(tmp_path):
    corpus = make_toy_corpus()
    session = Session(_cfg(), corpus, RunDir(tmp_path), torch.device("cpu"))
    pretrain(session)
    partition(session)
    distill(session)
    selftrain(session, role="multi")
    written = sorted(tmp_path.rglob("*.pt"))
    written = [p for p in written if not p.name.startswith(".")]
    assert len(written) >= 7  # pretrain x2, distill x2, selftrain rounds x2 + result
    for path in written:
        card = read_card_fields(card_path(path))
        assert card is not None, f"no card for {path}"
        ckpt = _check(card, path, corpus)
        assert card["test_metrics"] is None  # training never reads the test split
        text = card_path(path).read_text()
        assert f"Chosen epoch: {ckpt['epoch']}" in text and ckpt["data_fingerprint"] in text
    for role in ("multi", "text"):
        card = read_card_fields(card_path(session.run.distilled(role)))
        parents = {p["path"]: p["sha256"] for p in card["parents"]}
        for r in ("multi", "text"):
            assert parents[f"pretrain/{r}.pt"] == file_sha256(session.run.pretrained(r))
        assert parents["partition.json"] == file_sha256(session.run.partition)
        assert "start_guard" in card["selection"]
        assert read_card_fields(card_path(session.run.pretrained(role)))["parents"] == []
    final = read_card_fields(card_path(session.run.selftrained("multi")))
    (parent,) = final["parents"]
    assert parent["path"] in (
        "selftrain/rounds/multi.round0.pt",
        "selftrain/rounds/multi.round1.pt",
    )
    assert file_sha256(tmp_path / parent["path"]) == file_sha256(session.run.selftrained("multi"))
    assert final["selection"]["selftrain"]["labeled_fraction"] == _cfg().selftrain.labeled_fraction

    # `mrd evaluate` on the test split adds the test scores to the run's cards.
    result = evaluate(session, split="test")
    for name, path in session.run.checkpoints().items():
        card = read_card_fields(card_path(path))
        assert card["test_metrics"]["weighted_f1"] == pytest.approx(
            result.models[name]["weighted_f1"]
        )
        assert (
            card["validation_metrics"]["weighted_f1"]
            == load_checkpoint(path)["val_metrics"]["weighted_f1"]
        )


def test_training_json_carries_each_models_card(tmp_path):
    result = runner.invoke(app, ["pretrain", "--epochs", "1", "--run-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for role in ("multi", "text"):
        card = doc["pretrain"][role]["card"]
        assert card["checkpoint_sha256"] == file_sha256(tmp_path / "pretrain" / f"{role}.pt")
        assert card["selection"]["chosen_epoch"] == doc["pretrain"][role]["epoch"]


def test_selftrain_json_carries_its_card(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "pretrain: {epochs: 1}\nselftrain: {contrastive_epochs: 0, epochs: 1, rounds: 0}\n"
    )
    result = runner.invoke(
        app, ["selftrain", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["card"]["checkpoint_sha256"] == file_sha256(doc["checkpoint"])
    assert doc["card"]["parents"][0]["path"] == "selftrain/rounds/multi.round0.pt"
