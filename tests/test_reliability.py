"""Issue 9, reliability round 2: no silent wrong data, no writes outside the run, steps that
check each other, clean exits.

Every case goes through the CLI and checks the exit code, the one-line message (no
traceback) and, where something could be lost, the files before and after byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

from mrd_cli.cli.app import app
from mrd_cli.cli.progress import EpochBars
from mrd_cli.core import lock
from mrd_cli.data.safe_pickle import _reconstruct
from mrd_cli.data.synthetic import generate

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

TINY = {
    "model": {"hidden": 8},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 1, "batch_size": 64},
}
_, FEATURES, ROBERTA = generate("small", 0)


# --------------------------------------------------------------------------------------
# Helpers


def _fails(args: list[str], code: int, *needles: str) -> Result:
    """Run the CLI, expect exit ``code`` with one ``Error:`` line containing every needle."""
    res = runner.invoke(app, args)
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in {res.stderr!r}"
    return res


def _ok(args: list[str]) -> Result:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) with the hash of its content."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _data_dir(tmp_path: Path, features: Any = FEATURES, roberta: Any = ROBERTA) -> Path:
    out = tmp_path / "data"
    out.mkdir(exist_ok=True)
    for name, obj in (
        ("IEMOCAP_features.pkl", features),
        ("iemocap_features_roberta.pkl", roberta),
    ):
        with (out / name).open("wb") as fh:
            pickle.dump(obj, fh, protocol=4)
    return out


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _cmd(command: str, cfg: Path, run: Path, *extra: str) -> list[str]:
    return [command, "--config", str(cfg), "--run-dir", str(run), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    """A tiny run directory: pretrained pair, in-sample partition, distilled pair, metrics."""
    run = tmp_path_factory.mktemp("base") / "run"
    for command in ("pretrain", "partition", "distill", "evaluate"):
        res = runner.invoke(app, _cmd(command, tiny_config, run), catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return run


@pytest.fixture
def run_copy(distilled_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(distilled_run, tmp_path / "run"))


# --------------------------------------------------------------------------------------
# Silent wrong data: dataset YAML files


def test_dataset_yaml_without_layout_is_refused_not_synthetic(tmp_path: Path) -> None:
    ds = _yaml(tmp_path / "ds.yaml", "dataset:\n  name: mine\n  features_file: nope.pkl\n")
    _fails(
        ["pretrain", "--dataset", str(ds), "--run-dir", str(tmp_path / "run")],
        2,
        "lacks dataset.layout",
    )
    assert not (tmp_path / "run").exists()


def test_dataset_yaml_without_name_is_refused(tmp_path: Path) -> None:
    ds = _yaml(tmp_path / "ds.yaml", "dataset:\n  layout: iemocap\n")
    _fails(["data", "inspect", "--dataset", str(ds)], 2, "lacks dataset.name")
    _fails(
        ["pretrain", "--dataset", str(ds), "--run-dir", str(tmp_path / "r")],
        2,
        "lacks dataset.name",
    )


@pytest.mark.parametrize(
    "body, needle",
    [
        ("dataset:\n  name: mine\n  layout: iemocapp\n", "dataset.layout"),
        ("dataset:\n  name: mine\n  layout: iemocap\n  val_fraction: lots\n", "val_fraction"),
        ("dataset:\n  name: mine\n  layout: iemocap\n  featurs_file: a.pkl\n", "features_file"),
        ("dataset: [1, 2]\n", "'dataset' section"),
        ("dataset:\n  name: mine\n  layout: iemocap\n  features_file: no.pkl\n", "missing"),
    ],
    ids=["unknown-layout", "wrong-type", "unknown-key", "not-a-mapping", "missing-file"],
)
def test_every_dataset_yaml_key_is_validated(tmp_path: Path, body: str, needle: str) -> None:
    ds = _yaml(tmp_path / "ds.yaml", body)
    _fails(["pretrain", "--dataset", str(ds), "--run-dir", str(tmp_path / "run")], 2, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text",
    [
        "pretrain:\n  epochs: 1\n  epochs: 2\n",
        "pretrain:\n  epochs: 1\nmodel:\n  hidden: 8\npretrain:\n  lr: 0.1\n",
    ],
    ids=["duplicate-key", "duplicate-section"],
)
def test_duplicate_yaml_keys_or_sections_are_refused(tmp_path: Path, text: str) -> None:
    cfg = _yaml(tmp_path / "c.yaml", text)
    _fails(["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], 2, "twice")
    ds = _yaml(tmp_path / "ds.yaml", "dataset:\n  name: a\n  layout: iemocap\n  name: b\n")
    _fails(["pretrain", "--dataset", str(ds), "--run-dir", str(tmp_path / "r")], 2, "twice")


def test_zero_dimensional_modality_is_refused(tmp_path: Path) -> None:
    feats = list(FEATURES)
    feats[4] = {did: np.zeros((len(v), 0), np.float32) for did, v in FEATURES[4].items()}
    data = _data_dir(tmp_path, tuple(feats))
    _fails(
        [
            "pretrain",
            "--dataset",
            "iemocap",
            "--data-dir",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        2,
        "0 features per utterance",
    )
    assert not (tmp_path / "run").exists()


def test_class_absent_from_training_is_warned(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    names = ["hap", "sad", "neu", "ang", "exc", "fru", "never"]
    ds = _yaml(
        tmp_path / "ds.yaml",
        yaml.safe_dump(
            {
                "dataset": {"name": "seven", "layout": "iemocap", "label_names": names},
                **{k: TINY[k] for k in ("model", "pretrain")},
            }
        ),
    )
    res = _ok(["data", "inspect", "--dataset", str(ds), "--data-dir", str(data)])
    assert "Warning:" in res.stderr and "never" in res.stderr
    res = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            str(ds),
            "--data-dir",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--modality",
            "text",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Warning:" in res.stderr and "never" in res.stderr and "F1 will be 0" in res.stderr


# --------------------------------------------------------------------------------------
# Writes outside the run


@pytest.mark.parametrize("name", ["../X", "", ".", "a/b", "/abs", ".hidden"])
def test_unsafe_dataset_name_never_becomes_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "config.yaml").write_text("precious\n")
    before = _snapshot(tmp_path)
    ds = _yaml(
        tmp_path / "ds.yaml",
        yaml.safe_dump({"dataset": {"name": name, "layout": "synthetic"}}),
    )
    before = _snapshot(tmp_path)
    _fails(["pretrain", "--dataset", str(ds), "--epochs", "1"], 2, "dataset.name")
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "runs").exists()


def test_evaluating_another_runs_checkpoint_does_not_overwrite_or_mislabel(
    run_copy: Path, distilled_run: Path, tiny_config: Path
) -> None:
    other = distilled_run / "pretrain" / "text.pt"
    before = _snapshot(run_copy)
    res = _ok(_cmd("evaluate", tiny_config, run_copy, "--checkpoint", str(other), "--json"))
    out = json.loads(res.stdout)
    assert list(out["models"]) == [str(other)]  # named by its path, not as this run's model
    assert _snapshot(run_copy) == before  # metrics/test.json not overwritten
    res = _ok(_cmd("evaluate", tiny_config, run_copy, "--checkpoint", str(other)))
    assert "Not saved" in res.stderr


def test_the_same_checkpoint_twice_is_refused(run_copy: Path, tiny_config: Path) -> None:
    path = run_copy / "pretrain" / "text.pt"
    before = _snapshot(run_copy)
    _fails(
        _cmd(
            "evaluate", tiny_config, run_copy, "--checkpoint", str(path), "--checkpoint", str(path)
        ),
        2,
        "given twice",
    )
    assert _snapshot(run_copy) == before


def test_checkpoints_of_the_same_stage_and_role_from_two_runs_are_both_kept(
    run_copy: Path, distilled_run: Path, tiny_config: Path
) -> None:
    mine, other = run_copy / "pretrain" / "text.pt", distilled_run / "pretrain" / "text.pt"
    res = _ok(
        _cmd(
            "evaluate",
            tiny_config,
            run_copy,
            "--checkpoint",
            str(mine),
            "--checkpoint",
            str(other),
            "--json",
        )
    )
    assert sorted(json.loads(res.stdout)["models"]) == sorted(["pretrain/text", str(other)])


def test_a_failed_command_leaves_no_empty_run_directory(tmp_path: Path) -> None:
    _fails(["evaluate", "--run-dir", str(tmp_path / "new"), "--device", "cpu"], 2, "No checkpoints")
    assert not (tmp_path / "new").exists()


def test_run_keeps_pretrained_checkpoints_made_with_other_settings(
    run_copy: Path, tmp_path: Path
) -> None:
    other = _yaml(tmp_path / "other.yaml", yaml.safe_dump({**TINY, "pretrain": {"epochs": 2}}))
    before = _snapshot(run_copy)
    _fails(
        _cmd("run", other, run_copy), 2, "made with other settings", "pretrain.epochs", "--force"
    )
    assert _snapshot(run_copy) == before


# --------------------------------------------------------------------------------------
# Steps that check each other


def _live_pid() -> subprocess.Popen:
    # Alive until killed (it waits for an end of input that never comes), however long the
    # commands take on a busy machine: a timed sleep could end mid-test.
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )


def test_locked_run_directory_is_refused_naming_the_holder(
    run_copy: Path, tiny_config: Path
) -> None:
    holder = _live_pid()
    try:
        (run_copy / lock.LOCK_NAME).write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "host": socket.gethostname(),
                    "command": "mrd pretrain",
                    "started": "now",
                }
            )
        )
        before = _snapshot(run_copy)
        for command in ("pretrain", "partition", "distill", "evaluate", "run"):
            _fails(_cmd(command, tiny_config, run_copy), 2, f"pid {holder.pid}", "mrd pretrain")
        assert _snapshot(run_copy) == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_recovered(run_copy: Path, tiny_config: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_copy / lock.LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "mrd distill"})
    )
    _ok(_cmd("evaluate", tiny_config, run_copy))
    assert not (run_copy / lock.LOCK_NAME).exists()


def test_damaged_old_lock_is_recovered_and_other_hosts_lock_is_respected(
    run_copy: Path, tiny_config: Path
) -> None:
    path = run_copy / lock.LOCK_NAME
    path.write_text("{not json")
    os.utime(path, (time.time() - 60, time.time() - 60))
    _ok(_cmd("evaluate", tiny_config, run_copy))
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "mrd run"}))
    _fails(_cmd("evaluate", tiny_config, run_copy), 2, "pid 1 on elsewhere", "mrd run")
    assert path.exists()  # not ours to remove


def test_a_command_leaves_no_lock_behind(run_copy: Path, tiny_config: Path) -> None:
    _ok(_cmd("evaluate", tiny_config, run_copy))
    _fails(_cmd("evaluate", tiny_config, run_copy, "--split", "nope"), 2, "--split")
    _fails(_cmd("distill", tiny_config, run_copy, "--resume", "--epochs", "0"), 2)
    assert not (run_copy / lock.LOCK_NAME).exists()


def test_partition_refuses_a_pair_pretrained_with_other_seeds(
    run_copy: Path, tiny_config: Path
) -> None:
    _ok(_cmd("pretrain", tiny_config, run_copy, "--modality", "text", "--seed", "7"))
    before = _snapshot(run_copy)
    _fails(_cmd("partition", tiny_config, run_copy), 2, "were not made together", "seed (0 vs 7)")
    assert _snapshot(run_copy) == before


def test_evaluate_marks_distilled_models_of_another_pretrained_pair(
    run_copy: Path, tiny_config: Path
) -> None:
    # Both models pretrained anew (another seed): the partition and the distilled models
    # were made from the previous pair.
    _ok(_cmd("pretrain", tiny_config, run_copy, "--seed", "3"))
    res = _ok(_cmd("evaluate", tiny_config, run_copy, "--json"))
    out = json.loads(res.stdout)
    assert out["provenance"]["consistent"] is False
    assert any("partition.json was not made from" in p for p in out["provenance"]["problems"])
    res = _ok(_cmd("evaluate", tiny_config, run_copy))
    assert "Warning:" in res.stderr and "Δ columns left out" in res.stderr
    assert "Δ" not in res.stdout


def test_evaluate_reports_a_consistent_chain(distilled_run: Path) -> None:
    saved = json.loads((distilled_run / "metrics" / "test.json").read_text())
    assert saved["provenance"] == {"consistent": True, "problems": []}


def test_nan_weights_are_refused(run_copy: Path, tiny_config: Path) -> None:
    path = run_copy / "pretrain" / "multi.pt"
    ckpt = torch.load(path, weights_only=True)
    first = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][first] = torch.full_like(ckpt["state_dict"][first], float("nan"))
    torch.save(ckpt, path)
    before = _snapshot(run_copy)
    _fails(_cmd("partition", tiny_config, run_copy), 2, "NaN or infinite weights", first)
    _fails(_cmd("evaluate", tiny_config, run_copy), 2, "NaN or infinite weights")
    assert _snapshot(run_copy) == before


# --------------------------------------------------------------------------------------
# Tracebacks and clean exits


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seed", "99999999999999999999999"], "seed"),
        (["--seed", "-1"], "seed"),
        (["--epochs", "99999999999999999999999"], "pretrain.epochs"),
    ],
    ids=["huge-seed", "negative-seed", "huge-epochs"],
)
def test_overflowing_numbers_on_the_command_line(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    _fails(["pretrain", "--run-dir", str(tmp_path / "r"), *extra], 2, needle)


@pytest.mark.parametrize(
    "body, needle",
    [
        ("pretrain:\n  lr: 1.0e+400\n", "pretrain.lr"),
        ("model:\n  encoder: transformer\n  hidden: 10\n  heads: 4\n", "multiple of model.heads"),
        ("seed: 123456789012345678901234567890\n", "seed"),
        ("dataset:\n  data_seed: -5\n", "data_seed"),
    ],
    ids=["lr-overflow", "heads", "seed-yaml", "data-seed"],
)
def test_bad_numbers_in_a_config(tmp_path: Path, body: str, needle: str) -> None:
    cfg = _yaml(tmp_path / "c.yaml", body)
    _fails(["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "r")], 2, needle)


def test_data_synth_refuses_an_overflowing_seed(tmp_path: Path) -> None:
    _fails(["data", "synth", "--out", str(tmp_path / "o"), "--seed", "-3"], 2, "--seed")


class _Bomb:
    """Pickles as numpy's ``_reconstruct(ndarray, (10**11,), 'f')``: 373 GiB asked for."""

    def __reduce__(self) -> Any:
        return (_reconstruct, (np.ndarray, (10**11,), b"f"))


