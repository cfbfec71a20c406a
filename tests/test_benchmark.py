"""The throughput benchmark runs end to end from a checkout and reports every figure.

Functional only: nothing here depends on how fast the machine is.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"

KEYS = {
    "preset",
    "backbone",
    "load_s",
    "pretrain_multi_epoch_s",
    "pretrain_text_epoch_s",
    "distill_epoch_s",
    "distill_compute_only_s",
    "evaluate_s",
    "peak_rss_mb",
    "cuda_max_allocated_mb",
    "device",
    "torch_threads",
}


@pytest.mark.slow
def test_benchmark_json_reports_every_figure_on_the_tiny_preset():
    # One torch thread: the figures do not matter here, and a second thread only competes
    # with the other tests for the CPU.
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "tiny", "--repeats", "1", "--threads", "1"]
        + ["--device", "cpu", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # stdout holds the JSON object and nothing else
    assert set(result) == KEYS
    assert result["preset"] == "tiny"
    assert result["device"] == "cpu"
    assert result["torch_threads"] == 1
    assert result["cuda_max_allocated_mb"] is None
    assert result["backbone"] == "dialogue"
    for key in KEYS - {"preset", "backbone", "device", "torch_threads", "cuda_max_allocated_mb"}:
        assert isinstance(result[key], float) and result[key] > 0, key


def _load_benchmark_module():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_table_marks_each_iemocap_target_met_or_missed():
    bench = _load_benchmark_module()
    result = {
        "preset": "iemocap",
        "backbone": "dialogue",
        "load_s": 1.0,
        "pretrain_multi_epoch_s": 3.0,  # met (<= 4 s)
        "pretrain_text_epoch_s": 5.0,  # missed
        "distill_epoch_s": 6.0,  # met (<= 7 s)
        "distill_compute_only_s": 5.0,  # 6 / 5 = 1.2: data handling costs too much
        "evaluate_s": 0.1,
        "peak_rss_mb": 900.0,
        "cuda_max_allocated_mb": None,
        "device": "cpu",
        "torch_threads": 2,
    }
    assert set(result) == set(bench.KEYS)
    met = bench.target_status(result)
    assert met == {
        "pretrain_multi_epoch_s": True,
        "pretrain_text_epoch_s": False,
        "distill_epoch_s": True,
        "peak_rss_mb": True,
        "distill_epoch_s / distill_compute_only_s": False,
    }
    console = bench.Console(width=200, record=True)
    console.print(bench.render(result, 3, (0.5, 0.5)))
    cells = [line.split("│")[1:-1] for line in console.export_text().splitlines()]
    row = {c[0].strip(): [x.strip() for x in c[1:]] for c in cells if c}
    assert row["pretrain_multi_epoch_s"] == ["3.00 s", "<= 4 s", "yes"]
    assert row["pretrain_text_epoch_s"][-1] == "no"
    assert row["distill_epoch_s"][-1] == "yes"
    assert row["distill_epoch_s / distill_compute_only_s"] == ["1.200", "<= 1.10", "no"]
    assert row["evaluate_s"][-1] == ""  # no target


def test_backbone_table_marks_the_three_times_target():
    bench = _load_benchmark_module()
    result = {
        "preset": "iemocap",
        "pretrain_multi_epoch_s": {"dialogue": 2.0, "foal": 4.0, "dual": 7.0},
        "ratio_to_dialogue": {"dialogue": 1.0, "foal": 2.0, "dual": 3.5},
        "device": "cpu",
        "torch_threads": 1,
        "load_average": [1.0, 2.0],
    }
    console = bench.Console(width=200, record=True)
    console.print(bench.render_backbones(result, 3))
    cells = [line.split("│")[1:-1] for line in console.export_text().splitlines()]
    row = {c[0].strip(): [x.strip() for x in c[1:]] for c in cells if c}
    assert row["foal"] == ["4.00 s", "2.00", "yes"]
    assert row["dual"][-1] == "no"


@pytest.mark.slow
def test_benchmark_times_each_backbone_back_to_back_on_the_tiny_preset():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "tiny", "--repeats", "1", "--threads", "1"]
        + ["--device", "cpu", "--backbone", "foal,dual", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert list(result["pretrain_multi_epoch_s"]) == ["dialogue", "foal", "dual"]
    assert result["ratio_to_dialogue"]["dialogue"] == 1.0
    assert len(result["load_average"]) == 2


def test_gru_benchmark_times_both_gru_paths_on_the_small_preset():
    script = SCRIPT.parent / "gru.py"
    # The checkout first on the path, whether or not the package is installed.
    path = os.pathsep.join([str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(script), "--preset", "small", "--batches", "2", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result["median_ms_per_batch"]) == {"nn_gru_packed", "models_gru"}
    assert all(v > 0 for v in result["median_ms_per_batch"].values())
    assert result["speedup"] > 0
    assert "x" in out.stderr and "ms" in out.stderr


def test_fold_schedule_benchmark_compares_partitions_on_the_synthetic_corpus(tmp_path):
    script = SCRIPT.parent / "fold_schedule.py"
    path = os.pathsep.join([str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(script), "--dataset", "synthetic", "--epochs", "2,1"]
        + ["--seeds", "0,1", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["reference_epochs"] == 2
    assert [(r["seed"], r["epochs"]) for r in result["rows"]] == [(0, 2), (0, 1), (1, 2), (1, 1)]
    for row in result["rows"]:
        # The groups partition the training utterances; the reference agrees with itself.
        assert sum(row["group_share"].values()) == pytest.approx(100.0, abs=0.3)
        assert 0 <= row["oof_acc_multi"] <= 100 and 0 <= row["oof_acc_text"] <= 100
        assert (row["same_group_as_reference"] == 100.0) == (row["epochs"] == 2)
    assert set(result["seed_agreement"]) == {"2", "1"}
    assert not list(tmp_path.iterdir())  # a benchmark writes no run directory


def test_benchmark_epoch_is_the_recipes_epoch(tmp_path):
    # The benchmark times the recipes' own loop: its pretraining epoch gives exactly the
    # mean loss terms that `train_role` logs for its first epoch, from the same seeds.
    import torch

    from mrd_cli import Session
    from mrd_cli.config import Config
    from mrd_cli.core.device import seed_everything
    from mrd_cli.core.rundir import RunDir
    from mrd_cli.core.session import role_seed
    from mrd_cli.recipes.pretrain import ClassifierStep, train_role

    try:
        from conftest import make_toy_corpus
    except ImportError:  # run as a script
        from tests.conftest import make_toy_corpus

    bench = _load_benchmark_module()
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 1
    cfg.pretrain.batch_size = 4
    session = Session(cfg, make_toy_corpus(), RunDir(tmp_path), torch.device("cpu"))
    train, val = session.tensors("train"), session.tensors("val")
    logs = []
    train_role(session, "multi", train, val, cfg.seed, on_epoch=logs.append)
    seed = role_seed(cfg, "multi", cfg.seed)
    seed_everything(seed)
    model = session.build_model("multi")
    torch.manual_seed(seed)
    step = ClassifierStep(model, train, cfg.pretrain, session.corpus.num_classes)
    generator = torch.Generator().manual_seed(seed)
    losses, _ = bench.run_epoch(step, 0, generator, val, session.corpus.label_names)
    assert dict(zip(step.terms, losses.tolist())) == logs[0].losses
