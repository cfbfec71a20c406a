"""The protocol-gap diagnostic (``core/protocol_gap.py``): per-epoch test scores kept apart
from everything that selects. Checkpoints and honest figures are the same bytes with it on
and off; poisoned test labels change the diagnostic and nothing else."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli import Session, ablate, compare, distill, evaluate, partition, pretrain
from mrd_cli.cli.app import app
from mrd_cli.config import Config
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.protocol_gap import DIAGNOSTIC, gap_table, read_diagnostic
from mrd_cli.core.rundir import RunDir
from mrd_cli.recipes.report import report

try:
    from conftest import make_toy_corpus
except ImportError:  # run as a package
    from tests.conftest import make_toy_corpus


def _cfg() -> Config:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 4
    cfg.pretrain.patience = 0
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 3
    cfg.ablate.bootstrap = 10
    return cfg


def _pipeline(tmp_path, name, corpus, gap: bool) -> Session:
    session = Session(_cfg(), corpus, RunDir(tmp_path / name), torch.device("cpu"), gap)
    pretrain(session)
    partition(session)
    distill(session)
    return session


def _honest(result: dict) -> dict:
    """The evaluation without the diagnostic's entries."""
    out = copy.deepcopy(result)
    for entry in out["models"].values():
        entry.pop("test_selected_diagnostic", None)
    return out


def _poisoned(corpus):
    poisoned = copy.deepcopy(corpus)
    rng = np.random.default_rng(1)
    for did in poisoned.splits["test"]:
        d = poisoned.dialogues[did]
        d.labels = rng.integers(0, len(poisoned.label_names), len(d.labels))
    poisoned.__dict__.pop("_fingerprint", None)
    return poisoned


def _checkpoints(run: RunDir) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in run.checkpoints().items()}


def test_diagnostic_changes_no_checkpoint_and_no_honest_figure(tmp_path, toy_corpus):
    # Both runs in one run directory, one after the other: the partition file records its
    # checkpoints' paths, and the distilled checkpoints the partition's sha256.
    off = _pipeline(tmp_path, "run", toy_corpus, gap=False)
    files_off, res_off = _checkpoints(off.run), evaluate(off).to_dict()
    assert len(files_off) == 4 and not list(off.run.root.rglob("*.test_by_epoch.json"))
    shutil.rmtree(off.run.root)
    on = _pipeline(tmp_path, "run", toy_corpus, gap=True)
    assert _checkpoints(on.run) == files_off  # the selected checkpoints, byte for byte
    res_on = evaluate(on).to_dict()
    assert "test_selected_diagnostic" not in json.dumps(res_off)
    assert _honest(res_on) == res_off  # every honest figure, identical
    for name, path in on.run.checkpoints().items():
        doc = read_diagnostic(path)
        assert doc is not None and doc["label"] == DIAGNOSTIC and doc["complete"]
        cfg = _cfg()
        epochs = cfg.pretrain.epochs if name.startswith("pretrain") else cfg.distill.epochs
        assert [e["epoch"] for e in doc["per_epoch"]] == list(range(1, epochs + 1))
        scores = {e["epoch"]: e["test_weighted_f1"] for e in doc["per_epoch"]}
        rep = res_on["models"][name]
        gap = rep["test_selected_diagnostic"]
        assert gap["weighted_f1"] == max(scores.values()) == doc["test_selected_weighted_f1"]
        assert scores[gap["epoch"]] == gap["weighted_f1"]
        if rep["epoch"] in scores:  # the diagnostic scored the very model that was kept
            assert scores[rep["epoch"]] == rep["weighted_f1"]
    table = gap_table(res_on)
    assert table is not None and len(table.rows) == 4 and "DIAGNOSTIC" in table.caption
    assert gap_table(res_off) is None


def test_poisoned_test_labels_change_only_the_diagnostic(tmp_path, toy_corpus):
    clean = _pipeline(tmp_path, "clean", toy_corpus, gap=True)
    bad = _pipeline(tmp_path, "bad", _poisoned(toy_corpus), gap=True)
    changed = False
    for name, path in clean.run.checkpoints().items():
        a, b = load_checkpoint(path), load_checkpoint(bad.run.checkpoints()[name])
        assert a["state_dict"].keys() == b["state_dict"].keys()
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        for key in ("epoch", "val_metrics", "history", "stopping"):
            assert a[key] == b[key]
        da, db = read_diagnostic(path), read_diagnostic(bad.run.checkpoints()[name])
        changed |= da["per_epoch"] != db["per_epoch"]
    assert changed  # the diagnostic reads the test labels; nothing else does


@pytest.mark.slow
def test_ablation_reports_the_diagnostic_per_seed_and_over_seeds(tmp_path):
    corpus = make_toy_corpus()
    runs = {}
    for gap in (False, True):
        session = Session(_cfg(), corpus, RunDir(tmp_path / str(gap)), torch.device("cpu"), gap)
        runs[gap] = ablate(session, [("mic",)], seeds=2).to_dict()
    for a, b in zip(runs[False]["rows"], runs[True]["rows"]):
        diag = b.pop("test_selected_diagnostic")
        assert a == b  # the honest rows are the same
        assert len(diag["weighted_f1"]["values"]) == 2 and len(diag["epochs"]) == 2
        for v, g, w in zip(
            diag["weighted_f1"]["values"],
            diag["gap_to_honest"]["values"],
            a["weighted_f1"]["values"],
        ):
            assert abs(v - w - g) < 1e-9
    written = report(tmp_path / "True")
    assert "protocol_gap" in written.tables
    text = open(written.tables["protocol_gap"]["markdown"]).read()
    assert "DIAGNOSTIC" in text and "MRD w/o MIC" in text
    assert "protocol_gap" not in report(tmp_path / "False").tables


def test_compare_reports_the_diagnostic_per_seed(tmp_path, toy_corpus):
    session = Session(_cfg(), toy_corpus, RunDir(tmp_path), torch.device("cpu"), True)
    row = compare(session, ["dialogue"], seeds=2).to_dict()["rows"][0]
    diag = row["test_selected_diagnostic"]
    assert diag["label"] == DIAGNOSTIC and len(diag["weighted_f1"]["values"]) == 2
    gaps = [d - h for d, h in zip(diag["weighted_f1"]["values"], row["weighted_f1"]["values"])]
    assert gaps == diag["gap_to_honest"]["values"]
    assert "dialogue (M_multi)" in gap_table(None, {"rows": [row], "role": "multi"}).rows[0][0]


def test_run_option_prints_and_records_the_diagnostic(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"hidden": 16},
                "pretrain": {"epochs": 2},
                "partition": {"method": "in_sample"},
                "distill": {"epochs": 2},
            }
        )
    )
    args = ["run", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    reused = CliRunner().invoke(app, [*args, "--protocol-gap"], catch_exceptions=False)
    assert "no protocol-gap diagnostic for pretrain/multi, pretrain/text" in " ".join(
        reused.stderr.split()
    )  # the pretrained pair was reused: made without the diagnostic
    res = CliRunner().invoke(
        app, [*args, "--protocol-gap", "--force", "--json"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    models = json.loads(res.stdout)["models"]
    assert all(m["test_selected_diagnostic"]["label"] == DIAGNOSTIC for m in models.values())
    table = CliRunner().invoke(
        app, ["evaluate", "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    )
    assert table.exit_code == 0 and "DIAGNOSTIC" in table.stdout
