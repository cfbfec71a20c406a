"""The CLI answers at once and says which code made a run: `--help` and the commands that only
read a run directory load no torch; `mrd --version`; the version and commit in every
checkpoint and config; `KEY=VALUE` config overrides on the commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_toy_corpus
from typer.testing import CliRunner

from mrd_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "optuna", "ray", "transformers")
runner = CliRunner()


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_of_every_command_loads_no_torch_or_scikit_learn():
    code = """
import sys
from typer.main import get_command
from mrd_cli.cli.app import app
group = get_command(app)
calls = [[]] + [[name] for name in group.commands]
calls += [["data", name] for name in group.commands["data"].commands]
for args in calls:
    group.main([*args, "--help"], prog_name="mrd", standalone_mode=False)
print("HELPED", len(calls))
print("LOADED", *[m for m in sys.argv[1:] if m in sys.modules])
"""
    out = _python(code, *HEAVY)
    assert out.returncode == 0, out.stderr
    lines = dict(
        line.split(" ", 1) if " " in line else (line, "") for line in out.stdout.splitlines()
    )
    assert int(lines["HELPED"]) >= 15  # mrd, every command, data's subcommands
    assert lines["LOADED"].strip() == ""


def test_python_dash_m_help_imports_no_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mrd_cli", "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and "Usage" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "mrd_cli.cli.app" in imported  # the import log is complete
    assert not {"torch", "sklearn"} & imported


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mrd_cli import Session, distill, evaluate, partition, pretrain
    from mrd_cli.config import Config
    from mrd_cli.core.rundir import RunDir

    root = tmp_path_factory.mktemp("toy") / "run"
    cfg = Config()
    cfg.model.hidden = 8
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 2
    session = Session(cfg, make_toy_corpus(), RunDir(root), torch.device("cpu"))
    pretrain(session)
    partition(session)
    distill(session)
    evaluate(session)
    return root


def test_report_and_plot_of_a_run_directory_never_load_torch(toy_run: Path, tmp_path: Path):
    code = """
import sys
from mrd_cli.cli.app import main
sys.argv = ["mrd", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    print("EXIT", exc.code)
print("TORCH", "torch" in sys.modules)
"""
    report = _python(code, "report", str(toy_run))
    assert "EXIT 0" in report.stdout, report.stdout + report.stderr
    assert "TORCH False" in report.stdout
    assert (toy_run / "report" / "tables.md").is_file()
    pytest.importorskip("matplotlib")
    plot = _python(code, "plot", str(toy_run), "--json")
    assert "EXIT 0" in plot.stdout, plot.stdout + plot.stderr
    assert "TORCH False" in plot.stdout
    # The training curves come from the checkpoints' history, read without torch.
    assert "training_curves" in plot.stdout


def test_checkpoint_metadata_read_without_torch_equals_torch_load(toy_run: Path):
    from mrd_cli.core.checkpoint_meta import WeightsPlaceholder, read_checkpoint_metadata

    path = toy_run / "distill" / "text.pt"
    meta = read_checkpoint_metadata(path)
    full = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("history", "epoch", "curriculum_stages", "config", "mrd_version", "git_commit"):
        assert meta.get(key) == full.get(key), key
    assert all(isinstance(t, WeightsPlaceholder) for t in meta["state_dict"].values())


def test_a_foreign_pickle_in_a_checkpoint_is_refused(tmp_path: Path):
    import pickle
    import zipfile

    from mrd_cli.core.checkpoint_meta import read_checkpoint_metadata
    from mrd_cli.errors import MRDError

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": os.system}))
    with pytest.raises(MRDError, match="corrupt or not a PyTorch file"):
        read_checkpoint_metadata(path)


def test_version_is_printed_and_recorded_in_checkpoints_and_config(toy_run: Path):
    from mrd_cli import __version__

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(__version__)}"$', pyproject, re.M)
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith(f"mrd {__version__} (git commit ")
    ckpt = torch.load(toy_run / "pretrain" / "multi.pt", weights_only=True)
    assert ckpt["mrd_version"] == __version__
    assert ckpt["git_commit"]
    header = (toy_run / "config.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# written by mrd {__version__}, git commit ")


def test_git_commit_is_unknown_rather_than_an_error_without_git(monkeypatch):
    from mrd_cli.core import version

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    version.git_commit.cache_clear()
    monkeypatch.setattr(version.subprocess, "run", no_git)
    try:
        assert version.git_commit() == "unknown"
    finally:
        version.git_commit.cache_clear()


# --------------------------------------------------------------------------------------
# KEY=VALUE overrides


def test_key_value_overrides_reach_the_saved_config(tmp_path: Path):
    res = runner.invoke(
        app,
        [
            "pretrain",
            "--modality",
            "text",
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
            "model.hidden=8",
            "pretrain.epochs=1",
            "distill.stage_fractions.simple=0.5",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model"]["hidden"] == 8 and saved["pretrain"]["epochs"] == 1
    # One entry of a mapping set; the mapping's other entries kept.
    fractions = saved["distill"]["stage_fractions"]
    assert fractions["simple"] == 0.5 and set(fractions) == {"difficult", "general", "simple"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["distill.alpah=0.5"], "Did you mean 'distill.alpha'?"),
        (["distill.alpha=abc"], "distill.alpha"),
        (["distil"], "KEY=VALUE"),
        (["distill=1"], "is a section"),
        (["seed="], "give a value"),
        (["--epochs", "2", "pretrain.epochs=3"], "set twice, by --epochs and by pretrain.epochs=3"),
    ],
)
def test_a_bad_override_is_one_error_line_before_any_work(tmp_path, args, message):
    res = runner.invoke(app, ["pretrain", "--run-dir", str(tmp_path / "run"), *args])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error:") and message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_distill_without_sets_the_config_before_the_session_opens(tmp_path: Path):
    # No pretrained pair here: the command stops after saying what it would distil with.
    res = runner.invoke(
        app, ["distill", "--run-dir", str(tmp_path), "--without", "mic", "--without", "rcl"]
    )
    assert res.exit_code == 2 and "Error:" in res.output
    assert "alpha=0.0 beta=0.0 gamma=0.5" in res.output and "curriculum=none" in res.output
