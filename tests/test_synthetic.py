"""Specification of the synthetic corpus: sizes, determinism, and MRD's phenomena in the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrd_cli.cli.data_cmd import app as data_app
from mrd_cli.config import load_config
from mrd_cli.data.corpus import Corpus
from mrd_cli.data.formats import (
    IEMOCAP_LABELS,
    MELD_LABELS,
    load_corpus,
    parse_iemocap,
    parse_meld,
)
from mrd_cli.data.synthetic import (
    PRESETS,
    SyntheticKnobs,
    SyntheticTruth,
    generate,
    generate_with_truth,
    write_synthetic,
)
from mrd_cli.errors import MRDError


@pytest.fixture(scope="module")
def small() -> tuple[Corpus, SyntheticTruth]:
    cfg, _ = load_config("synthetic")
    _, features, roberta, truth = generate_with_truth("small", cfg.dataset.data_seed)
    return parse_iemocap(features, roberta, cfg.dataset), truth


def _stack(corpus: Corpus, split: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    dialogues = corpus.split(split)
    x = np.concatenate([d.features[modality] for d in dialogues])
    y = np.concatenate([d.labels for d in dialogues])
    return x, y


def _mask(corpus: Corpus, truth: SyntheticTruth, split: str, name: str) -> np.ndarray:
    return np.concatenate([getattr(truth, name)[d] for d in corpus.splits[split]])


def _nearest_mean_accuracy(
    corpus: Corpus, truth: SyntheticTruth, modality: str, name: str
) -> tuple[float, float]:
    """Accuracy of a nearest-class-mean rule (fit on plain training utterances) on the test
    utterances of phenomenon ``name`` and on plain test utterances."""

    def plain(split: str) -> np.ndarray:
        kinds = ("text_misleading", "av_misleading", "context_dependent")
        return ~np.any([_mask(corpus, truth, split, k) for k in kinds], axis=0)

    x, y = _stack(corpus, "train", modality)
    keep = plain("train")
    means = np.stack([x[keep & (y == c)].mean(0) for c in range(corpus.num_classes)])
    xt, yt = _stack(corpus, "test", modality)
    pred = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    right = pred == yt
    return float(right[_mask(corpus, truth, "test", name)].mean()), float(
        right[plain("test")].mean()
    )


def test_small_preset_loads_through_load_corpus_as_the_synthetic_dataset() -> None:
    cfg, yaml_dir = load_config("synthetic")
    corpus = load_corpus(cfg.dataset, yaml_dir=yaml_dir)
    assert corpus.label_names == IEMOCAP_LABELS
    assert corpus.input_dims == {"text": 64, "audio": 96, "visual": 48}
    assert len(corpus.splits["train"]) + len(corpus.splits["val"]) == 80
    assert len(corpus.splits["test"]) == 24
    assert corpus.num_utterances("test") == 456
    assert corpus.num_speakers == 2
    labels = np.concatenate([d.labels for d in corpus.dialogues.values()])
    assert set(labels.tolist()) == set(range(6))
    lengths = [len(d) for d in corpus.dialogues.values()]
    assert min(lengths) >= 8 and max(lengths) <= 30


def test_generation_is_deterministic_in_the_seed() -> None:
    cfg, _ = load_config("synthetic")
    a = parse_iemocap(*generate("small", 3)[1:], cfg.dataset).fingerprint()
    b = parse_iemocap(*generate("small", 3)[1:], cfg.dataset).fingerprint()
    c = parse_iemocap(*generate("small", 4)[1:], cfg.dataset).fingerprint()
    assert a == b != c


def test_all_phenomena_are_present_in_their_configured_shares(small) -> None:
    corpus, truth = small
    n = sum(len(d) for d in corpus.dialogues.values())
    knobs = SyntheticKnobs()
    for name, share in (
        ("text_misleading", knobs.text_misleading),
        ("av_misleading", knobs.av_misleading),
        ("context_dependent", knobs.context_dependent),
    ):
        assert truth.count(name) > 0
        assert abs(truth.count(name) / n - share) < 0.03, name


def test_text_misleading_utterances_fool_text_but_not_audio(small) -> None:
    corpus, truth = small
    text_on_them, text_plain = _nearest_mean_accuracy(corpus, truth, "text", "text_misleading")
    audio_on_them, audio_plain = _nearest_mean_accuracy(corpus, truth, "audio", "text_misleading")
    assert text_on_them < text_plain - 0.4
    assert audio_on_them > audio_plain - 0.15


def test_av_misleading_utterances_fool_audio_and_visual_but_not_text(small) -> None:
    corpus, truth = small
    for modality in ("audio", "visual"):
        on_them, plain = _nearest_mean_accuracy(corpus, truth, modality, "av_misleading")
        assert on_them < plain - 0.25, modality
    text_on_them, text_plain = _nearest_mean_accuracy(corpus, truth, "text", "av_misleading")
    assert text_on_them > text_plain - 0.15


def test_context_dependent_labels_are_the_mood_and_locally_ambiguous(small) -> None:
    corpus, truth = small
    for did, mask in truth.context_dependent.items():
        labels = corpus.dialogues[did].labels
        assert np.array_equal(labels[mask], truth.mood[did][mask])
    local, plain = _nearest_mean_accuracy(corpus, truth, "text", "context_dependent")
    assert local < plain - 0.2
    # The mood persists: same-speaker neighbours share it far more often than chance.
    same = []
    for did in corpus.splits["train"]:
        d = corpus.dialogues[did]
        mood = truth.mood[did]
        for s in np.unique(d.speakers):
            m = mood[d.speakers == s]
            same.extend((m[1:] == m[:-1]).tolist())
    assert np.mean(same) > 0.8


def test_classes_are_imbalanced_like_iemocap(small) -> None:
    corpus, _ = small
    labels = np.concatenate([d.labels for d in corpus.dialogues.values()])
    share = np.bincount(labels, minlength=6) / len(labels)
    np.testing.assert_allclose(share, PRESETS["small"].priors, atol=0.04)
    assert share.argmax() == IEMOCAP_LABELS.index("fru")
    assert share.argmin() == IEMOCAP_LABELS.index("hap")


def test_layer_normalised_average_is_cleaner_than_one_layer_and_legacy_text() -> None:
    cfg, _ = load_config("synthetic")
    _, features, roberta, truth = generate_with_truth("small", 0)

    def accuracy(corpus: Corpus) -> float:
        return _nearest_mean_accuracy(corpus, truth, "text", "text_misleading")[1]

    averaged = parse_iemocap(features, roberta, cfg.dataset)
    one_layer = (*roberta[:2], *([roberta[2]] * 4), *roberta[6:])  # layer 1 four times
    single = parse_iemocap(features, one_layer, cfg.dataset)
    legacy = parse_iemocap(features, None, dataclasses.replace(cfg.dataset, text_features="legacy"))
    assert accuracy(averaged) > accuracy(single) + 0.03
    assert accuracy(averaged) > accuracy(legacy) + 0.03
    # The layers really differ in scale, so normalising before averaging matters.
    did = next(iter(roberta[2]))
    scales = [np.std(roberta[i][did]) for i in range(2, 6)]
    assert max(scales) / min(scales) > 4


@pytest.fixture(scope="module")
def full_size() -> dict[str, tuple]:
    return {preset: generate(preset, 0) for preset in ("iemocap", "meld")}


def _count(tuple_dict: dict, ids: list) -> int:
    return sum(len(tuple_dict[i]) for i in ids)


@pytest.mark.slow
def test_iemocap_preset_has_the_real_sizes(full_size) -> None:
    layout, f, r = full_size["iemocap"]
    assert layout == "iemocap" and len(f) == 9 and len(r) == 10
    labels, train, test = f[2], f[7], f[8]
    assert (len(train), len(test)) == (120, 31)
    assert (_count(labels, train), _count(labels, test)) == (5810, 1623)
    did = train[0]
    assert [len(f[i][did][0]) for i in (3, 4, 5)] == [100, 1582, 342]
    assert [len(r[i][did][0]) for i in range(2, 6)] == [1024] * 4
    assert {s for v in f[1].values() for s in v} == {"M", "F"}
    assert {x for v in labels.values() for x in v} == set(range(6))
    assert r[7] == train and r[8] == test


@pytest.mark.slow
def test_meld_preset_has_the_real_sizes_and_dev_split(full_size) -> None:
    layout, f, r = full_size["meld"]
    assert layout == "meld" and len(f) == 10 and len(r) == 11
    labels, train_vid, test = f[2], f[7], f[8]
    dev = r[10]
    assert (len(train_vid), len(dev), len(test)) == (1038 + 114, 114, 280)
    assert set(dev) <= set(train_vid) and all(isinstance(i, int) for i in train_vid)
    train = [i for i in train_vid if i not in set(dev)]
    assert (_count(labels, train), _count(labels, dev), _count(labels, test)) == (9989, 1109, 2610)
    did = test[0]
    assert [len(f[i][did][0]) for i in (3, 4, 5)] == [600, 300, 342]
    assert [len(r[i][did][0]) for i in range(3, 7)] == [1024] * 4
    assert all(len(v) == 9 and sum(v) == 1 for sp in f[1].values() for v in sp)
    assert {x for v in labels.values() for x in v} == set(range(7))


@pytest.mark.slow
def test_meld_preset_parses_with_the_official_dev_split(full_size) -> None:
    _, f, r = full_size["meld"]
    cfg, _ = load_config("meld")
    corpus = parse_meld(f, r, cfg.dataset)
    assert corpus.label_names == MELD_LABELS
    assert corpus.val_source == "official dev split (validIds)"
    sizes = {s: corpus.num_utterances(s) for s in ("train", "val", "test")}
    assert sizes == {"train": 9989, "val": 1109, "test": 2610}
    assert corpus.num_speakers == 9


def test_written_files_load_as_the_iemocap_dataset(tmp_path: Path) -> None:
    paths = write_synthetic("small", tmp_path, seed=0)
    assert {p.name for p in paths} == {
        "IEMOCAP_features.pkl",
        "iemocap_features_roberta.pkl",
        "SYNTHETIC_DATA.txt",
    }
    cfg, _ = load_config("iemocap")
    from_files = load_corpus(cfg.dataset, data_dir=tmp_path)
    synthetic_cfg, _ = load_config("synthetic")
    in_memory = load_corpus(synthetic_cfg.dataset)
    assert from_files.fingerprint() == in_memory.fingerprint()


def test_knob_shares_over_one_and_unknown_presets_are_refused() -> None:
    with pytest.raises(MRDError, match="add up to more than 1"):
        generate("small", 0, SyntheticKnobs(text_misleading=0.6, av_misleading=0.5))
    with pytest.raises(MRDError, match="Unknown synthetic preset 'tiny'"):
        generate("tiny", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SyntheticKnobs().text_noise = 0.0  # type: ignore[misc]


def test_cli_synth_then_inspect(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "syn"
    result = runner.invoke(data_app, ["synth", "--preset", "small", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "IEMOCAP_features.pkl" in result.output and "--dataset iemocap" in result.output
    # A second run refuses to overwrite what may be the real corpus.
    again = runner.invoke(data_app, ["synth", "--preset", "small", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    result = runner.invoke(data_app, ["inspect", "--dataset", "iemocap", "--data-dir", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("fru", "seeded 10% of training dialogues", "96"):
        assert text in result.output
    missing = runner.invoke(data_app, ["inspect", "--dataset", "meld", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "MELD_features_raw1.pkl" in missing.output
