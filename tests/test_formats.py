"""Specification of the community feature-file readers and writers."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrd_cli.config import DatasetConfig, load_config
from mrd_cli.data.formats import (
    IEMOCAP_LABELS,
    MELD_LABELS,
    average_roberta_layers,
    load_corpus,
    parse_iemocap,
    parse_meld,
    write_iemocap,
    write_meld,
)
from mrd_cli.errors import MRDError

# --------------------------------------------------------------------------------------
# Hand-made community tuples (independent of the synthetic generator)


def iemocap_tuples(n_train: int = 20, n_test: int = 5, seed: int = 0) -> tuple[tuple, tuple]:
    """IEMOCAP 9-tuple and RoBERTa 10-tuple shaped like the real files: str ids, 'M'/'F'
    speakers, int labels and lists of 1-D numpy arrays."""
    rng = np.random.default_rng(seed)
    ids = [f"Ses0{i % 5 + 1}F_impro{i:02d}" for i in range(n_train + n_test)]
    d: list[dict[str, Any]] = [{} for _ in range(13)]
    for did in ids:
        n = int(rng.integers(2, 7))
        d[0][did] = [f"{did}_{j}" for j in range(n)]
        d[1][did] = [["M", "F"][int(b)] for b in rng.integers(0, 2, n)]
        d[2][did] = [int(x) for x in rng.integers(0, 6, n)]
        d[3][did] = [rng.standard_normal(5).astype(np.float32) for _ in range(n)]
        d[4][did] = [rng.standard_normal(7) for _ in range(n)]  # float64, like some files
        d[5][did] = [rng.standard_normal(3).astype(np.float32) for _ in range(n)]
        d[6][did] = [f"sentence {j}" for j in range(n)]
        for layer in range(4):
            d[7 + layer][did] = [rng.standard_normal(8).astype(np.float32) for _ in range(n)]
    train, test = ids[:n_train], ids[n_train:]
    features = (d[0], d[1], d[2], d[3], d[4], d[5], d[6], train, test)
    roberta = (d[1], d[2], d[7], d[8], d[9], d[10], d[6], train, test, [])
    return features, roberta


def meld_tuples(n_train: int = 12, n_dev: int = 4, n_test: int = 5) -> tuple[tuple, tuple]:
    """MELD 10-tuple and 11-tuple: int ids, one-hot speakers of length 9, trainVid = train+dev."""
    rng = np.random.default_rng(1)
    ids = list(range(n_train + n_dev + n_test))
    d: list[dict[int, Any]] = [{} for _ in range(13)]
    for did in ids:
        n = int(rng.integers(1, 6))
        d[0][did] = list(range(n))
        d[1][did] = [np.eye(9, dtype=int)[int(s)].tolist() for s in rng.integers(0, 3, n)]
        d[2][did] = [int(x) for x in rng.integers(0, 7, n)]
        d[3][did] = rng.standard_normal((n, 6))  # a 2-D array also occurs
        d[4][did] = [list(rng.standard_normal(4)) for _ in range(n)]  # lists of lists
        d[5][did] = [rng.standard_normal(3).astype(np.float32) for _ in range(n)]
        d[6][did] = ["hi"] * n
        d[7][did] = [int(x) % 3 for x in d[2][did]]
        for layer in range(4):
            d[8 + layer][did] = [rng.standard_normal(8).astype(np.float32) for _ in range(n)]
    train, dev, test = ids[:n_train], ids[n_train : n_train + n_dev], ids[n_train + n_dev :]
    features = (d[0], d[1], d[2], d[3], d[4], d[5], d[6], train + dev, test, None)
    roberta = (d[1], d[2], d[7], d[8], d[9], d[10], d[11], d[6], train, test, dev)
    return features, roberta


def iemocap_cfg(**kw: Any) -> DatasetConfig:
    base = DatasetConfig(name="iemocap", layout="iemocap", label_names=list(IEMOCAP_LABELS))
    return dataclasses.replace(base, **kw)


def meld_cfg(**kw: Any) -> DatasetConfig:
    base = DatasetConfig(name="meld", layout="meld", label_names=list(MELD_LABELS))
    return dataclasses.replace(base, **kw)


def dump(path: Path, obj: Any, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


# --------------------------------------------------------------------------------------
# Round trips


def test_iemocap_round_trip_from_plain_pickle_files(tmp_path: Path) -> None:
    features, roberta = iemocap_tuples()
    dump(tmp_path / "IEMOCAP_features.pkl", features)
    dump(tmp_path / "iemocap_features_roberta.pkl", roberta)

    corpus = load_corpus(iemocap_cfg(), data_dir=tmp_path)

    train_vid, test_vid = features[7], features[8]
    assert corpus.splits["test"] == test_vid
    assert sorted(corpus.splits["train"] + corpus.splits["val"]) == sorted(train_vid)
    assert len(corpus.splits["val"]) == 2  # 10% of 20 dialogues
    assert corpus.val_source == "seeded 10% of training dialogues (data_seed=0)"
    assert corpus.num_speakers == 2 and corpus.extra["speakers"] == "F, M"
    assert corpus.label_names == IEMOCAP_LABELS
    for did in train_vid + test_vid:
        dlg = corpus.dialogues[did]
        assert dlg.labels.tolist() == features[2][did]
        assert dlg.speakers.tolist() == [{"F": 0, "M": 1}[s] for s in features[1][did]]
        audio = dlg.features["audio"]
        assert audio.dtype == np.float32
        np.testing.assert_allclose(audio, np.asarray(features[4][did]), rtol=1e-6)
        np.testing.assert_array_equal(dlg.features["visual"], np.asarray(features[5][did]))
        expected_text = average_roberta_layers([np.asarray(roberta[i][did]) for i in range(2, 6)])
        np.testing.assert_array_equal(dlg.features["text"], expected_text)
    assert corpus.input_dims == {"text": 8, "audio": 7, "visual": 3}


def test_write_iemocap_files_load_back_to_the_same_corpus(tmp_path: Path) -> None:
    features, roberta = iemocap_tuples()
    paths = write_iemocap(tmp_path, features, roberta)
    assert [p.name for p in paths] == ["IEMOCAP_features.pkl", "iemocap_features_roberta.pkl"]
    from_files = load_corpus(iemocap_cfg(), data_dir=tmp_path)
    in_memory = parse_iemocap(features, roberta, iemocap_cfg())
    assert from_files.fingerprint() == in_memory.fingerprint()


def test_legacy_text_uses_videoText_and_needs_no_roberta_file(tmp_path: Path) -> None:
    features, _ = iemocap_tuples()
    dump(tmp_path / "IEMOCAP_features.pkl", features)
    corpus = load_corpus(iemocap_cfg(text_features="legacy"), data_dir=tmp_path)
    did = features[7][0]
    np.testing.assert_array_equal(corpus.dialogues[did].features["text"], features[3][did])
    assert corpus.input_dims["text"] == 5


def test_meld_round_trip_val_is_validIds_and_train_is_trainVid_minus_dev(tmp_path: Path) -> None:
    features, roberta = meld_tuples()
    write_meld(tmp_path, features, roberta)
    corpus = load_corpus(meld_cfg(), data_dir=tmp_path)

    dev = [str(i) for i in roberta[10]]
    assert corpus.splits["val"] == dev
    assert corpus.splits["train"] == [str(i) for i in features[7] if str(i) not in dev]
    assert corpus.splits["test"] == [str(i) for i in features[8]]
    assert corpus.val_source == "official dev split (validIds)"
    assert corpus.num_speakers == 9
    dlg = corpus.dialogues["3"]  # int ids become str
    assert dlg.speakers.tolist() == [int(np.argmax(v)) for v in features[1][3]]
    np.testing.assert_allclose(dlg.features["audio"], np.asarray(features[4][3]), rtol=1e-6)
    np.testing.assert_allclose(dlg.features["text"].mean(axis=1), 0.0, atol=1e-5)


def test_meld_legacy_without_roberta_file_holds_out_seeded_training_dialogues(
    tmp_path: Path,
) -> None:
    features, _ = meld_tuples()
    dump(tmp_path / "MELD_features_raw1.pkl", features)
    corpus = load_corpus(meld_cfg(text_features="legacy"), data_dir=tmp_path)
    assert corpus.val_source.startswith("seeded 10% of training dialogues")
    assert "meld_features_roberta.pkl" in corpus.val_source
    assert set(corpus.splits["train"]) | set(corpus.splits["val"]) == {str(i) for i in features[7]}


def test_modalities_restrict_the_features_kept() -> None:
    features, roberta = iemocap_tuples()
    corpus = parse_iemocap(features, roberta, iemocap_cfg(modalities=["text", "visual"]))
    assert corpus.modalities == ["text", "visual"]


# --------------------------------------------------------------------------------------
# Text input


def _hand_layer_norm(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    var = sum((x - mean) ** 2 for x in row) / len(row)
    return [(x - mean) / math.sqrt(var + 1e-5) for x in row]


def test_average_roberta_layers_matches_hand_computation() -> None:
    layers = [
        [[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]],
        [[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]],
        [[3.0, 2.0, 1.0], [-2.0, 0.0, 2.0]],
        [[0.0, 0.0, 6.0], [5.0, 4.0, 0.0]],
    ]
    expected = [
        [sum(col) / 4 for col in zip(*(_hand_layer_norm(layer[i]) for layer in layers))]
        for i in range(2)
    ]
    got = average_roberta_layers([np.array(layer) for layer in layers])
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # Last feature of the first row by hand: the (1,2,3) and (3,2,1) layers cancel, leaving
    # (10 / sqrt(200/3 + eps) + 4 / sqrt(8 + eps)) / 4.
    assert got[0, 2] == pytest.approx(
        (10 / math.sqrt(200 / 3 + 1e-5) + 4 / math.sqrt(8 + 1e-5)) / 4, rel=1e-6
    )


def test_average_roberta_layers_equals_torch_layer_norm_mean() -> None:
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((4, 16)) * scale for scale in (0.1, 1.0, 3.0, 50.0)]
    ref = torch.stack(
        [torch.nn.functional.layer_norm(torch.tensor(x), (16,), eps=1e-5) for x in layers]
    ).mean(0)
    np.testing.assert_allclose(average_roberta_layers(layers), ref.numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Validation split


def test_iemocap_val_split_is_seeded_deterministic_and_disjoint_from_train() -> None:
    features, roberta = iemocap_tuples(n_train=40)
    first = parse_iemocap(features, roberta, iemocap_cfg(data_seed=0))
    again = parse_iemocap(features, roberta, iemocap_cfg(data_seed=0))
    other = parse_iemocap(features, roberta, iemocap_cfg(data_seed=1))
    assert first.splits["val"] == again.splits["val"]
    assert set(first.splits["val"]) != set(other.splits["val"])
    assert len(first.splits["val"]) == 4
    assert not set(first.splits["val"]) & set(first.splits["train"])
    assert set(first.splits["val"]) | set(first.splits["train"]) == set(features[7])
    # The order of trainVid in the file does not change which dialogues are held out.
    shuffled = (*features[:7], list(reversed(features[7])), features[8])
    assert set(parse_iemocap(shuffled, roberta, iemocap_cfg()).splits["val"]) == set(
        first.splits["val"]
    )


def test_tiny_training_split_still_gets_one_validation_dialogue() -> None:
    features, roberta = iemocap_tuples(n_train=3)
    corpus = parse_iemocap(features, roberta, iemocap_cfg(val_fraction=0.01))
    assert len(corpus.splits["val"]) == 1 and len(corpus.splits["train"]) == 2


# --------------------------------------------------------------------------------------
# File resolution


def test_missing_files_error_names_every_expected_path_and_data_dir(tmp_path: Path) -> None:
    with pytest.raises(MRDError) as info:
        load_corpus(iemocap_cfg(features_file="IEMOCAP_features.pkl"), data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "IEMOCAP_features.pkl") in msg
    assert str(tmp_path / "iemocap_features_roberta.pkl") in msg
    assert "--data-dir" in msg and "mrd data synth --preset iemocap" in msg


def test_default_data_dir_is_data_slash_name(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MRDError, match=r"data/meld/MELD_features_raw1\.pkl"):
        load_corpus(meld_cfg())
    features, roberta = meld_tuples()
    write_meld(tmp_path / "data" / "meld", features, roberta)
    assert load_corpus(meld_cfg()).num_utterances("val") > 0


def test_dataset_yaml_resolves_files_relative_to_its_directory(tmp_path: Path) -> None:
    features, roberta = meld_tuples()
    dump(tmp_path / "corpus" / "feats" / "my_features.pkl", features)
    dump(tmp_path / "corpus" / "feats" / "my_roberta.pkl", roberta)
    yaml_path = tmp_path / "corpus" / "mycorpus.yaml"
    yaml_path.write_text(
        "dataset:\n"
        "  name: mycorpus\n"
        "  layout: meld\n"
        "  features_file: feats/my_features.pkl\n"
        "  roberta_file: feats/my_roberta.pkl\n"
        f"  label_names: [{', '.join(MELD_LABELS)}]\n"
    )
    cfg, yaml_dir = load_config(str(yaml_path))
    corpus = load_corpus(cfg.dataset, yaml_dir=yaml_dir)
    assert corpus.name == "mycorpus" and corpus.val_source == "official dev split (validIds)"
    # --data-dir wins over the YAML's directory.
    corpus2 = load_corpus(cfg.dataset, data_dir=tmp_path / "corpus", yaml_dir=tmp_path)
    assert corpus2.fingerprint() == corpus.fingerprint()


# --------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (
            lambda f: f[:7],
            r"(?i)expected the 9-tuple \(videoIDs, .*\) of IEMOCAP_features\.pkl, got a 7-tuple",
        ),
        (lambda f: list(f), r"9-tuple .* got a list"),
        (lambda f: (f[0], ["M"], *f[2:]), r"'videoSpeakers' is a list, not a dict"),
        (lambda f: (*f[:7], "Ses01", f[8]), r"'trainVid' is a str, not a list of dialogue ids"),
        (lambda f: (*f[:7], [*f[7], "ghost"], f[8]), r"'ghost' of the train.* from 'videoLabels'"),
        (lambda f: (*f[:7], f[7], [*f[8], f[7][0]]), r"both the train.* and the test split"),
    ],
)
def test_wrong_iemocap_layout_is_refused_naming_the_expected_layout(
    mangle: Any, expected: str
) -> None:
    features, roberta = iemocap_tuples()
    with pytest.raises(MRDError, match=expected):
        parse_iemocap(mangle(features), roberta, iemocap_cfg())


def test_roberta_tuple_of_the_wrong_dataset_is_refused() -> None:
    features, _ = meld_tuples()
    _, iemocap_roberta = iemocap_tuples()
    with pytest.raises(MRDError, match=r"11-tuple \(speakers, emotion_labels.*got a 10-tuple"):
        parse_meld(features, iemocap_roberta, meld_cfg())


def test_unconvertible_features_name_the_dialogue_and_modality() -> None:
    features, roberta = iemocap_tuples()
    did = features[7][3]
    features[4][did] = [np.zeros(7), np.zeros(6)] + features[4][did][2:]  # ragged rows
    with pytest.raises(MRDError, match=rf"Dialogue '{did}': the audio features"):
        parse_iemocap(features, roberta, iemocap_cfg())


def test_labels_that_disagree_between_the_two_files_are_refused() -> None:
    features, roberta = iemocap_tuples()
    did = features[8][0]
    labels = {**roberta[1], did: [(x + 1) % 6 for x in roberta[1][did]]}
    roberta = (roberta[0], labels, *roberta[2:])
    with pytest.raises(MRDError, match=rf"Dialogue '{did}'.*disagree.*different sources"):
        parse_iemocap(features, roberta, iemocap_cfg())


def test_labels_beyond_the_label_names_are_refused(tmp_path: Path) -> None:
    features, roberta = iemocap_tuples()
    write_iemocap(tmp_path, features, roberta)
    with pytest.raises(MRDError, match=r"label [45] is outside the 4 classes"):
        load_corpus(iemocap_cfg(label_names=["a", "b", "c", "d"]), data_dir=tmp_path)


def test_corrupt_file_on_disk_is_an_mrd_error(tmp_path: Path) -> None:
    features, roberta = iemocap_tuples()
    write_iemocap(tmp_path, features, roberta)
    path = tmp_path / "iemocap_features_roberta.pkl"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MRDError, match="iemocap_features_roberta.pkl"):
        load_corpus(iemocap_cfg(), data_dir=tmp_path)


# --------------------------------------------------------------------------------------
# Property: whatever structure arrives, the only exception is MRDError

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.builds(lambda n, d: np.ones((n, d)), st.integers(0, 3), st.integers(0, 3)),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.integers(0, 3), st.text(max_size=2)), inner, max_size=3),
    ),
    max_leaves=12,
)


@st.composite
def _mangled(draw: Any, layout: str) -> tuple[Any, Any]:
    """Near-valid tuples with random parts replaced, or entirely random structures."""
    features, roberta = iemocap_tuples(4, 2) if layout == "iemocap" else meld_tuples(3, 1, 2)
    if draw(st.booleans()):
        return draw(_value), draw(st.one_of(st.none(), _value))
    target = draw(st.sampled_from(["features", "roberta"]))
    parts = list(features if target == "features" else roberta)
    i = draw(st.integers(0, len(parts) - 1))
    if isinstance(parts[i], dict) and parts[i] and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(parts[i], key=str)))
        parts[i] = {**parts[i], key: draw(_value)}
    else:
        parts[i] = draw(_value)
    if target == "features":
        return tuple(parts), roberta
    return features, tuple(parts)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(["iemocap", "meld"]), data=st.data())
def test_parsers_raise_only_mrd_error_on_any_structure(layout: str, data: Any) -> None:
    features, roberta = data.draw(_mangled(layout))
    parse = parse_iemocap if layout == "iemocap" else parse_meld
    cfg = iemocap_cfg() if layout == "iemocap" else meld_cfg()
    try:
        parse(features, roberta, cfg).validate()
    except MRDError:
        pass
