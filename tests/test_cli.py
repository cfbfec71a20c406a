"""The CLI end to end through Typer's test runner, on the small synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mrd_cli.cli.app import app

runner = CliRunner()

FAST = {
    "pretrain": {"epochs": 4},
    "partition": {"method": "cross_fit", "folds": 2},
    "distill": {"epochs": 3},
    "ablate": {"bootstrap": 200},
}


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, fast_config) -> Path:
    run = tmp_path_factory.mktemp("run")
    res = _invoke(
        "pretrain",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    return run


def test_pretrain_writes_both_checkpoints_with_provenance(pretrained_run):
    import torch

    for role in ("multi", "text"):
        ckpt = torch.load(pretrained_run / "pretrain" / f"{role}.pt", weights_only=True)
        assert ckpt["role"] == role
        assert 1 <= ckpt["epoch"] <= FAST["pretrain"]["epochs"]
        assert ckpt["label_names"] == ["hap", "sad", "neu", "ang", "exc", "fru"]
        assert len(ckpt["data_fingerprint"]) == 16
        assert "weighted_f1" in ckpt["val_metrics"]
    assert (pretrained_run / "config.yaml").is_file()


def test_evaluate_json_has_documented_keys_and_full_confusion(pretrained_run, fast_config):
    res = _invoke(
        "evaluate",
        "--dataset",
        "synthetic",
        "--run-dir",
        str(pretrained_run),
        "--json",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # stdout holds the JSON object and nothing else
    assert {"dataset", "split", "labels", "models", "ambiguity"} <= set(out)
    assert out["split"] == "test"
    assert set(out["models"]) == {"pretrain/multi", "pretrain/text"}
    n_test = out["num_utterances"]
    for report in out["models"].values():
        assert {"accuracy", "weighted_f1", "macro_f1", "per_class_f1", "confusion_matrix"} <= set(
            report
        )
        assert set(report["per_class_f1"]) == set(out["labels"])
        assert sum(map(sum, report["confusion_matrix"])) == n_test
    assert set(out["ambiguity"]) == {"mcti", "mitc"}
    assert set(out["ambiguity"]["mcti"]) == set(out["labels"])
    saved = json.loads((pretrained_run / "metrics" / "test.json").read_text())
    assert saved["models"].keys() == out["models"].keys()


def test_evaluate_prints_tables(pretrained_run):
    res = _invoke("evaluate", "--dataset", "synthetic", "--run-dir", str(pretrained_run))
    assert res.exit_code == 0, res.output
    assert "W-F1" in res.stdout
    assert "Confusion matrix" in res.stdout
    assert "MCTI" in res.stdout


def test_distill_without_partition_names_the_command(pretrained_run, tmp_path):
    res = _invoke(
        "distill", "--dataset", "synthetic", "--run-dir", str(pretrained_run), "--device", "cpu"
    )
    if (pretrained_run / "partition.json").exists():
        pytest.skip("partition made by another test")
    assert res.exit_code == 2
    assert "mrd partition" in res.stderr
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_run_end_to_end_then_provenance_refusal(tmp_path, fast_config):
    run = tmp_path / "run"
    res = _invoke(
        "run",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--json",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["models"]) == {
        "pretrain/multi",
        "pretrain/text",
        "distill/multi",
        "distill/text",
    }
    partition = json.loads((run / "partition.json").read_text())
    assert partition["method"] == "cross_fit" and partition["folds"] == 2
    assert sum(partition["totals"].values()) == sum(len(g) for g in partition["groups"].values())
    # A second run reuses pretrain and partition.
    res2 = _invoke(
        "run",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--device",
        "cpu",
        "--no-confusion",
    )
    assert res2.exit_code == 0, res2.output
    assert "pretrain (reused)" in res2.stderr and "partition (reused)" in res2.stderr
    # Re-pretraining the text model changes its checkpoint: the old partition is refused.
    res3 = _invoke(
        "pretrain",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--modality",
        "text",
        "--seed",
        "7",
        "--device",
        "cpu",
    )
    assert res3.exit_code == 0, res3.output
    res4 = _invoke(
        "distill",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--device",
        "cpu",
    )
    assert res4.exit_code == 2
    assert "Rerun `mrd partition" in res4.stderr
    assert "Traceback" not in res4.output


@pytest.mark.slow
def test_ablate_with_two_seeds_prints_table_and_reuses_cells(tmp_path, fast_config):
    run = tmp_path / "run"
    args = [
        "ablate",
        "--dataset",
        "synthetic",
        "--config",
        str(fast_config),
        "--run-dir",
        str(run),
        "--seeds",
        "2",
        "--without",
        "rcl",
        "--device",
        "cpu",
    ]
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert "MRD w/o RCL" in res.stdout and "Δ W-F1" in res.stdout
    summary = json.loads((run / "ablation" / "results.json").read_text())
    names = [r["name"] for r in summary["rows"]]
    assert names == [
        "Pretrained (multimodal)",
        "Pretrained (text model)",
        "MRD",
        "MRD (text model)",
        "MRD w/o RCL",
        "MRD w/o RCL (text model)",
    ]
    assert len(summary["rows"][2]["weighted_f1"]["values"]) == 2
    assert summary["rows"][2]["vs"] == "pretrained" and summary["rows"][-1]["vs"] == "MRD"
    row = summary["rows"][-2]
    lo, hi = row["bootstrap_ci95"]
    # The interval is of the same difference (averaged over seeds) as delta_wf1.
    assert lo <= row["delta_wf1"] <= hi
    assert 0.0 <= row["p_bootstrap"] <= 1.0
    assert (run / "ablation" / "results.csv").read_text().count("\n") == 7
    # Running again reuses every finished cell: no cell file and no cell model is rewritten.
    written = {
        p: p.stat().st_mtime_ns
        for p in sorted((run / "ablation").rglob("*"))
        if p.is_file() and p.parent.name != "ablation"
    }
    assert len([p for p in written if p.suffix == ".json"]) == 4  # 2 variants x 2 seeds
    again = _invoke(*args, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["rows"] == summary["rows"]
    assert {p: p.stat().st_mtime_ns for p in written} == written


def test_unknown_dataset_is_a_clear_error():
    res = _invoke("pretrain", "--dataset", "iemocapp")
    assert res.exit_code == 2
    assert "Did you mean 'iemocap'" in res.stderr
    assert "Traceback" not in res.output


def test_cuda_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = _invoke("pretrain", "--dataset", "synthetic", "--device", "cuda")
    assert res.exit_code == 2
    assert "no CUDA" in res.stderr


def test_without_maps_to_config():
    from mrd_cli.config import Config
    from mrd_cli.recipes.ablate import apply_without

    cfg = apply_without(Config(), ["mic"])
    assert (cfg.distill.alpha, cfg.distill.beta, cfg.distill.gamma) == (0.0, 0.0, 0.5)
    cfg = apply_without(Config(), ["ilc", "rcl"])
    assert (cfg.distill.gamma, cfg.distill.delta) == (0.0, 0.0)
    assert cfg.distill.curriculum == "none" and cfg.distill.alpha == 0.5


TINY = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": 1, "batch_size": 32},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 1, "batch_size": 32},
    "ablate": {"bootstrap": 20},
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_run_and_ablate_on_a_tiny_config(tmp_path, tiny_config):
    # The fast tier's pass through `mrd run` and `mrd ablate`; the slow tests above check
    # their outputs in depth.
    common = ["--config", str(tiny_config), "--run-dir", str(tmp_path), "--device", "cpu"]
    common += ["--threads", "1", "--no-early-stop"]
    res = _invoke("run", *common, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["models"]) >= {"distill/multi", "distill/text"}
    steps = ("load", "pretrain", "partition", "distill", "evaluate")
    assert set(out["timings"]) == {*steps, "total"}
    assert out["timings"]["total"] == pytest.approx(sum(out["timings"][s] for s in steps), abs=0.01)
    res = _invoke("ablate", *common, "--seeds", "1", "--without", "mic", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["name"] for r in out["rows"]][-2:] == ["MRD w/o MIC", "MRD w/o MIC (text model)"]
    assert "pretrain (reused)" in res.stderr
    assert out["timings"]["pretrain"] == 0.0 and out["timings"]["distill"] > 0
    # Without --json both end with the time summary.
    res = _invoke("ablate", *common, "--seeds", "1", "--without", "mic")
    assert res.exit_code == 0, res.output
    assert "wall time per step" in res.stdout


def test_threads_and_no_early_stop_reach_the_config(tmp_path, tiny_config):
    import torch
    import typer

    from mrd_cli.cli.options import RunOptions, command
    from mrd_cli.cli.session import config_overrides
    from mrd_cli.config import load_config

    seen: list[RunOptions] = []

    @command("session", "training")
    def probe(opts: RunOptions) -> None:
        seen.append(opts)

    one = typer.Typer()
    one.command()(probe)
    res = runner.invoke(one, ["--threads", "1", "--no-early-stop", "distill.epochs=3"])
    assert res.exit_code == 0, res.output
    cfg, _ = load_config("synthetic", None, config_overrides(seen[0]))
    assert (cfg.threads, cfg.pretrain.patience, cfg.distill.patience) == (1, 0, 0)
    assert cfg.distill.epochs == 3
    before = torch.get_num_threads()
    try:
        res = _invoke(
            "pretrain",
            "--config",
            str(tiny_config),
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--json",
        )
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
        stopping = json.loads(res.stdout)["pretrain"]["multi"]["stopping"]
        assert stopping["epochs_run"] == 1 and stopping["stopped_at"] is None
    finally:
        torch.set_num_threads(before)


def test_python_dash_m_runs_the_app(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr("sys.argv", ["mrd", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("mrd_cli", run_name="__main__")
    assert exit_info.value.code == 0
    assert "pretrain" in capsys.readouterr().out
