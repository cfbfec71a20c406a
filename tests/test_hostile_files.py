"""Files mrd reads back, tampered with: crafted checkpoints and results files.

A crafted checkpoint's model spec is checked against bounds before anything is built
(a billion layers is refused at once, a NaN dropout is no traceback, a spec claiming far
more weights than it holds is refused before the memory is taken); results files read by
`mrd plot` and `mrd report` are checked like any other input (wrong types, missing keys,
empty counts, deep nesting, NaN/inf, a label list shorter than the matrix, a matrix too
large to draw). Each case: exit 2, one `Error:` line, no traceback, within a bound."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
runner = CliRunner()
TINY = {"model": {"hidden": 8}, "pretrain": {"epochs": 1, "batch_size": 64}}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in its own process, so that a hang fails the test instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-m", "mrd_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def _one_error(code: int, exit_code: int, stderr: str, output: str = "") -> str:
    assert exit_code == code, stderr + output
    assert "Traceback" not in stderr + output
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    return " ".join(stderr.split())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run directory with a pretrained pair (and its config)."""
    base = tmp_path_factory.mktemp("pretrained")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = base / "run"
    done = _cli("pretrain", "--config", str(config), "--run-dir", str(run), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    return run, config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("layers", 10**9, "its layers 1000000000 is not an integer in [1, 1024]"),
        ("dropout", math.nan, "its dropout nan is not a number in [0, 1)"),
        ("num_classes", -3, "its num_classes -3 is not an integer"),
        ("input_dims", {"text": 10**12}, "input dimension 'text'"),
        ("options", {"a": [[[[[[1]]]]]]}, "nested too deeply"),
        ("options", {"w": math.inf}, "its options.w is inf"),
        # Within the bounds, but far more weights than the file holds: refused on the meta
        # device before 4 TB are asked for.
        ("hidden", 1_000_000, "does not fit its own model spec"),
    ],
)
def test_crafted_model_spec_is_refused_before_anything_is_built(
    pretrained, tmp_path, field, value, message
):
    run, config = pretrained
    ckpt = torch.load(run / "pretrain" / "multi.pt", map_location="cpu", weights_only=True)
    ckpt["model_spec"][field] = value
    crafted = tmp_path / "crafted.pt"
    torch.save(ckpt, crafted)
    args = ["evaluate", "--config", str(config), "--run-dir", str(run), "--device", "cpu"]
    done = _cli(*args, "--checkpoint", str(crafted), timeout=120)
    assert message in _one_error(2, done.returncode, done.stderr)


# --------------------------------------------------------------------------------------
# Results files


def _metrics(labels: int = 2) -> dict:
    names = [f"c{i}" for i in range(labels)]
    matrix = [[(i + j) % 3 for j in range(labels)] for i in range(labels)]
    entry = {
        "per_class_f1": {n: 50.0 for n in names},
        "weighted_f1": 50.0,
        "accuracy": 50.0,
        "macro_f1": 50.0,
        "confusion_matrix": matrix,
    }
    return {
        "split": "test",
        "dataset": "toy",
        "labels": names,
        "models": {"pretrain/multi": entry, "distill/multi": json.loads(json.dumps(entry))},
    }


def _tampered(kind: str) -> str:
    """The text of a metrics file damaged in one way."""
    doc = _metrics()
    if kind == "models is a list":
        doc["models"] = [doc["models"]]
    elif kind == "labels missing":
        del doc["labels"]
    elif kind == "labels shorter than the matrix":
        doc["labels"] = doc["labels"][:1]
        for entry in doc["models"].values():
            entry["per_class_f1"] = {"c0": 50.0}
    elif kind == "count not a count":
        doc["models"]["pretrain/multi"]["confusion_matrix"][0][0] = -1
    elif kind == "deeply nested":
        return '{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}"
    elif kind == "nested":
        doc["models"]["pretrain/multi"]["extra"] = json.loads("[" * 40 + "]" * 40)
    text = json.dumps(doc)
    if kind == "NaN":
        text = text.replace('"weighted_f1": 50.0', '"weighted_f1": NaN', 1)
    elif kind == "Infinity":
        text = text.replace('"weighted_f1": 50.0', '"weighted_f1": 1e999', 1)
    elif kind == "huge integer":
        text = text.replace('"weighted_f1": 50.0', '"weighted_f1": ' + "9" * 5000, 1)
    return text


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("models is a list", "models is a list, not an object"),
        ("labels missing", "labels is missing"),
        ("labels shorter than the matrix", "confusion_matrix is not 1 x 1"),
        ("count not a count", "is not a count"),
        ("deeply nested", "nested too deeply"),
        ("nested", "nested too deeply"),
        ("NaN", "non-finite number NaN"),
        ("Infinity", "the number 1e999, out of range"),
        ("huge integer", "out of range"),
    ],
)
@pytest.mark.parametrize("command", ["report", "plot"])
def test_tampered_metrics_file_is_one_error_and_no_table_is_written(
    tmp_path, kind, message, command
):
    if command == "plot":
        pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    (run / "metrics" / "test.json").write_text(_tampered(kind))
    res = runner.invoke(app, [command, str(run)])
    err = _one_error(2, res.exit_code, res.stderr, res.output)
    assert message in err and "metrics/test.json" in err and "mrd evaluate" in err
    assert not (run / "report").exists() and not (run / "plots").exists()


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([], "counts is a list, not an object"),
        ({}, "counts.mcti is missing"),
        ({g: {} for g in ("mcti", "mitc", "general", "simple")}, "counts.mcti is empty"),
        (
            {g: {"a": 1, "b": 2} for g in ("mcti", "mitc", "general")} | {"simple": {"a": 1}},
            "counts.simple has other classes",
        ),
    ],
)
def test_tampered_partition_file_is_one_error(tmp_path, counts, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "partition.json").write_text(json.dumps({"method": "in_sample", "counts": counts}))
    res = runner.invoke(app, ["report", str(run)])
    assert message in _one_error(2, res.exit_code, res.stderr, res.output)


def test_a_matrix_too_large_to_draw_is_skipped_with_its_reason(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    (run / "metrics" / "test.json").write_text(json.dumps(_metrics(labels=300)))
    res = runner.invoke(app, ["plot", str(run)])
    err = _one_error(2, res.exit_code, res.stderr, res.output)
    assert "300 classes are too many to draw" in err and "Nothing to plot" in err
    # The tables are still written, every number finite and every class there.
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    table = (run / "report" / "f1.md").read_text()
    assert "c299" in table and "nan" not in table.lower() and "inf" not in table.lower()
