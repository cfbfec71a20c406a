"""Nothing is lost: resuming equals not stopping, runs repeat exactly, writes are atomic.

On the small synthetic set and the CPU: the same command twice gives identical checkpoints and
metrics; a pretrain or distill run interrupted (Ctrl-C, here raised from the progress
callback or from inside an epoch) and resumed with ``--resume`` ends with exactly the
checkpoints of an uninterrupted run; a non-finite loss stops with exit code 1, naming the
epoch and the loss term, and keeps the last good files; a write that fails half-way leaves the
previous file and no temporary file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

from mrd_cli.cli.app import app
from mrd_cli.cli.progress import EpochBars
from mrd_cli.io import atomic_torch_save, atomic_write_json, atomic_write_text
from mrd_cli.models.dialogue import DialogueModel

runner = CliRunner()

EPOCHS = 3
FAST = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": EPOCHS, "batch_size": 32},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": EPOCHS, "batch_size": 32},
}
ROLES = ("multi", "text")


def _cli(command: str, config: Path, run: Path, *extra: str) -> Result:
    args = [command, "--config", str(config), "--run-dir", str(run), "--device", "cpu", *extra]
    return runner.invoke(app, args)


def _ok(res: Result) -> Result:
    assert res.exit_code == 0, res.output
    return res


def _pipeline(config: Path, run: Path) -> dict[str, Any]:
    """pretrain -> partition -> distill -> evaluate; returns the evaluation JSON."""
    for command in ("pretrain", "partition", "distill"):
        _ok(_cli(command, config, run))
    return json.loads(_ok(_cli("evaluate", config, run, "--json")).stdout)


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    """Identical weights (bit for bit) and identical metadata (epoch, metrics, config...)."""
    ca = torch.load(a, weights_only=True)
    cb = torch.load(b, weights_only=True)
    sa, sb = ca.pop("state_dict"), cb.pop("state_dict")
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{a.name}: {key} differs"
    assert ca == cb


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file; the per-epoch records (``*.metrics.jsonl``) without their wall
    times, which differ from run to run by design."""
    return {
        str(p.relative_to(root)): hashlib.sha256(
            _untimed(p) if p.name.endswith(".metrics.jsonl") else p.read_bytes()
        ).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _untimed(path: Path) -> bytes:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        assert row.pop("seconds") >= 0 and row.pop("time_utc")
    return json.dumps(rows).encode()


def _temp_files(root: Path) -> list[Path]:
    return list(root.rglob("*.tmp"))


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


def _pipeline_in(directory: Path, config: Path) -> dict[str, Any]:
    """The pipeline run from ``directory`` with ``--run-dir run``, the same command line
    wherever it runs (the partition file records the checkpoint paths as given)."""
    with pytest.MonkeyPatch.context() as m:
        m.chdir(directory)
        return _pipeline(config, Path("run"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, fast_config: Path) -> Path:
    """An uninterrupted run of the whole pipeline: what every other run must reproduce."""
    directory = tmp_path_factory.mktemp("reference")
    _pipeline_in(directory, fast_config)
    return directory / "run"


class _Interrupt:
    """Stand-in for Ctrl-C: raise KeyboardInterrupt once training ``key`` finished ``epoch``.

    ``after_steps=0`` raises at the epoch boundary (from the progress callback, after the
    epoch's state was saved); ``after_steps=n`` lets the next epoch make ``n`` forward passes
    first, so the interruption lands in the middle of an epoch. ``key=None`` only records
    which training tasks reported an epoch (``seen``).
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        key: str | None = None,
        epoch: int = 0,
        after_steps: int = 0,
    ):
        self.armed, self.left = False, 0
        self.seen: list[str] = []
        update, forward = EpochBars.update, DialogueModel.forward

        def on_epoch(bars: EpochBars, k: str, log: Any) -> None:
            update(bars, k, log)
            self.seen.append(k)
            if k == key and log.epoch == epoch:
                if after_steps == 0:
                    raise KeyboardInterrupt
                self.armed, self.left = True, after_steps

        def counting_forward(model: DialogueModel, *args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.left -= 1
                if self.left == 0:
                    raise KeyboardInterrupt
            return forward(model, *args, **kwargs)

        monkeypatch.setattr(EpochBars, "update", on_epoch)
        monkeypatch.setattr(DialogueModel, "forward", counting_forward)


def _assert_interrupted(res: Result, state: Path, finished_epochs: int) -> None:
    assert res.exit_code == 130, res.output
    assert "Interrupted" in res.stderr and "--resume" in res.stderr
    assert "Traceback" not in res.output
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == finished_epochs
    assert not _temp_files(state.parent)


# --------------------------------------------------------------------------------------
# Determinism


def test_same_command_twice_gives_identical_checkpoints_and_metrics(
    reference: Path, fast_config: Path, tmp_path: Path
) -> None:
    metrics = _pipeline_in(tmp_path, fast_config)
    again = tmp_path / "run"
    for stage in ("pretrain", "distill"):
        for role in ROLES:
            _assert_same_checkpoint(reference / stage / f"{role}.pt", again / stage / f"{role}.pt")
    assert metrics == json.loads((reference / "metrics" / "test.json").read_text())
    # Every file, byte for byte: checkpoints, partition, metrics, config.
    assert _snapshot(again) == _snapshot(reference)


# --------------------------------------------------------------------------------------
# Resume


def test_pretrain_interrupted_twice_then_resumed_equals_an_uninterrupted_run(
    reference: Path, fast_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    multi_state = run / "pretrain" / ".multi.state.pt"
    text_state = run / "pretrain" / ".text.state.pt"

    # 1. Ctrl-C in the middle of the multimodal model's second epoch: epoch 1 is kept.
    with monkeypatch.context() as m:
        _Interrupt(m, "multi", epoch=1, after_steps=3)
        res = _cli("pretrain", fast_config, run)
    _assert_interrupted(res, multi_state, finished_epochs=1)
    assert not (run / "pretrain" / "multi.pt").exists()

    # 2. Resuming with another seed would mix two runs: refused, the state is kept.
    res = _cli("pretrain", fast_config, run, "--resume", "--seed", "1")
    assert res.exit_code == 2, res.output
    assert "comes from another config, data or seed" in res.stderr
    assert "run without --resume" in res.stderr
    assert multi_state.is_file()

    # 3. Resume, and Ctrl-C again at the end of the text model's second epoch.
    with monkeypatch.context() as m:
        _Interrupt(m, "text", epoch=2)
        res = _cli("pretrain", fast_config, run, "--resume")
    _assert_interrupted(res, text_state, finished_epochs=2)
    assert not multi_state.exists()  # the finished model's state is cleaned up
    _assert_same_checkpoint(reference / "pretrain" / "multi.pt", run / "pretrain" / "multi.pt")
    multi_mtime = (run / "pretrain" / "multi.pt").stat().st_mtime_ns

    # 4. Resume to the end: the finished multimodal model is kept, not trained again.
    with monkeypatch.context() as m:
        watch = _Interrupt(m)
        _ok(_cli("pretrain", fast_config, run, "--resume"))
    assert watch.seen == ["text"]  # only the text model's last epoch ran
    assert (run / "pretrain" / "multi.pt").stat().st_mtime_ns == multi_mtime
    for role in ROLES:
        _assert_same_checkpoint(
            reference / "pretrain" / f"{role}.pt", run / "pretrain" / f"{role}.pt"
        )
    assert not text_state.exists()
    assert not _temp_files(run)


def test_distill_interrupted_then_resumed_equals_an_uninterrupted_run(
    reference: Path, fast_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference / "pretrain", run / "pretrain")
    shutil.copy(reference / "partition.json", run / "partition.json")
    state = run / "distill" / ".pair.state.pt"

    with monkeypatch.context() as m:
        _Interrupt(m, "distill", epoch=1)
        res = _cli("distill", fast_config, run)
    _assert_interrupted(res, state, finished_epochs=1)
    assert not (run / "distill" / "multi.pt").exists()

    with monkeypatch.context() as m:
        watch = _Interrupt(m)
        _ok(_cli("distill", fast_config, run, "--resume"))
    assert watch.seen == ["distill"] * (EPOCHS - 1)  # epochs 2 and 3 only
    for role in ROLES:
        _assert_same_checkpoint(
            reference / "distill" / f"{role}.pt", run / "distill" / f"{role}.pt"
        )
    assert not state.exists()
    metrics = json.loads(_ok(_cli("evaluate", fast_config, run, "--json")).stdout)
    assert metrics == json.loads((reference / "metrics" / "test.json").read_text())


# --------------------------------------------------------------------------------------
# Non-finite loss


@pytest.fixture
def nan_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """From the second epoch on, every model output is NaN (and so is every loss term)."""
    poisoned = {"on": False}
    update, forward = EpochBars.update, DialogueModel.forward
    matched = DialogueModel.forward_matched

    def on_epoch(bars: EpochBars, key: str, log: Any) -> None:
        update(bars, key, log)
        poisoned["on"] = True

    def nan_forward(model: DialogueModel, *args: Any, **kwargs: Any) -> Any:
        out = forward(model, *args, **kwargs)
        return out * float("nan") if poisoned["on"] else out

    def nan_matched(model: DialogueModel, *args: Any, **kwargs: Any) -> Any:
        out = matched(model, *args, **kwargs)
        return tuple(x * float("nan") for x in out) if poisoned["on"] else out

    monkeypatch.setattr(EpochBars, "update", on_epoch)
    monkeypatch.setattr(DialogueModel, "forward", nan_forward)
    # Distillation runs each model with its frozen copy in one pass.
    monkeypatch.setattr(DialogueModel, "forward_matched", nan_matched)
    yield


@pytest.mark.parametrize(
    "command, extra, state_name, kept",
    [
        ("pretrain", ["--modality", "text"], "pretrain/.text.state.pt", "pretrain/text.pt"),
        ("distill", [], "distill/.pair.state.pt", "distill/multi.pt"),
    ],
)
def test_non_finite_loss_stops_naming_epoch_and_term_and_keeps_last_good_files(
    reference: Path,
    fast_config: Path,
    tmp_path: Path,
    nan_after_first_epoch: None,
    command: str,
    extra: list[str],
    state_name: str,
    kept: str,
) -> None:
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    previous = (run / kept).read_bytes()
    res = _cli(command, fast_config, run, *extra)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert "Loss term '" in res.stderr
    assert "became non-finite at epoch 2" in res.stderr
    assert "The last good state (epoch 1)" in res.stderr
    assert "Lower the learning rate" in res.stderr
    # The checkpoint of the earlier run is untouched; the state of epoch 1 is kept.
    assert (run / kept).read_bytes() == previous
    assert torch.load(run / state_name, weights_only=True)["epoch"] == 1
    assert not _temp_files(run)


# --------------------------------------------------------------------------------------
# Atomic writes


@pytest.mark.parametrize(
    "failure",
    [lambda: OSError(28, "No space left on device"), KeyboardInterrupt],
    ids=["disk-full", "ctrl-c"],
)
@pytest.mark.parametrize(
    "write",
    [
        lambda path: atomic_write_json(path, {"new": True}),
        lambda path: atomic_write_text(path, "new\n"),
        lambda path: atomic_torch_save({"new": torch.ones(3)}, path),
    ],
    ids=["json", "text", "torch"],
)
def test_write_that_fails_half_way_leaves_the_previous_file_and_no_temp_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write: Any,
    failure: Callable[[], BaseException],
) -> None:
    path = tmp_path / "result.json"
    path.write_text("previous\n")

    def fail(fd: int) -> None:
        raise failure()

    monkeypatch.setattr("mrd_cli.io.os.fsync", fail)
    with pytest.raises(BaseException) as info:
        write(path)
    assert isinstance(info.value, (OSError, KeyboardInterrupt))
    if isinstance(info.value, OSError):
        assert info.value.filename == str(path)  # the error says which file
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "result.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


@pytest.mark.slow
def test_interrupted_cross_fitted_partition_says_how_to_continue_and_resumes(
    reference: Path, fast_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C after the second fold model's first epoch: the message names `mrd partition`;
    # rerun as it was, the finished fold model is not trained again, the interrupted one
    # goes on after its last finished epoch, and the partition equals an uninterrupted one.
    run = tmp_path / "run"
    shutil.copytree(reference / "pretrain", run / "pretrain")
    with monkeypatch.context() as m:
        _Interrupt(m, "fold 2/2 multi", epoch=1)
        res = _cli("partition", fast_config, run, "--cross-fit", "2")
    assert res.exit_code == 130, res.output
    assert "rerun `mrd partition` as it was" in res.stderr and "Traceback" not in res.output
    assert sorted(p.name for p in (run / "folds").iterdir()) == [
        ".multi.fold1.state.pt",
        ".multi.fold2.state.pt",
    ]
    with monkeypatch.context() as m:
        seen = _Interrupt(m)
        _ok(_cli("partition", fast_config, run, "--cross-fit", "2"))
    assert seen.seen.count("fold 1/2 multi") == 0
    assert seen.seen.count("fold 2/2 multi") == EPOCHS - 1
    assert seen.seen.count("fold 1/2 text") == EPOCHS
    again = tmp_path / "again"
    shutil.copytree(reference / "pretrain", again / "pretrain")
    _ok(_cli("partition", fast_config, again, "--cross-fit", "2"))
    resumed, fresh = (json.loads((r / "partition.json").read_text()) for r in (run, again))
    for doc in (resumed, fresh):
        doc["provenance"].pop("checkpoints")  # their paths name the run directory
    assert resumed == fresh
    assert not list(run.rglob("*.state.pt"))
