"""Per-epoch records: RUN/<step>/<role>.metrics.jsonl as training goes, and the optional
TensorBoard and MLflow loggers (read back offline with their own readers)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.tracking import metrics_path, read_metrics
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import partition
from mrd_cli.recipes.pretrain import pretrain
from mrd_cli.recipes.selftrain import selftrain
from tests.conftest import LABELS, make_toy_corpus

runner = CliRunner()


def _session(root, loggers=(), **tracking) -> Session:
    cfg = Config()
    cfg.dataset.label_names = list(LABELS)
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 3
    cfg.pretrain.patience = 0
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 3
    cfg.distill.patience = 0
    cfg.selftrain.contrastive_epochs = 1
    cfg.selftrain.epochs = 2
    cfg.selftrain.rounds = 1
    cfg.selftrain.labeled_fraction = 0.3
    cfg.selftrain.default_threshold = 0.2
    cfg.tracking.loggers = list(loggers)
    for key, value in tracking.items():
        setattr(cfg.tracking, key, value)
    return Session(cfg, make_toy_corpus(), RunDir(root), torch.device("cpu"))


def _history(path) -> list[float]:
    return [h["val_weighted_f1"] for h in load_checkpoint(path)["history"] if h["epoch"] > 0]


def test_each_step_writes_one_line_per_epoch_and_model(tmp_path):
    session = _session(tmp_path)
    pretrain(session)
    for role in ("multi", "text"):
        rows = read_metrics(metrics_path(tmp_path / "pretrain", role))
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert [r["val_weighted_f1"] for r in rows] == _history(session.run.pretrained(role))
        assert set(rows[0]["losses"]) >= {"total", "cls", "reg"}
        assert all(r["stage"] == "pretrain" and r["seconds"] >= 0 for r in rows)
    pretrain(session)  # a fresh run starts the file anew
    assert len(read_metrics(metrics_path(tmp_path / "pretrain", "multi"))) == 3

    partition(session)
    distill(session)
    for role in ("multi", "text"):
        rows = read_metrics(metrics_path(tmp_path / "distill", role))
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert [r["val_weighted_f1"] for r in rows] == _history(session.run.distilled(role))
        stages = load_checkpoint(session.run.distilled(role))["curriculum_stages"]
        expected = [name for name, n in stages for _ in range(n)]
        assert [r["stage"] for r in rows] == expected
        assert any(k.startswith("kd") for k in rows[0]["losses"])

    selftrain(session, role="multi")
    rows = read_metrics(metrics_path(tmp_path / "selftrain", "multi"))
    assert [(r["segment"], r["epoch"]) for r in rows][:2] == [("round 0", 1), ("round 0", 2)]
    assert {r["segment"] for r in rows} <= {"round 0", "round 1"}


def test_a_resumed_run_drops_the_epochs_it_redoes(tmp_path):
    from mrd_cli.core.tracking import EpochRecorder
    from mrd_cli.core.training import EpochLog

    rec = EpochRecorder(tmp_path, "pretrain", {"model": "multi"}, "pretrain")
    for e in (1, 2, 3):
        rec.record(EpochLog(e, 5, {"total": 1.0 / e}, {"model": 10.0 * e}, {}))
    resumed = EpochRecorder(tmp_path, "pretrain", {"model": "multi"}, "pretrain")
    resumed.record(EpochLog(3, 5, {"total": 0.5}, {"model": 99.0}, {}))
    rows = read_metrics(metrics_path(tmp_path, "multi"))
    assert [(r["epoch"], r["val_weighted_f1"]) for r in rows] == [(1, 10.0), (2, 20.0), (3, 99.0)]


def test_tensorboard_events_hold_the_per_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    session = _session(tmp_path, ["tensorboard"])
    pretrain(session)
    for role in ("multi", "text"):
        events = EventAccumulator(str(tmp_path / "tensorboard" / "pretrain" / role))
        events.Reload()
        scalars = events.Scalars("val/weighted_f1")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx(
            _history(session.run.pretrained(role)), abs=1e-4
        )
        assert "loss/cls" in events.Tags()["scalars"]


@pytest.mark.slow  # MLflow's import and store migrations take tens of seconds
def test_mlflow_runs_have_params_metrics_and_artifacts(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    session = _session(tmp_path, ["mlflow"])
    pretrain(session)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mrd-toy")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"pretrain/multi", "pretrain/text"}
    for role in ("multi", "text"):
        run = runs[f"pretrain/{role}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["pretrain.epochs"] == "3"
        history = client.get_metric_history(run.info.run_id, "val_weighted_f1")
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(_history(session.run.pretrained(role)))
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names == {f"{role}.pt", f"{role}.md"}


def test_log_option_of_the_commands(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    result = runner.invoke(
        app, ["pretrain", "--epochs", "1", "--run-dir", str(tmp_path), "--log", "tensorboard"]
    )
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "tensorboard" / "pretrain" / "multi").iterdir())
    assert json.loads(metrics_path(tmp_path / "pretrain", "multi").read_text())["epoch"] == 1
    result = runner.invoke(app, ["pretrain", "--run-dir", str(tmp_path), "--log", "wandb"])
    assert result.exit_code == 2
