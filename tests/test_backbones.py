"""The backbones of M_multi (dialogue, Foal-Net, DUAL): their losses against hand
computations, padding, the registry's errors, text-only corpora, checkpoints of each
backbone through partition -> distill -> evaluate, and `mrd compare`."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli import Session, compare, distill, evaluate, partition, pretrain
from mrd_cli.cli.app import app
from mrd_cli.config import Config, load_config
from mrd_cli.core.checkpoint import load_checkpoint, model_from_checkpoint
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import build_model
from mrd_cli.data.tensors import pad_dialogues
from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import DialogueModel, ModelSpec
from mrd_cli.models.dual import (
    DualModel,
    dynamic_alignment_loss,
    info_nce,
    static_alignment_loss,
    visual_difference,
)
from mrd_cli.models.foal import FoalNet, avel_loss, mem_loss, mem_negatives
from mrd_cli.models.registry import build_backbone

try:
    from conftest import make_toy_corpus
except ImportError:  # run as a package
    from tests.conftest import make_toy_corpus

# (backbone, settings) pairs covering every branch of each network.
VARIANTS = [
    ("dialogue", {}),
    ("foal", {}),
    ("foal", {"text": True, "avel_normalise": True, "clip_temperature": True}),
    ("dual", {}),
    ("dual", {"causal": True}),
    ("dual", {"difference": False}),
    ("semi", {}),
    ("semi", {"context": False}),
]


def _cfg(backbone: str, settings: dict | None = None) -> Config:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.model.backbone = backbone
    for key, value in (settings or {}).items():
        setattr(getattr(cfg.model, backbone), key, value)
    return cfg


def _log_softmax(row):
    m = max(row)
    s = math.log(sum(math.exp(v - m) for v in row)) + m
    return [v - s for v in row]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.hypot(*a) / math.hypot(*b)


# --- the losses, by hand ------------------------------------------------------------------


@pytest.mark.parametrize("normalise", [False, True])
def test_avel_matches_hand_computation(normalise):
    za = [[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]
    zv = [[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]]
    y = [0, 1, 0]
    scale = 1 / 2.5
    s = [[scale * _cos(a, v) for v in zv] for a in za]
    st = [list(col) for col in zip(*s)]

    def side(sim):
        total = 0.0
        for i, row in enumerate(sim):
            logp = _log_softmax(row)
            pos = [j for j in range(3) if y[j] == y[i]]
            total -= sum(logp[j] for j in pos) / (len(pos) if normalise else 1)
        return total / 3

    expected = (side(s) + side(st)) / 2
    got = avel_loss(
        torch.tensor(za), torch.tensor(zv), torch.tensor(y), torch.tensor(scale), normalise
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mem_loss_matches_hand_computation():
    a2v = [[0.5, 1.5], [2.0, -1.0], [0.0, 0.0]]
    v2a = [[1.0, 0.0], [0.0, 3.0], [-1.0, 1.0]]
    targets = [1, 0, 0]
    ce = lambda rows: -sum(_log_softmax(r)[t] for r, t in zip(rows, targets)) / 3  # noqa: E731
    got = mem_loss(torch.tensor(a2v), torch.tensor(v2a), torch.tensor(targets))
    assert got.item() == pytest.approx((ce(a2v) + ce(v2a)) / 2, rel=1e-6)


def test_mem_negatives_always_have_another_label():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 1, 0])
    sim = torch.randn(6, 6) * 3
    for _ in range(20):
        neg_v, neg_a = mem_negatives(sim, labels)
        assert (labels[neg_v] != labels).all() and (labels[neg_a] != labels).all()
    # The hard negative: the most similar other-label partner is drawn almost surely.
    sim = torch.zeros(3, 3)
    sim[0, 2] = sim[2, 0] = 20.0
    neg_v, neg_a = mem_negatives(sim, torch.tensor([0, 0, 1]))
    assert neg_v[0] == 2 and neg_a[0] == 2


def test_alignment_losses_match_hand_computation():
    x = [[1.0, 0.0], [1.0, 1.0]]
    y = [[0.0, 1.0], [2.0, 1.0]]
    log_scale = math.log(3.0)
    s = [[3.0 * _cos(a, b) for b in y] for a in x]
    st = [list(col) for col in zip(*s)]
    ce = lambda sim: -sum(_log_softmax(r)[i] for i, r in enumerate(sim)) / 2  # noqa: E731
    expected = (ce(s) + ce(st)) / 2
    args = (torch.tensor(x), torch.tensor(y), torch.tensor(log_scale))
    for fn in (info_nce, static_alignment_loss, dynamic_alignment_loss):
        assert fn(*args).item() == pytest.approx(expected, rel=1e-5)


def test_visual_difference_by_hand_and_padding_stays_out():
    v = torch.tensor([[[1.0], [3.0], [6.0]], [[2.0], [5.0], [99.0]]])  # 2nd: length 2, padded
    lengths = torch.tensor([3, 2])
    d = visual_difference(v, lengths)
    assert d[0, :, 0].tolist() == [2.0, 3.0, 6.0]  # next - current; the last passed through
    assert d[1, :2, 0].tolist() == [3.0, 5.0]  # the padding (99) never reaches utterance 2
    c = visual_difference(v, lengths, causal=True)
    assert c[0, :, 0].tolist() == [1.0, 2.0, 3.0] and c[1, :2, 0].tolist() == [2.0, 3.0]


# --- the networks --------------------------------------------------------------------------


@pytest.mark.parametrize("backbone,settings", VARIANTS)
def test_padding_never_changes_predictions(toy_corpus, backbone, settings):
    torch.manual_seed(0)
    model = build_model(toy_corpus, _cfg(backbone, settings), "multi", torch.device("cpu")).eval()
    d = toy_corpus.split("train")[0]
    longest = max(toy_corpus.split("train"), key=len)
    alone = pad_dialogues([d], toy_corpus.modalities)
    together = pad_dialogues([d, longest], toy_corpus.modalities)
    for x in together.features.values():
        x[0, len(d) :] = 1e3  # garbage in the padded positions
    with torch.no_grad():
        a = model(alone.features, alone.speakers, alone.mask, alone.lengths)
        b = model(together.features, together.speakers, together.mask, together.lengths)
    assert a.shape == (1, len(d), toy_corpus.num_classes)
    assert b.shape == (2, len(longest), toy_corpus.num_classes)
    assert torch.allclose(a[0], b[0, : len(d)], atol=1e-5)
    assert (b[0, len(d) :] == 0).all()


@pytest.mark.parametrize("backbone,settings", VARIANTS)
def test_auxiliary_losses_are_named_finite_and_reach_the_network(toy_corpus, backbone, settings):
    torch.manual_seed(0)
    model = build_model(toy_corpus, _cfg(backbone, settings), "multi", torch.device("cpu"))
    data = pad_dialogues(toy_corpus.split("train"), toy_corpus.modalities)
    model.train()
    model(data.features, data.speakers, data.mask, data.lengths)
    aux = model.aux_losses(data.labels, data.mask)
    assert set(aux) == set(model.aux_weights)
    expected = {
        "dialogue": set(),
        "foal": {"avel", "mem"},
        "dual": {"static", "dynamic"} if settings.get("difference", True) else {"static"},
        "semi": {"heads"},
    }[backbone]
    assert set(aux) == expected
    if aux:
        sum(aux.values()).backward()
        assert all(torch.isfinite(v) for v in aux.values())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_foal_reads_audio_and_visual_and_text_only_as_the_extension(toy_corpus):
    faithful = build_model(toy_corpus, _cfg("foal"), "multi", torch.device("cpu"))
    extended = build_model(toy_corpus, _cfg("foal", {"text": True}), "multi", torch.device("cpu"))
    assert isinstance(faithful, FoalNet) and faithful.modalities == ["audio", "visual"]
    assert extended.modalities == ["text", "audio", "visual"]
    assert faithful.aux_weights == {"avel": 1.0, "mem": 0.1}  # the original code's weights
    text = build_model(toy_corpus, _cfg("foal"), "text", torch.device("cpu"))
    assert isinstance(text, DialogueModel)  # M_text is always the dialogue network


def test_unknown_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(MRDError, match="model.backbone' must be one of"):
        load_config("synthetic", overrides={"model": {"backbone": "foalnet"}})
    spec = ModelSpec(["text"], {"text": 4}, 2, 3, backbone="foalnet")
    with pytest.raises(MRDError, match="Unknown backbone 'foalnet'"):
        build_backbone(spec)
    res = CliRunner().invoke(app, ["pretrain", "--backbone", "foalnet", "--run-dir", str(tmp_path)])
    assert res.exit_code == 2 and "model.backbone" in res.stderr


@pytest.mark.parametrize(
    "backbone,settings", [("foal", {}), ("foal", {"text": True}), ("dual", {})]
)
def test_audio_visual_backbones_refuse_a_text_only_corpus(toy_corpus, backbone, settings):
    cfg = _cfg(backbone, settings)
    cfg.dataset.modalities = ["text"]
    with pytest.raises(MRDError, match=f"Backbone '{backbone}' needs .*audio.*--backbone dialogue"):
        build_model(toy_corpus, cfg, "multi", torch.device("cpu"))
    cfg.model.backbone = "dialogue"
    assert build_model(toy_corpus, cfg, "multi", torch.device("cpu")).modalities == ["text"]


# --- checkpoints through the pipeline -------------------------------------------------------


@pytest.mark.parametrize("backbone", [pytest.param("foal", marks=pytest.mark.slow), "dual"])
def test_checkpoints_of_each_backbone_through_partition_distill_evaluate(
    tmp_path, toy_corpus, backbone
):
    cfg = _cfg(backbone)
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 2
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    pretrain(session)
    ckpt = load_checkpoint(session.run.pretrained("multi"))
    assert ckpt["model_spec"]["backbone"] == backbone
    assert ckpt["model_spec"]["options"] == dict(vars(getattr(cfg.model, backbone)))
    expected = {"foal": FoalNet, "dual": DualModel}[backbone]
    assert isinstance(model_from_checkpoint(ckpt, torch.device("cpu")), expected)
    assert load_checkpoint(session.run.pretrained("text"))["model_spec"]["backbone"] == "dialogue"
    partition(session)
    distill(session)
    rebuilt = load_checkpoint(session.run.distilled("multi"))
    assert rebuilt["model_spec"]["backbone"] == backbone
    result = evaluate(session).to_dict()
    assert 0 <= result["models"]["distill/multi"]["weighted_f1"] <= 100


def test_a_checkpoint_without_a_backbone_is_a_dialogue_network(tmp_path, toy_corpus):
    # Checkpoints written before the registry have no 'backbone' or 'options'.
    session = Session(_cfg("dialogue"), toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    session.cfg.pretrain.epochs = 1
    pretrain(session, roles=("text",))
    ckpt = load_checkpoint(session.run.pretrained("text"))
    old = copy.deepcopy(ckpt)
    del old["model_spec"]["backbone"], old["model_spec"]["options"]
    assert isinstance(model_from_checkpoint(old, torch.device("cpu")), DialogueModel)


# --- comparing -------------------------------------------------------------------------------


def test_compare_summarises_backbones_and_reuses_cells(tmp_path, toy_corpus):
    cfg = _cfg("dialogue")
    cfg.pretrain.epochs = 2
    cfg.ablate.bootstrap = 20
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    result = compare(session, ["dialogue", "foal"], seeds=2)
    summary = result.to_dict()
    assert summary["reference"] == "dialogue" and summary["seeds"] == [0, 1]
    assert [r["backbone"] for r in summary["rows"]] == ["dialogue", "foal"]
    foal = summary["rows"][1]
    assert {"delta_wf1", "p_paired_t", "bootstrap_ci95"} <= set(foal)
    assert {"avel", "mem", "cls"} <= set(foal["losses_first_epoch"])
    assert len(foal["weighted_f1"]["values"]) == 2
    assert sorted(result.computed) == [("dialogue", 0), ("dialogue", 1), ("foal", 0), ("foal", 1)]
    assert json.loads((tmp_path / "compare" / "results.json").read_text())["rows"] == json.loads(
        json.dumps(summary["rows"])
    )
    again = compare(session, ["dialogue", "foal"], seeds=2)
    assert again.computed == [] and again.to_dict()["rows"] == summary["rows"]


def test_compare_on_a_text_only_corpus_reports_what_cannot_run(tmp_path, toy_corpus):
    cfg = _cfg("dialogue")
    cfg.pretrain.epochs = 1
    cfg.dataset.modalities = ["text"]
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    summary = compare(session, ["dialogue", "foal", "dual"], seeds=1).to_dict()
    assert [r["backbone"] for r in summary["rows"]] == ["dialogue"]
    assert set(summary["not_run"]) == {"foal", "dual"}
    assert "needs audio and visual" in summary["not_run"]["foal"]
    with pytest.raises(MRDError, match="None of the backbones can run"):
        compare(session, ["foal"], seeds=1)
    with pytest.raises(MRDError, match="Unknown backbone"):
        compare(session, ["dialogue", "dualnet"], seeds=1)


@pytest.mark.slow
def test_compare_command_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"model": {"hidden": 16}, "pretrain": {"epochs": 1}, "ablate": {"bootstrap": 20}}
        )
    )
    args = ["compare", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--seeds", "2", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [r["backbone"] for r in summary["rows"]] == ["dialogue", "foal", "dual"]
    cells = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "compare" / "cells").iterdir()}
    assert len(cells) == 6  # 3 backbones x 2 seeds
    table = CliRunner().invoke(app, [*args, "--seeds", "2"], catch_exceptions=False)
    assert table.exit_code == 0 and "Δ vs dialogue" in table.stdout
    assert {p: p.stat().st_mtime_ns for p in cells} == cells  # every cell reused


def test_backbone_option_of_run_trains_and_records_it(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"hidden": 16},
                "pretrain": {"epochs": 1, "batch_size": 32},
                "partition": {"method": "in_sample"},
                "distill": {"epochs": 1, "batch_size": 32},
            }
        )
    )
    args = ["--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    res = CliRunner().invoke(app, ["run", "--backbone", "dual", *args, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["models"]["distill/multi"]["weighted_f1"] >= 0
    spec = load_checkpoint(tmp_path / "run" / "distill" / "multi.pt")["model_spec"]
    assert spec["backbone"] == "dual" and spec["options"]["difference"] is True


def test_attention_backbones_need_hidden_divisible_by_heads():
    with pytest.raises(MRDError, match="multiple of model.heads"):
        load_config("synthetic", overrides={"model": {"backbone": "dual", "hidden": 30}})
    assert load_config("synthetic", overrides={"model": {"hidden": 30}})[0].model.hidden == 30


@pytest.mark.slow
def test_auxiliary_losses_fall_with_the_default_options(tmp_path):
    # Every backbone's auxiliary losses, at their defaults, fall over pretraining (the
    # epoch means of the training batches, first against last epoch). For Foal-Net this
    # holds with CLIP's temperature (the default), not with the original code's divisor.
    cfg = _cfg("dialogue")
    cfg.pretrain.epochs = 15
    cfg.pretrain.patience = 0
    cfg.ablate.bootstrap = 20
    session = Session(cfg, make_toy_corpus(80), RunDir(tmp_path), torch.device("cpu"))
    rows = {r["backbone"]: r for r in compare(session, ["foal", "dual"], seeds=2).to_dict()["rows"]}
    for backbone, terms in (("foal", ("avel", "mem")), ("dual", ("static", "dynamic"))):
        first, last = rows[backbone]["losses_first_epoch"], rows[backbone]["losses_last_epoch"]
        for term in terms:
            assert last[term] < first[term], (backbone, term, first[term], last[term])


def test_settings_of_an_unused_backbone_leave_pretrained_checkpoints_current(tmp_path, toy_corpus):
    # A dialogue pair does not depend on model.foal / model.dual: changing them (a new
    # default, say) keeps it current; a setting the network uses, or the backbone's own
    # section when it is the one in use, does not.
    cfg = _cfg("dialogue")
    cfg.pretrain.epochs = 1
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    pretrain(session)
    assert session.pretrained_is_current()

    def variant(change) -> Session:
        other = copy.deepcopy(cfg)
        change(other)
        return session.derive(other, session.run)

    unused = variant(lambda c: setattr(c.model.foal, "clip_temperature", False))
    assert unused.pretrained_is_current()
    assert variant(lambda c: setattr(c.model.dual, "difference", False)).pretrained_is_current()
    assert not variant(lambda c: setattr(c.model, "hidden", 8)).pretrained_is_current()
    foal_cfg = _cfg("foal")
    foal_cfg.pretrain.epochs = 1
    foal_session = Session(foal_cfg, toy_corpus, RunDir(tmp_path / "foal"), torch.device("cpu"))
    pretrain(foal_session)
    changed = copy.deepcopy(foal_cfg)
    changed.model.foal.clip_temperature = False
    assert foal_session.pretrained_is_current()
    assert not foal_session.derive(changed, foal_session.run).pretrained_is_current()
