"""Every bad input ends in one clear message, a non-zero exit code and no half-written file.

Each case goes through the CLI (Typer's test runner) and checks the exit code (2 for a user
error, 1 for a failure during a run), that stderr says what is wrong and what to do, that no
traceback is printed, and that the run directory is exactly as it was (nothing new, nothing
partial). The readers' own specifications are not repeated here; they live in
``tests/test_formats.py`` (wrong tuple layouts, ragged features, labels that disagree between
the two files, every random structure -> MRDError) and ``tests/test_safe_pickle.py`` (every
disallowed global, truncated pickles, random bytes -> MRDError). Resuming, determinism, a
non-finite loss and atomic writes are in ``tests/test_resume_determinism.py``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from mrd_cli.cli.app import app
from mrd_cli.config import DatasetConfig
from mrd_cli.data.formats import IEMOCAP_LABELS, load_corpus, write_iemocap
from mrd_cli.data.synthetic import generate
from mrd_cli.errors import MRDError

runner = CliRunner()

TINY = {
    "model": {"hidden": 8},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 1, "batch_size": 64},
}

# The community tuples of the built-in synthetic corpus (IEMOCAP layout): a valid starting
# point that each case below damages in one place.
_, FEATURES, ROBERTA = generate("small", 0)
DID = FEATURES[7][3]  # a training dialogue


# --------------------------------------------------------------------------------------
# Helpers


def _fails(args: list[str], code: int, *needles: str) -> Result:
    """Run the CLI, expect exit ``code`` with one error message containing every needle."""
    res = runner.invoke(app, args)
    assert res.exit_code == code, res.output
    # Nothing escaped the CLI's error handling (a stray exception would be res.exception).
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    assert [line.startswith("Error: ") for line in res.stderr.splitlines()].count(True) == 1
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in {res.stderr!r}"
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


def _replace(parts: tuple, index: int, did: str, value: Any) -> tuple:
    """``parts`` with entry ``did`` of the dict at ``index`` replaced (nothing else copied)."""
    out = list(parts)
    out[index] = {**parts[index], did: value}
    return tuple(out)


def _data_dir(tmp_path: Path, features: Any = FEATURES, roberta: Any = ROBERTA) -> Path:
    """Write the two IEMOCAP-layout pickles as plain pickles (any structure) into a directory."""
    out = tmp_path / "data"
    out.mkdir()
    for name, obj in (
        ("IEMOCAP_features.pkl", features),
        ("iemocap_features_roberta.pkl", roberta),
    ):
        with (out / name).open("wb") as fh:
            pickle.dump(obj, fh, protocol=4)
    return out


def _pretrain_on(data_dir: Path, run: Path) -> list[str]:
    return [
        "pretrain",
        "--dataset",
        "iemocap",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run),
        "--device",
        "cpu",
        "--epochs",
        "1",
    ]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def partitioned_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    """A run directory with both pretrained checkpoints and an in-sample partition."""
    run = tmp_path_factory.mktemp("base") / "run"
    for command in ("pretrain", "partition"):
        res = runner.invoke(
            app,
            [command, "--config", str(tiny_config), "--run-dir", str(run), "--device", "cpu"],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
    return run


@pytest.fixture
def run_copy(partitioned_run: Path, tmp_path: Path) -> Path:
    """A private copy of the partitioned run that a test may damage."""
    return Path(shutil.copytree(partitioned_run, tmp_path / "run"))


# --------------------------------------------------------------------------------------
# Feature files


def test_missing_feature_files_name_the_paths_and_data_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fails(
        _pretrain_on(tmp_path / "nowhere", run),
        2,
        "IEMOCAP_features.pkl (missing)",
        "iemocap_features_roberta.pkl (missing)",
        "--data-dir",
        "mrd data synth",
    )
    assert not run.exists()


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda b: b[: len(b) // 2], ["is not a readable pickle", "truncated", "copy it again"]),
        (lambda b: b[:0], ["ends before the pickle does", "copy it again"]),
        (
            lambda b: bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
            [
                "is not a readable pickle",
                "copy it again",
            ],
        ),
    ],
    ids=["truncated", "empty", "random-bytes"],
)
def test_truncated_or_corrupt_pickle_is_refused_naming_the_file(
    tmp_path: Path, damage: Callable[[bytes], bytes], needles: list[str]
) -> None:
    data = _data_dir(tmp_path)
    path = data / "IEMOCAP_features.pkl"
    path.write_bytes(damage(path.read_bytes()))
    run = tmp_path / "run"
    _fails(_pretrain_on(data, run), 2, str(path), *needles)
    assert not run.exists()


@pytest.mark.parametrize(
    "features, roberta, needles",
    [
        (FEATURES[:8], ROBERTA, ["Expected the 9-tuple (videoIDs,", "got a 8-tuple"]),
        ({"videoIDs": FEATURES[0]}, ROBERTA, ["got a dict", "right file"]),
        (FEATURES, (*ROBERTA, {}), ["Expected the 10-tuple (speakers,", "got a 11-tuple"]),
        (
            (FEATURES[0], list(FEATURES[1].values()), *FEATURES[2:]),
            ROBERTA,
            ["'videoSpeakers' is a list, not a dict keyed by dialogue id"],
        ),
    ],
    ids=["8-tuple", "dict", "roberta-11-tuple", "list-instead-of-dict"],
)
def test_pickle_that_is_not_the_expected_tuple_layout_is_refused(
    tmp_path: Path, features: Any, roberta: Any, needles: list[str]
) -> None:
    run = tmp_path / "run"
    _fails(_pretrain_on(_data_dir(tmp_path, features, roberta), run), 2, *needles)
    assert not run.exists()


class _RunsShell:
    """Unpickling this would call os.system: what a doctored feature file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_a_disallowed_global_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = (*FEATURES[:8], [*FEATURES[8], _RunsShell(marker)])
    run = tmp_path / "run"
    _fails(
        _pretrain_on(_data_dir(tmp_path, evil), run),
        2,
        "Refused to load",
        ".system'",  # posix.system / nt.system
        "Nothing from the file was run",
    )
    assert not marker.exists()
    assert not run.exists()