class _Shared:
    """A list of one row referenced a million times (cheap in the pickle memo)."""


class _BufferBomb:
    """Pickles as ``bytearray(10**11)``: 93 GiB of zeros asked for by a few bytes."""

    def __reduce__(self) -> Any:
        return (bytearray, (10**11,))


@pytest.mark.parametrize("bomb, size", [(_Bomb, "373 GiB"), (_BufferBomb, "93.1 GiB")])
def test_pickle_asking_for_far_more_memory_than_its_size_is_refused(
    tmp_path: Path, bomb: type, size: str
) -> None:
    feats = list(FEATURES)
    feats[4] = {**FEATURES[4], FEATURES[7][0]: bomb()}
    data = _data_dir(tmp_path, tuple(feats))
    start = time.perf_counter()
    _fails(
        [
            "pretrain",
            "--dataset",
            "iemocap",
            "--data-dir",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        2,
        "Refused to load",
        size,
    )
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "run").exists()


def test_rows_repeated_by_reference_beyond_the_budget_are_refused(tmp_path: Path) -> None:
    row = [0.5] * 1000
    did = FEATURES[7][0]
    feats = list(FEATURES)
    feats[4] = {**FEATURES[4], did: [row] * 200_000}  # 800 MB as float32 from a small file
    data = _data_dir(tmp_path, tuple(feats))
    _fails(
        [
            "pretrain",
            "--dataset",
            "iemocap",
            "--data-dir",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        2,
        "would expand",
    )


def _edit_checkpoint(path: Path, key: str, value: Any) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt[key] = value
    torch.save(ckpt, path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("epoch", "seven"),
        ("val_metrics", [1, 2]),
        ("label_names", 5),
        ("role", "both"),
        ("data_fingerprint", 12),
        ("config", "yes"),
    ],
)
def test_malformed_checkpoint_metadata_is_refused(
    run_copy: Path, tiny_config: Path, key: str, value: Any
) -> None:
    _edit_checkpoint(run_copy / "pretrain" / "text.pt", key, value)
    before = _snapshot(run_copy)
    _fails(_cmd("evaluate", tiny_config, run_copy), 2, "text.pt")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["provenance"].update(checkpoints={"multi": 3, "text": 4}),
        lambda d: d.update(totals={"mcti": "a"}),
        lambda d: d.update(groups=[1, 2]),
        lambda d: d["groups"].update({next(iter(d["groups"])): "simple"}),
        lambda d: d.update(provenance=None),
    ],
    ids=["checkpoints", "totals", "groups-list", "group-string", "provenance-null"],
)
def test_malformed_partition_fields_are_refused(run_copy: Path, tiny_config: Path, edit) -> None:
    path = run_copy / "partition.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    before = _snapshot(run_copy)
    _fails(_cmd("distill", tiny_config, run_copy), 2, "partition")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.update(epoch="x"),
        lambda s: s.update(epoch=10**6),
        lambda s: s.update(history={"a": 1}),
        lambda s: s.pop("models"),
        lambda s: s.update(best={"model": {"epoch": 1}}),
    ],
    ids=["epoch-string", "epoch-range", "history", "no-models", "best"],
)
def test_malformed_resume_state_is_refused(run_copy: Path, tiny_config: Path, edit) -> None:
    """A state file written by an interrupted run, then damaged."""
    cfg = run_copy.parent / "three.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "pretrain": {"epochs": 3, "batch_size": 64}}))
    update = EpochBars.update

    def interrupt_after_epoch_1(bars: EpochBars, key: str, log: Any) -> None:
        update(bars, key, log)
        if log.epoch == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EpochBars, "update", interrupt_after_epoch_1)
        res = runner.invoke(app, _cmd("pretrain", cfg, run_copy, "--modality", "text"))
    assert res.exit_code == 130, res.output
    state = run_copy / "pretrain" / ".text.state.pt"
    data = torch.load(state, weights_only=False)
    edit(data)
    torch.save(data, state)
    before = _snapshot(run_copy)
    _fails(
        _cmd("pretrain", cfg, run_copy, "--modality", "text", "--resume"),
        2,
        "saved training state",
        "without --resume",
    )
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pretrain", "--epochs", "abc"], "'--epochs'"),
        (["evaluate", "--split", "nope"], "'--split'"),
        (["pretrain", "--bogus"], "No such option"),
        (["nosuchcommand"], "No such command"),
        (["distill", "--curriculum", "sideways"], "'--curriculum'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], needle: str) -> None:
    res = _fails(args, 2, needle, "--help`")
    assert len(res.stderr.strip().splitlines()) == 1
    assert "╭" not in res.output and "Usage:" not in res.output


def test_run_directory_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("keep me\n")
    for command in ("pretrain", "evaluate", "run"):
        _fails([command, "--run-dir", str(target)], 2, "is a file")
    assert target.read_text() == "keep me\n"


def test_read_only_run_directory_still_prints_the_tables(
    run_copy: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(run_copy)

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    # Whoever runs the tests (root included), writing anything fails as on a read-only mount.
    monkeypatch.setattr("mrd_cli.io.tempfile.mkstemp", denied)
    monkeypatch.setattr("mrd_cli.core.lock.Path.write_text", denied)
    res = _ok(_cmd("evaluate", tiny_config, run_copy, "--no-confusion"))
    assert "W-F1" in res.stdout and "Not saved" in res.stderr
    assert _snapshot(run_copy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_directory_on_disk(run_copy: Path, tiny_config: Path) -> None:
    for p in [run_copy, *run_copy.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        res = _ok(_cmd("evaluate", tiny_config, run_copy, "--no-confusion"))
        assert "W-F1" in res.stdout and "Not saved" in res.stderr
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_output_files_respect_the_umask(
    run_copy: Path, tiny_config: Path, umask: int, mode: int
) -> None:
    old = os.umask(umask)
    try:
        _ok(_cmd("evaluate", tiny_config, run_copy))
    finally:
        os.umask(old)
    assert (run_copy / "metrics" / "test.json").stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------------------
# SIGTERM and two real processes


def _spawn(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mrd_cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(cond, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigterm_during_data_synth_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _spawn("data", "synth", "--preset", "iemocap", "--out", str(out), cwd=tmp_path)
    # The state the test needs, whatever the machine's speed: the command frozen (SIGSTOP)
    # while a temporary file of its is there, so the signal surely lands mid-write.
    deadline = time.monotonic() + 300
    while True:
        assert _wait_for(lambda: out.is_dir() and any(out.glob(".*.tmp")), 300), "no write seen"
        proc.send_signal(signal.SIGSTOP)
        if any(out.glob(".*.tmp")):
            break
        proc.send_signal(signal.SIGCONT)  # that write ended meanwhile: wait for the next
        assert time.monotonic() < deadline and proc.poll() is None, "no write caught"
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Terminated." in err and "Traceback" not in err
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_second_process_is_refused_and_sigterm_stops_the_first_cleanly(
    tmp_path: Path, tiny_config: Path
) -> None:
    run = tmp_path / "run"
    # Far more epochs than any machine trains during the test, early stopping off: the
    # first command still runs when the second is refused and when SIGTERM reaches it.
    long = {**TINY, "pretrain": {"epochs": 5000, "patience": 0}}
    cfg = _yaml(tmp_path / "long.yaml", yaml.safe_dump(long))
    first = _spawn(
        "pretrain", "--config", str(cfg), "--run-dir", str(run), "--device", "cpu", cwd=tmp_path
    )
    try:
        assert _wait_for(lambda: (run / lock.LOCK_NAME).is_file(), 120)
        second = _spawn(
            "distill",
            "--config",
            str(tiny_config),
            "--run-dir",
            str(run),
            "--device",
            "cpu",
            cwd=tmp_path,
        )
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"pid {first.pid}" in err and "mrd pretrain" in err
        assert len(err.strip().splitlines()) == 1
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 143, err
        assert "Terminated." in err and "--resume" in err and "Traceback" not in err
        assert not (run / lock.LOCK_NAME).exists()
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    finally:
        if first.poll() is None:
            first.kill()


@pytest.mark.parametrize(
    "cell",
    [
        [1, 2],
        {"signature": "sig"},
        {"signature": "sig", "result": {"multi": {}, "text": {}}},
        {
            "signature": "sig",
            "result": {
                r: {"weighted_f1": "x", "per_class_f1": {"a": 1.0}, "predictions": [0]}
                for r in ("multi", "text")
            },
        },
        {
            "signature": "sig",
            "result": {
                r: {"weighted_f1": 1.0, "per_class_f1": {}, "predictions": [0]}
                for r in ("multi", "text")
            },
        },
    ],
    ids=["list", "no-result", "empty-roles", "string-f1", "missing-class"],
)
def test_damaged_ablation_cell_is_recomputed_not_trusted(tmp_path: Path, cell: Any) -> None:
    from mrd_cli.recipes.ablate import _read_cell

    path = tmp_path / "cell.json"
    path.write_text(json.dumps(cell))
    assert _read_cell(path, "sig", ["a"]) is None
    good = {
        "signature": "sig",
        "result": {
            r: {"weighted_f1": 1.0, "per_class_f1": {"a": 2.0}, "predictions": [0, 1]}
            for r in ("multi", "text")
        },
    }
    path.write_text(json.dumps(good))
    assert _read_cell(path, "sig", ["a"]) == good
