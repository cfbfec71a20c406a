"""M3Net (``models/m3net.py``): its graph layers against explicit hand computations, padding
on ragged dialogues, agreement with numbers the published implementation produced on fixed
weights and inputs, both roles through checkpoints, and `mrd run` with M3Net for both."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli import Session, pretrain
from mrd_cli.cli.app import app
from mrd_cli.config import Config, load_config
from mrd_cli.core.checkpoint import load_checkpoint, model_from_checkpoint
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import build_model
from mrd_cli.data.tensors import pad_dialogues
from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import DialogueModel, ModelSpec, UtteranceLayout
from mrd_cli.models.m3net import DEPARTURES, DialogueGraph, M3Net, frequency_conv, hypergraph_conv

try:
    from m3net_pins import PINNED
except ImportError:  # run as a package
    from tests.m3net_pins import PINNED

SMALL = {"hidden": 16, "graph_hidden": 8}


def _cfg(multi: str = "m3net", text: str = "m3net", **options) -> Config:
    cfg = Config()
    cfg.model.backbone, cfg.model.text_backbone = multi, text
    for key, value in {**SMALL, "dropout": 0.0, **options}.items():
        setattr(cfg.model.m3net, key, value)
    return cfg


# --- the graph layers, by hand ------------------------------------------------------------


def _graph(lengths, modalities, **options):
    opts = {"position_weights": True, "position_group": 16, **options}
    lengths = torch.tensor(lengths)
    return DialogueGraph.of(lengths, int(lengths.max()), modalities, opts, torch.device("cpu"))


def test_hypergraph_conv_matches_a_hand_computation():
    # One dialogue of 2 utterances, 2 modalities: nodes (m, t) at batch positions
    # m * 2 + t; hyperedges: modality 0, modality 1, utterance 0, utterance 1.
    x = torch.tensor([[[[1.0], [2.0]], [[3.0], [5.0]]]])  # [B=1, M=2, L=2, G=1]
    graph = _graph([2], 2)
    edge_w = torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0])  # the last entry: past the table
    node_w = torch.tensor([1.0, 1.0, 2.0, 0.5, 1.0])
    bias = torch.tensor([0.25])
    out = hypergraph_conv(x, graph, (edge_w, node_w), bias)
    e_mod = [(1 + 2) / (1 + 1), (3 + 5) / (2 + 0.5)]
    e_utt = [(1 + 3) / (1 + 2), (2 + 5) / (1 + 0.5)]
    for m in range(2):
        for t in range(2):
            v = (e_mod[m] + e_utt[t]) / (edge_w[m] + edge_w[2 + t]) + 0.25
            assert out[0, m, t, 0].item() == pytest.approx(v if v > 0 else 0.01 * v, rel=1e-6)


def test_positions_are_counted_per_dialogue_and_group_and_capped():
    graph = _graph([2, 3, 1], 3, position_group=2)
    # Dialogue 0: nodes 0..5, hyperedges 0..4; dialogue 1 follows it: nodes from 6, edges from 5.
    assert graph.node_pos[0, :, :2].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert graph.node_pos[1].tolist() == [[6, 7, 8], [9, 10, 11], [12, 13, 14]]
    assert graph.mod_edge_pos[:2].tolist() == [[0, 1, 2], [5, 6, 7]]
    assert graph.utt_edge_pos[1].tolist() == [8, 9, 10]
    # Dialogue 2 opens a new group of two dialogues: its positions start again at 0.
    assert graph.node_pos[2, :, 0].tolist() == [0, 1, 2] and graph.mod_edge_pos[2, 0] == 0
    big = _graph([1000, 1000], 3)
    assert big.node_pos.max() == 5200 and big.utt_edge_pos.max() == 1000  # capped: weight 1


def _frequency_by_edges(x, lengths, gate):
    """The gated convolution over an explicit edge list, one edge at a time."""
    batch, mods, _, g = x.shape
    out = torch.zeros_like(x)
    w, b = gate.weight[0], gate.bias[0]
    for d, n in enumerate(lengths):
        nodes = [(m, t) for m in range(mods) for t in range(n)]
        edges = [(i, j) for i in nodes for j in nodes if i != j and (i[0] == j[0] or i[1] == j[1])]
        deg = {v: sum(1 for i, _ in edges if i == v) for v in nodes}
        for (mi, ti), (mj, tj) in edges:  # message from j to i
            xi, xj = x[d, mi, ti], x[d, mj, tj]
            alpha = torch.tanh(w[:g] @ xi + w[g:] @ xj + b)
            norm = (deg[(mi, ti)] * deg[(mj, tj)]) ** -0.5
            out[d, mi, ti] += norm * alpha * xj
    return out


@pytest.mark.parametrize("mods", [1, 3])
def test_frequency_conv_matches_an_explicit_edge_list_on_ragged_dialogues(mods):
    torch.manual_seed(0)
    lengths = [4, 1, 3]
    x = torch.randn(3, mods, 4, 5)
    graph = _graph(lengths, mods)
    x = x * graph.mask  # padding is zero, as the network keeps it
    gate = torch.nn.Linear(10, 1)
    with torch.no_grad():
        got = frequency_conv(x, graph, gate)
        want = _frequency_by_edges(x, lengths, gate)
    assert torch.allclose(got, want, atol=1e-6)
    assert (got[1, :, 1:] == 0).all() and (got[2, :, 3:] == 0).all()  # padding stays zero


# --- the network on ragged dialogues ----------------------------------------------------


@pytest.mark.parametrize("role", ["multi", "text"])
@pytest.mark.parametrize("train", [False, True])
def test_padded_rows_never_reach_a_real_utterance(toy_corpus, role, train):
    torch.manual_seed(0)
    model = build_model(toy_corpus, _cfg(), role, torch.device("cpu")).train(train)
    assert isinstance(model, M3Net)
    assert model.modalities == (["text", "audio", "visual"] if role == "multi" else ["text"])
    dialogues = toy_corpus.split("train")[:5]
    batch = pad_dialogues(dialogues, toy_corpus.modalities)
    with torch.no_grad():
        clean = model(batch.features, batch.speakers, batch.mask, batch.lengths)
        for x in batch.features.values():
            x[~batch.mask] = torch.randn_like(x[~batch.mask]) * 1e3
        batch.speakers[~batch.mask] = 1
        noisy = model(batch.features, batch.speakers, batch.mask, batch.lengths)
    assert clean.shape == (5, int(batch.lengths.max()), toy_corpus.num_classes)
    assert torch.equal(clean[batch.mask], noisy[batch.mask])
    assert (noisy[~batch.mask] == 0).all()


def test_the_packed_gru_used_off_the_cpu_computes_what_the_cpu_recurrence_does(toy_corpus):
    # Off the CPU (CUDA) the text GRU runs as nn.GRU on a packed sequence; checked here on
    # the CPU against the fused recurrence the CPU uses (eval mode: no dropout).
    torch.manual_seed(0)
    model = build_model(toy_corpus, _cfg(), "text", torch.device("cpu")).eval()
    batch = pad_dialogues(toy_corpus.split("train")[:6], toy_corpus.modalities)
    b, length = batch.mask.shape
    where = UtteranceLayout.of(batch.lengths, length, torch.device("cpu"))
    x = torch.randn(int(batch.lengths.sum()), SMALL["hidden"])
    with torch.no_grad():
        fused = model._context(x, where, batch.lengths, b, length)
        packed = model._packed_context(x, where, b, length)
    assert torch.allclose(fused, packed, atol=1e-5)


def test_without_position_weights_a_dialogue_ignores_its_batch(toy_corpus):
    torch.manual_seed(0)
    cfg = _cfg(position_weights=False)
    model = build_model(toy_corpus, cfg, "multi", torch.device("cpu")).eval()
    with torch.no_grad():
        model.edge_weight.uniform_(0.5, 1.5)  # unused without position weights
        d = toy_corpus.split("train")[3]
        alone = pad_dialogues([d], toy_corpus.modalities)
        others = pad_dialogues([*toy_corpus.split("train")[:3], d], toy_corpus.modalities)
        a = model(alone.features, alone.speakers, alone.mask, alone.lengths)[0]
        b = model(others.features, others.speakers, others.mask, others.lengths)[3, : len(d)]
    assert torch.allclose(a, b, atol=1e-5)


def test_text_linear_false_needs_text_of_the_hidden_width(toy_corpus):
    with pytest.raises(ValueError, match="text_linear false"):
        build_model(toy_corpus, _cfg(text_linear=False), "text", torch.device("cpu"))
    assert isinstance(
        build_model(toy_corpus, _cfg(text_linear=False, hidden=12), "text", torch.device("cpu")),
        M3Net,
    )


def test_config_refuses_bad_m3net_settings():
    for key, value, msg in [
        ("hidden", 15, "must be even"),
        ("dropout", 1.0, r"in \[0, 1\)"),
        ("num_K", -1, "must be >= 0"),
        ("num_K", 65, "must be <= 64"),
    ]:
        with pytest.raises(MRDError, match=f"model.m3net.{key}.*{msg}"):
            load_config("synthetic", overrides={"model": {"m3net": {key: value}}})
    with pytest.raises(MRDError, match="text_backbone' must be one of"):
        load_config("synthetic", overrides={"model": {"text_backbone": "foal"}})


# --- conformance with the published implementation ---------------------------------------


def fixed_case(name: str) -> tuple[M3Net, dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model (weights drawn from a seeded generator) and inputs of a pinned case."""
    meld = name.startswith("meld")
    spec = ModelSpec(
        modalities=["text", "audio", "visual"],
        input_dims={"text": 1024, "audio": 12, "visual": 10},
        num_speakers=2 if not meld else 3,
        num_classes=7 if meld else 6,
        backbone="m3net",
        options={
            "hidden": 1024 if meld else 16,
            "graph_hidden": 8,
            "num_L": 3,
            "num_K": 3 if meld else 4,
            "dropout": 0.5,
            "text_linear": not meld,
            "position_weights": True,
            "position_group": 16,
        },
    )
    gen = torch.Generator().manual_seed(7)
    model = M3Net(spec).eval()
    with torch.no_grad():
        for key, t in sorted(model.state_dict().items()):
            if key.startswith(("mean_", "std_")) or not t.is_floating_point():
                continue
            if key in ("edge_weight", "node_weight", "text_norm.running_var"):
                ones = key != "text_norm.running_var" and name.endswith("unit")
                t.copy_(torch.ones_like(t) if ones else torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    lengths = {"iemocap_equal": [4, 4, 4], "meld_equal": [3, 3], "iemocap_ragged_unit": [5, 2, 1]}
    lengths = torch.tensor(lengths[name])
    n, length = len(lengths), int(lengths.max())
    mask = torch.arange(length)[None] < lengths[:, None]
    feats = {
        m: torch.randn(n, length, d, generator=gen) * mask[..., None]
        for m, d in spec.input_dims.items()
    }
    speakers = torch.randint(0, spec.num_speakers, (n, length), generator=gen) * mask
    return model, feats, speakers, mask, lengths


@pytest.mark.parametrize("name", sorted(PINNED))
def test_forward_pass_matches_the_published_implementation(name):
    # PINNED holds the published code's log-probabilities on these weights and inputs
    # (docs/backbones.md: how they were produced). "unit": hyperedge and node weights 1,
    # ragged dialogues, the published model run one dialogue at a time (it lets padding
    # into its GRU, so a padded batch is not a fair reference).
    model, feats, speakers, mask, lengths = fixed_case(name)
    with torch.no_grad():
        logp = torch.log_softmax(model(feats, speakers, mask, lengths)[mask], -1)
    want = torch.tensor(PINNED[name])
    assert logp.shape == want.shape
    assert (logp - want).abs().max().item() < 2e-5


# --- both roles through checkpoints and the pipeline ----------------------------------------


def test_checkpoints_of_both_roles_round_trip(tmp_path, toy_corpus):
    cfg = _cfg(dropout=0.5)
    cfg.pretrain.epochs = 1
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    pretrain(session)
    batch = pad_dialogues(toy_corpus.split("test"), toy_corpus.modalities)
    for role in ("multi", "text"):
        ckpt = load_checkpoint(session.run.pretrained(role))
        assert ckpt["model_spec"]["backbone"] == "m3net"
        assert ckpt["model_spec"]["options"]["hidden"] == 16
        assert ckpt["config"]["model"]["text_backbone"] == "m3net"
        model = model_from_checkpoint(ckpt, torch.device("cpu")).eval()
        again = model_from_checkpoint(
            load_checkpoint(session.run.pretrained(role)), torch.device("cpu")
        ).eval()
        assert isinstance(model, M3Net)
        with torch.no_grad():
            a = model(batch.features, batch.speakers, batch.mask, batch.lengths)
            b = again(batch.features, batch.speakers, batch.mask, batch.lengths)
        assert torch.equal(a, b)
    assert session.pretrained_is_current()
    session.cfg.model.text_backbone = "dialogue"  # another M_text: its checkpoint is stale
    assert session.current_pretrained("text") is None
    assert isinstance(session.build_model("text"), DialogueModel)


def test_compare_varies_the_text_models_backbone(tmp_path, toy_corpus):
    cfg = _cfg(multi="dialogue", text="dialogue")
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 1
    cfg.ablate.bootstrap = 10
    session = Session(cfg, toy_corpus, RunDir(tmp_path), torch.device("cpu"))
    from mrd_cli import compare

    summary = compare(session, ["dialogue", "m3net"], seeds=1, role="text").to_dict()
    assert summary["role"] == "text" and [r["backbone"] for r in summary["rows"]] == [
        "dialogue",
        "m3net",
    ]
    spec = load_checkpoint(tmp_path / "compare" / "text_m3net_seed0" / "pretrain" / "text.pt")[
        "model_spec"
    ]
    assert spec["backbone"] == "m3net" and spec["modalities"] == ["text"]
    with pytest.raises(MRDError, match="M_text's backbone must be one of"):
        compare(session, ["foal"], seeds=1, role="text")


@pytest.mark.slow
def test_run_with_m3net_for_both_roles_records_backbones_and_departures(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"m3net": SMALL},
                "pretrain": {"epochs": 2},
                "partition": {"folds": 2},
                "distill": {"epochs": 2},
            }
        )
    )
    args = ["--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    res = CliRunner().invoke(
        app, ["run", "--backbone", "m3net", "--text-backbone", "m3net", *args, "--json"]
    )
    assert res.exit_code == 0, res.output
    models = json.loads(res.stdout)["models"]
    for name in ("pretrain/multi", "pretrain/text", "distill/multi", "distill/text"):
        assert models[name]["backbone"] == "m3net"
        assert models[name]["departures"] == list(DEPARTURES)
        assert 0 <= models[name]["weighted_f1"] <= 100
    spec = load_checkpoint(tmp_path / "run" / "distill" / "text.pt")["model_spec"]
    assert spec["backbone"] == "m3net" and spec["modalities"] == ["text"]