# --------------------------------------------------------------------------------------
# Dialogues


def _rows(parts: tuple, index: int, did: str) -> list[np.ndarray]:
    return [np.array(row, dtype=np.float64) for row in parts[index][did]]


def _with_nan_audio() -> tuple[tuple, tuple]:
    rows = _rows(FEATURES, 4, DID)
    rows[1][2] = np.nan
    return _replace(FEATURES, 4, DID, rows), ROBERTA


def _with_inf_roberta() -> tuple[tuple, tuple]:
    rows = _rows(ROBERTA, 3, DID)
    rows[0][0] = np.inf
    return FEATURES, _replace(ROBERTA, 3, DID, rows)


def _with_float32_overflow_in_visual() -> tuple[tuple, tuple]:
    rows = _rows(FEATURES, 5, DID)
    rows[0][1] = 1e300  # finite in the file, infinite as float32
    return _replace(FEATURES, 5, DID, rows), ROBERTA


def _with_label(value: int) -> tuple[tuple, tuple]:
    labels = list(FEATURES[2][DID])
    labels[1] = value
    return _replace(FEATURES, 2, DID, labels), _replace(ROBERTA, 1, DID, labels)


CASES: dict[str, tuple[Callable[[], tuple[Any, Any]], list[str]]] = {
    "speakers-shorter": (
        lambda: (_replace(FEATURES, 1, DID, FEATURES[1][DID][:-1]), ROBERTA),
        [f"Dialogue '{DID}': {len(FEATURES[2][DID]) - 1} speakers but", "one speaker, one label"],
    ),
    "labels-shorter": (
        lambda: (
            _replace(FEATURES, 2, DID, FEATURES[2][DID][:-1]),
            _replace(ROBERTA, 1, DID, ROBERTA[1][DID][:-1]),
        ),
        [f"Dialogue '{DID}':", f"but {len(FEATURES[2][DID]) - 1} labels", "one feature row"],
    ),
    "audio-rows-fewer": (
        lambda: (_replace(FEATURES, 4, DID, FEATURES[4][DID][:-1]), ROBERTA),
        [f"Dialogue '{DID}': modality 'audio' has shape", "for its"],
    ),
    "roberta-layer-shorter": (
        lambda: (FEATURES, _replace(ROBERTA, 4, DID, ROBERTA[4][DID][:-1])),
        [f"Dialogue '{DID}': the four RoBERTa layers differ in shape", "complete copy"],
    ),
    "label-out-of-range": (
        lambda: _with_label(9),
        [f"Dialogue '{DID}': label 9 is outside the 6 classes", "dataset.label_names"],
    ),
    "negative-label": (
        lambda: _with_label(-1),
        [f"Dialogue '{DID}': label -1 is outside the 6 classes"],
    ),
    "nan-in-audio": (
        _with_nan_audio,
        [f"Dialogue '{DID}': modality 'audio' contains NaN or Inf", "clean the feature file"],
    ),
    "inf-in-roberta": (
        _with_inf_roberta,
        [f"Dialogue '{DID}': modality 'text' contains NaN or Inf", "clean the feature file"],
    ),
    "float32-overflow-in-visual": (
        _with_float32_overflow_in_visual,
        [f"Dialogue '{DID}': modality 'visual' contains NaN or Inf"],
    ),
    "empty-test-split": (
        lambda: ((*FEATURES[:8], []), (*ROBERTA[:8], [], [])),
        ["the test split is empty", "check the split's id list"],
    ),
    "empty-train-split": (
        lambda: ((*FEATURES[:7], [], FEATURES[8]), (*ROBERTA[:7], [], ROBERTA[8], [])),
        ["Cannot hold out validation dialogues from 0 training dialogue(s)", "at least 2"],
    ),
    "split-id-missing-from-features": (
        lambda: ((*FEATURES[:7], [*FEATURES[7], "ghost"], FEATURES[8]), ROBERTA),
        ["Dialogue 'ghost' of the", "is missing from 'videoLabels'", "complete copy"],
    ),
    "dialogue-missing-from-roberta": (
        lambda: (
            FEATURES,
            (ROBERTA[0], {k: v for k, v in ROBERTA[1].items() if k != DID}, *ROBERTA[2:]),
        ),
        [
            f"Dialogue '{DID}' of the",
            "is missing from 'labels' in iemocap_features_roberta.pkl",
            "complete copy",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_inconsistent_dialogue_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    make, needles = CASES[case]
    features, roberta = make()
    run = tmp_path / "run"
    res = _fails(_pretrain_on(_data_dir(tmp_path, features, roberta), run), 2, *needles)
    assert "Warning" not in res.stderr  # one message, no numpy noise before it
    assert not run.exists()


# --------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    "text, needles",
    [
        ("pretrain: {epoch: 3}", ["Unknown config key 'pretrain.epoch'", "Did you mean 'epochs'?"]),
        ("pretrian: {epochs: 3}", ["Unknown config key 'pretrian'", "Did you mean 'pretrain'?"]),
        ("distill: {temprature: 2}", ["Did you mean 'temperature'?"]),
        ("pretrain: {epochs: three}", ["'pretrain.epochs' must be int, got 'three'"]),
        ("pretrain: {epochs: true}", ["'pretrain.epochs' must be int, got True"]),
        ("distill: {alpha: high}", ["'distill.alpha' must be float, got 'high'"]),
        ("distill: {curriculum: backwards}", ["must be one of 'reverse', 'forward', 'none'"]),
        ("pretrain: 3", ["Config section 'pretrain' must be a mapping"]),
        ("distill: {gamma: -0.5}", ["'distill.gamma' must be >= 0 (a weight), got -0.5"]),
        ("distill: {alpha: -1}", ["'distill.alpha' must be >= 0 (a weight), got -1.0"]),
        ("distill: {temperature: 0}", ["'distill.temperature' must be > 0, got 0.0"]),
        ("distill: {temperature: -2}", ["'distill.temperature' must be > 0, got -2.0"]),
        ("distill: {temperature: .inf}", ["'distill.temperature' must be a finite number"]),
        ("pretrain: {lr: .nan}", ["'pretrain.lr' must be a finite number"]),
        (
            "distill: {stage_fractions: {difficult: .inf, general: 0, simple: 0}}",
            ["'distill.stage_fractions' must be a finite number"],
        ),
        ("pretrain: {epochs: 0}", ["'pretrain.epochs' must be >= 1, got 0"]),
        ("distill: {epochs: 0}", ["'distill.epochs' must be >= 1, got 0"]),
        ("partition: {folds: 1}", ["'partition.folds' must be >= 2, got 1"]),
        ("pretrain: {epochs: 3", ["is not valid YAML"]),
        ("- 1\n- 2", ["must contain a mapping at the top level"]),
    ],
)
def test_bad_config_is_refused_naming_the_key(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text + "\n")
    run = tmp_path / "run"
    _fails(["pretrain", "--config", str(config), "--run-dir", str(run)], 2, *needles)
    assert not run.exists()


def test_zero_epochs_on_the_command_line_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fails(
        ["distill", "--epochs", "0", "--run-dir", str(run)],
        2,
        "'distill.epochs' must be >= 1, got 0",
    )
    assert not run.exists()


def test_missing_or_binary_config_file_is_refused(tmp_path: Path) -> None:
    _fails(["pretrain", "--config", str(tmp_path / "nope.yaml")], 2, "Config file not found")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    _fails(["pretrain", "--config", str(binary)], 2, "is not valid YAML")


# --------------------------------------------------------------------------------------
# Checkpoints and partition files


def _evaluate(run: Path, *extra: str) -> list[str]:
    return ["evaluate", "--run-dir", str(run), "--device", "cpu", *extra]


def _corrupt_with_random_bytes(path: Path) -> None:
    path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _plain_state_dict(path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)


def _malformed_spec(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_spec"] = {"input_dims": "text"}
    torch.save(ckpt, path)


@pytest.mark.parametrize(
    "damage, needles",
    [
        (_corrupt_with_random_bytes, ["is corrupt or not a PyTorch file", "run `mrd pretrain`"]),
        (_truncate, ["is corrupt or not a PyTorch file", "run `mrd pretrain`"]),
        (_plain_state_dict, ["is not an mrd checkpoint", "written by `mrd pretrain`"]),
        (_malformed_spec, ["has a malformed model spec", "run `mrd pretrain` again"]),
    ],
    ids=["random-bytes", "truncated", "not-mrd", "malformed-spec"],
)
def test_damaged_checkpoint_is_refused_and_no_metrics_are_written(
    run_copy: Path, damage: Callable[[Path], None], needles: list[str]
) -> None:
    path = run_copy / "pretrain" / "multi.pt"
    damage(path)
    before = _snapshot(run_copy)
    _fails(_evaluate(run_copy), 2, str(path), *needles)
    assert _snapshot(run_copy) == before


def test_missing_checkpoint_names_the_command_that_makes_it(
    run_copy: Path, tiny_config: Path
) -> None:
    path = run_copy / "pretrain" / "multi.pt"
    path.unlink()
    before = _snapshot(run_copy)
    _fails(
        ["partition", "--config", str(tiny_config), "--run-dir", str(run_copy), "--device", "cpu"],
        2,
        f"Checkpoint not found: {path}",
        "Run `mrd pretrain --dataset synthetic` first",
    )
    _fails(_evaluate(run_copy, "--checkpoint", str(path)), 2, f"Checkpoint not found: {path}")
    assert _snapshot(run_copy) == before


def test_checkpoint_of_another_dataset_is_refused(partitioned_run: Path, tmp_path: Path) -> None:
    other_labels = tmp_path / "labels.yaml"
    other_labels.write_text(yaml.safe_dump({"dataset": {"label_names": list("abcdef")}}))
    before = _snapshot(partitioned_run)
    _fails(
        _evaluate(partitioned_run, "--config", str(other_labels)),
        2,
        f"was trained with labels {IEMOCAP_LABELS}",
        "Use a checkpoint of this dataset",
    )
    other_data = tmp_path / "data_seed.yaml"
    other_data.write_text(yaml.safe_dump({"dataset": {"data_seed": 1}}))
    _fails(
        _evaluate(partitioned_run, "--config", str(other_data)),
        2,
        "was made from other data (fingerprint",
        "Rerun `mrd pretrain` on this data",
    )
    assert _snapshot(partitioned_run) == before


def test_checkpoint_of_other_dimensions_is_refused(partitioned_run: Path, tmp_path: Path) -> None:
    narrow_audio = {did: [row[:50] for row in rows] for did, rows in FEATURES[4].items()}
    data = tmp_path / "data"
    write_iemocap(data, (*FEATURES[:4], narrow_audio, *FEATURES[5:]), ROBERTA)
    before = _snapshot(partitioned_run)
    _fails(
        _evaluate(partitioned_run, "--dataset", "iemocap", "--data-dir", str(data)),
        2,
        "expects audio features of dimension 96, the data has 50",
        "made from other feature files",
    )
    assert _snapshot(partitioned_run) == before


def test_partition_made_from_other_checkpoints_is_refused(
    run_copy: Path, tiny_config: Path
) -> None:
    # Pretraining the text model anew (another seed) makes the partition stale.
    res = runner.invoke(
        app,
        [
            "pretrain",
            "--config",
            str(tiny_config),
            "--run-dir",
            str(run_copy),
            "--modality",
            "text",
            "--seed",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    before = _snapshot(run_copy)
    _fails(
        ["distill", "--config", str(tiny_config), "--run-dir", str(run_copy), "--device", "cpu"],
        2,
        "partition.json was made from other checkpoints",
        "Rerun `mrd partition --dataset synthetic`",
    )
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    "content, needles",
    [
        ("{not json", ["partition.json is corrupt", "Run `mrd partition --dataset synthetic`"]),
        ('{"format": "mrd-partition/1"}', ["is incomplete or was edited by hand"]),
        ("[1, 2]", ["is not an mrd partition file", "Run `mrd partition`"]),
    ],
    ids=["not-json", "no-provenance", "not-a-partition"],
)
def test_damaged_partition_is_refused(
    run_copy: Path, tiny_config: Path, content: str, needles: list[str]
) -> None:
    (run_copy / "partition.json").write_text(content)
    before = _snapshot(run_copy)
    _fails(
        ["distill", "--config", str(tiny_config), "--run-dir", str(run_copy), "--device", "cpu"],
        2,
        *needles,
    )
    assert _snapshot(run_copy) == before


def test_partition_with_an_unknown_group_is_refused(run_copy: Path, tiny_config: Path) -> None:
    path = run_copy / "partition.json"
    path.write_text(path.read_text().replace('"simple"', '"easy"', 3))
    _fails(
        ["distill", "--config", str(tiny_config), "--run-dir", str(run_copy), "--device", "cpu"],
        2,
        "is incomplete or was edited by hand",
    )


# --------------------------------------------------------------------------------------
# Devices, I/O failures, --debug, --json


@pytest.mark.parametrize(
    "device, needles",
    [
        ("cuda:0", ["PyTorch sees no CUDA device", "Use --device cpu"]),
        ("tpu", ["Unknown device 'tpu'", "Use auto, cpu, cuda or cuda:N"]),
    ],
)
def test_unavailable_device_is_refused(tmp_path: Path, device: str, needles: list[str]) -> None:
    # `--device cuda` itself: tests/test_cli.py::test_cuda_without_cuda_is_a_clear_error.
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA present")
    run = tmp_path / "run"
    _fails(["pretrain", "--device", device, "--run-dir", str(run)], 2, *needles)
    assert not run.exists()


def test_disk_full_while_writing_keeps_the_previous_file(
    partitioned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Path(shutil.copytree(partitioned_run, tmp_path / "run"))
    metrics = run / "metrics" / "test.json"
    metrics.parent.mkdir()
    metrics.write_text('{"previous": true}\n')

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mrd_cli.io.os.fsync", no_space)
    _fails(
        _evaluate(run),
        1,
        f"could not read or write {metrics}: No space left on device",
        "files written before were kept",
    )
    assert metrics.read_text() == '{"previous": true}\n'
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["test.json"]


def test_debug_flag_shows_the_exception_instead_of_the_message() -> None:
    res = runner.invoke(app, ["pretrain", "--dataset", "iemocapp", "--debug"])
    assert res.exit_code != 0
    assert isinstance(res.exception, MRDError)
    assert "Did you mean 'iemocap'?" in str(res.exception)


def test_error_with_json_leaves_stdout_empty(tmp_path: Path) -> None:
    res = _fails(
        _evaluate(tmp_path / "empty-run", "--json"),
        2,
        "No checkpoints in",
        "Run `mrd pretrain --dataset synthetic` first",
    )
    assert res.stdout == ""


# --------------------------------------------------------------------------------------
# Property: whatever a feature file on disk holds, the readers raise only MRDError.
# (The parsers alone and safe_load alone have their own properties in test_formats.py and
# test_safe_pickle.py; this one runs the whole chain: file -> safe_load -> parse -> validate.)

_IDS = [*FEATURES[7][:6], *FEATURES[8][:2]]
_SMALL_FEATURES = (
    *({did: part[did] for did in _IDS} for part in FEATURES[:7]),
    FEATURES[7][:6],
    FEATURES[8][:2],
)
_SMALL_ROBERTA = (
    *({did: part[did] for did in _IDS} for part in ROBERTA[:7]),
    FEATURES[7][:6],
    FEATURES[8][:2],
    [],
)
_VALID_BYTES = pickle.dumps(_SMALL_FEATURES, protocol=2)

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.builds(lambda n, d: np.full((n, d), 0.5), st.integers(0, 3), st.integers(0, 3)),
)
_structure = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=2), inner, max_size=3),
    ),
    max_leaves=10,
)


def _pickled_tuple(fields: list[Any]) -> bytes:
    return pickle.dumps(tuple(fields), protocol=2)


def _mutated(edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(_VALID_BYTES)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        st.lists(_structure, min_size=0, max_size=10).map(_pickled_tuple),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6).map(
            _mutated
        ),
        st.binary(max_size=300),
    )
)
def test_feature_file_on_disk_raises_only_mrd_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_iemocap(data, _SMALL_FEATURES, _SMALL_ROBERTA)
        (data / "IEMOCAP_features.pkl").write_bytes(content)
        cfg = DatasetConfig(name="iemocap", layout="iemocap", label_names=list(IEMOCAP_LABELS))
        try:
            load_corpus(cfg, data_dir=data)
        except MRDError:
            pass


def test_corrupt_resume_state_is_refused_with_advice(tmp_path: Path) -> None:
    run = tmp_path / "run"
    state = run / "pretrain" / ".multi.state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a torch file at all")
    _fails(
        ["pretrain", "--run-dir", str(run), "--modality", "multi", "--resume", "--device", "cpu"],
        2,
        "is unreadable",
        "run without --resume",
    )
