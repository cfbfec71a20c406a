"""Read and write the community feature files (IEMOCAP and MELD).

``parse_iemocap`` / ``parse_meld`` turn the unpickled tuples into a ``Corpus``, checking the
layout as they go; ``load_corpus`` finds the files for a ``DatasetConfig``, reads them with
the restricted unpickler and dispatches on ``cfg.layout`` (the synthetic corpus is generated
in memory and goes through the same parsers). ``write_iemocap`` / ``write_meld`` write tuples
back under the community file names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.config import DatasetConfig
from mrd_cli.data.corpus import Corpus, Dialogue
from mrd_cli.data.fields import (
    ARRAY_BUDGET,
    feature_matrix,
    field_entry,
    label_indices,
    speaker_codes,
    speaker_indices,
)
from mrd_cli.data.layouts import (
    DEFAULT_LABELS,
    FILE_NAMES,
    IEMOCAP_FEATURES,
    IEMOCAP_LABELS,
    IEMOCAP_ROBERTA,
    MELD_FEATURES,
    MELD_LABELS,
    MELD_ROBERTA,
    ROBERTA_LAYERS,
    TupleLayout,
    unpack,
    write_iemocap,
    write_meld,
)
from mrd_cli.data.safe_pickle import expansion_budget, safe_load
from mrd_cli.data.synthetic import PRESETS, generate
from mrd_cli.errors import MRDError

__all__ = [
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "FILE_NAMES",
    "average_roberta_layers",
    "parse_iemocap",
    "parse_meld",
    "resolve_feature_files",
    "seeded_val_split",
    "load_corpus",
    "write_iemocap",
    "write_meld",
]

# latin1 reads Python 2 pickles (numpy buffers stored as str) and changes nothing for
# Python 3 pickles, so every file is read with it.
_ENCODING = "latin1"
_LN_EPS = 1e-5


# --------------------------------------------------------------------------------------
# Text input


def average_roberta_layers(layers: list[np.ndarray]) -> np.ndarray:
    """The paper's text input: layer-normalise each RoBERTa layer per utterance, then average.

    Each layer is ``[n, d]``; every row is normalised over its ``d`` features to mean 0 and
    variance 1 (biased variance, eps 1e-5, no affine parameters, like ``torch.nn.LayerNorm``
    without weights), then the layers are averaged. Normalising first keeps a layer with a
    larger scale from dominating the average.
    """
    if len(layers) == 0:
        raise MRDError("average_roberta_layers needs at least one layer.")
    arrays = [np.asarray(x, dtype=np.float64) for x in layers]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise MRDError(f"The RoBERTa layers differ in shape: {sorted(shapes)}.")
    stack = np.stack(arrays)
    # NaN / Inf in a layer propagate quietly; Corpus.validate refuses them, naming the dialogue.
    with np.errstate(invalid="ignore", over="ignore"):
        mean = stack.mean(axis=-1, keepdims=True)
        var = stack.var(axis=-1, keepdims=True)
        normed = (stack - mean) / np.sqrt(var + _LN_EPS)
        return normed.mean(axis=0).astype(np.float32)


# --------------------------------------------------------------------------------------
# Splits


def seeded_val_split(
    train_ids: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Hold out a seeded ``fraction`` of training dialogues (at least one) for validation.

    The choice depends only on the set of ids and the seed, not on their order in the file,
    so every training seed and every copy of the file sees the same split. Returns
    ``(train, val)``, each in the file's order.
    """
    if len(train_ids) < 2:
        raise MRDError(
            f"Cannot hold out validation dialogues from {len(train_ids)} training dialogue(s); "
            "the training split needs at least 2."
        )
    n_val = min(max(1, round(fraction * len(train_ids))), len(train_ids) - 1)
    rng = np.random.default_rng(seed)
    candidates = sorted(train_ids)
    chosen = {candidates[i] for i in rng.choice(len(candidates), size=n_val, replace=False)}
    return [d for d in train_ids if d not in chosen], [d for d in train_ids if d in chosen]


def _seeded_source(cfg: DatasetConfig) -> str:
    return f"seeded {cfg.val_fraction * 100:g}% of training dialogues (data_seed={cfg.data_seed})"


def _check_disjoint(splits: dict[str, list[str]], name: str) -> None:
    test = set(splits["test"])
    for split in ("train", "val"):
        shared = test.intersection(splits[split])
        if shared:
            raise MRDError(
                f"Dataset '{name}': {len(shared)} dialogue(s) are in both the {split} and the "
                f"test split (first: '{sorted(shared)[0]}'); the test set must be held out."
            )


# --------------------------------------------------------------------------------------
# Parsing


def _build_corpus(
    *,
    cfg: DatasetConfig,
    name: str,
    layout_name: str,
    feats: dict[str, Any],
    feat_layout: TupleLayout,
    rob: dict[str, Any] | None,
    rob_layout: TupleLayout | None,
    rob_label_field: str,
    splits: dict[str, list[str]],
    val_source: str,
) -> Corpus:
    """The part shared by both layouts: per dialogue, labels, speakers and features."""
    _check_disjoint(splits, name)
    use_roberta = cfg.text_features == "roberta"
    if use_roberta and rob is None:
        raise MRDError(
            f"Dataset '{name}' uses text_features: roberta but no RoBERTa file was given; set "
            "dataset.roberta_file or use text_features: legacy."
        )
    wanted = [m for m in ("text", "audio", "visual") if m in cfg.modalities]
    source_of = {"audio": "videoAudio", "visual": "videoVisual", "text": "videoText"}

    raw_speakers: dict[str, tuple[str, Any]] = {}
    pending: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for split, ids in splits.items():
        for did in ids:
            labels = label_indices(
                field_entry(feats, "videoLabels", did, split, feat_layout), did, "videoLabels"
            )
            if rob is not None and rob_layout is not None:
                other = label_indices(
                    field_entry(rob, rob_label_field, did, split, rob_layout), did, rob_label_field
                )
                if other.shape != labels.shape or (other != labels).any():
                    raise MRDError(
                        f"Dialogue '{did}': the labels in {feat_layout.file} and "
                        f"{rob_layout.file} disagree; the two files come from different "
                        "sources or versions. Use files released together."
                    )
            raw_speakers[did] = speaker_codes(
                field_entry(feats, "videoSpeakers", did, split, feat_layout), did, "videoSpeakers"
            )
            features: dict[str, np.ndarray] = {}
            for m in wanted:
                if m == "text" and use_roberta:
                    assert rob is not None and rob_layout is not None
                    layers = [
                        feature_matrix(field_entry(rob, f, did, split, rob_layout), did, "text", f)
                        for f in ROBERTA_LAYERS
                    ]
                    if len({x.shape for x in layers}) != 1:
                        raise MRDError(
                            f"Dialogue '{did}': the four RoBERTa layers differ in shape "
                            f"({', '.join(str(x.shape) for x in layers)}); the RoBERTa file is "
                            "damaged or mixes versions. Use a complete copy of it."
                        )
                    features[m] = average_roberta_layers(layers)
                else:
                    field = source_of[m]
                    features[m] = feature_matrix(
                        field_entry(feats, field, did, split, feat_layout), did, m, field
                    )
            pending[did] = (labels, features)

    speakers, num_speakers, speaker_desc = speaker_indices(raw_speakers)
    dialogues = {
        did: Dialogue(id=did, speakers=speakers[did], labels=labels, features=features)
        for did, (labels, features) in pending.items()
    }
    label_names = list(cfg.label_names) or list(DEFAULT_LABELS[layout_name])
    corpus = Corpus(
        name=name,
        label_names=label_names,
        dialogues=dialogues,
        splits=splits,
        num_speakers=num_speakers,
        val_source=val_source,
        extra={
            "layout": layout_name,
            "text_features": cfg.text_features,
            "speakers": speaker_desc,
        },
    )
    return corpus


def parse_iemocap(
    features_tuple: Any,
    roberta_tuple: Any | None,
    cfg: DatasetConfig,
    name: str | None = None,
) -> Corpus:
    """A Corpus from the unpickled IEMOCAP tuples (9-tuple features, 10-tuple RoBERTa).

    Train and test come from ``trainVid`` / ``testVid``; IEMOCAP has no validation split, so
    a seeded ``cfg.val_fraction`` of the training dialogues is held out (``cfg.data_seed``).
    ``roberta_tuple`` may be None when ``cfg.text_features`` is "legacy".
    """
    name = name or cfg.name
    feats = unpack(features_tuple, IEMOCAP_FEATURES)
    rob = unpack(roberta_tuple, IEMOCAP_ROBERTA) if roberta_tuple is not None else None
    train, val = seeded_val_split(feats["trainVid"], cfg.val_fraction, cfg.data_seed)
    return _build_corpus(
        cfg=cfg,
        name=name,
        layout_name="iemocap",
        feats=feats,
        feat_layout=IEMOCAP_FEATURES,
        rob=rob,
        rob_layout=IEMOCAP_ROBERTA if rob is not None else None,
        rob_label_field="labels",
        splits={"train": train, "val": val, "test": feats["testVid"]},
        val_source=_seeded_source(cfg),
    )


def parse_meld(
    features_tuple: Any,
    roberta_tuple: Any | None,
    cfg: DatasetConfig,
    name: str | None = None,
) -> Corpus:
    """A Corpus from the unpickled MELD tuples (10-tuple features, 11-tuple RoBERTa).

    ``trainVid`` holds train and dev dialogues; the RoBERTa file's ``validIds`` is the
    official dev split, so val = validIds, train = trainVid minus validIds, test = testVid.
    Without a RoBERTa file (legacy text) the dev ids are unknown and a seeded share of
    ``trainVid`` is held out instead; ``Corpus.val_source`` says which.
    """
    name = name or cfg.name
    feats = unpack(features_tuple, MELD_FEATURES)
    rob = unpack(roberta_tuple, MELD_ROBERTA) if roberta_tuple is not None else None
    if rob is not None and rob["validIds"]:
        dev = set(rob["validIds"])
        train = [d for d in feats["trainVid"] if d not in dev]
        val = list(rob["validIds"])
        val_source = "official dev split (validIds)"
    else:
        train, val = seeded_val_split(feats["trainVid"], cfg.val_fraction, cfg.data_seed)
        val_source = _seeded_source(cfg) + (
            "; the official dev split needs meld_features_roberta.pkl"
            if rob is None
            else "; validIds is empty"
        )
    return _build_corpus(
        cfg=cfg,
        name=name,
        layout_name="meld",
        feats=feats,
        feat_layout=MELD_FEATURES,
        rob=rob,
        rob_layout=MELD_ROBERTA if rob is not None else None,
        rob_label_field="emotion_labels",
        splits={"train": train, "val": val, "test": feats["testVid"]},
        val_source=val_source,
    )


_PARSERS = {"iemocap": parse_iemocap, "meld": parse_meld}


# --------------------------------------------------------------------------------------
# Files


def resolve_feature_files(
    cfg: DatasetConfig, data_dir: Path | None = None, yaml_dir: Path | None = None
) -> tuple[Path, Path]:
    """Paths of (features file, RoBERTa file) for a file-backed dataset.

    Relative names resolve against ``data_dir`` when given, else against the directory of the
    dataset's YAML file (``yaml_dir``), else against ``data/<cfg.name>``. Empty names in the
    config fall back to the community file names of the layout.
    """
    if cfg.layout not in FILE_NAMES:
        raise MRDError(f"Dataset '{cfg.name}' has layout '{cfg.layout}', which has no files.")
    if data_dir is not None:
        base = Path(data_dir)
    elif yaml_dir is not None:
        base = Path(yaml_dir)
    else:
        base = Path("data") / cfg.name
    default_features, default_roberta = FILE_NAMES[cfg.layout]
    names = (cfg.features_file or default_features, cfg.roberta_file or default_roberta)
    paths = tuple(Path(n) if Path(n).is_absolute() else base / n for n in names)
    return paths[0], paths[1]


def _missing_files_error(cfg: DatasetConfig, expected: list[Path]) -> MRDError:
    listed = "; ".join(f"{p} ({'found' if p.is_file() else 'missing'})" for p in expected)
    msg = (
        f"Feature files for dataset '{cfg.name}' not found: {listed}. Put the community "
        "feature files there, or pass --data-dir DIR pointing to the directory that holds them."
    )
    if cfg.layout in ("iemocap", "meld"):
        msg += (
            f" To try the pipeline without the real data, `mrd data synth --preset {cfg.layout} "
            "--out DIR` writes synthetic full-size files in the same layout; then pass "
            "--data-dir DIR."
        )
    return MRDError(msg)


def load_corpus(
    cfg: DatasetConfig, data_dir: Path | None = None, yaml_dir: Path | None = None
) -> Corpus:
    """The validated Corpus for ``cfg``: files read safely (or generated), parsed and checked."""
    if cfg.layout == "synthetic":
        preset = PRESETS[cfg.synthetic_preset]
        if len(cfg.label_names) != len(preset.label_names):
            cfg = dataclasses.replace(cfg, label_names=list(preset.label_names))
        layout, features, roberta = generate(cfg.synthetic_preset, cfg.data_seed)
        corpus = _PARSERS[layout](features, roberta, cfg, cfg.name)
        corpus.extra["synthetic_preset"] = cfg.synthetic_preset
    else:
        features_path, roberta_path = resolve_feature_files(cfg, data_dir, yaml_dir)
        need_roberta = cfg.text_features == "roberta"
        # A RoBERTa file named in the config must exist even where it is optional (MELD's
        # dev split): a typo must not quietly change the validation split.
        named = need_roberta or bool(cfg.roberta_file)
        expected = [features_path, roberta_path] if named else [features_path]
        if not all(p.is_file() for p in expected):
            raise _missing_files_error(cfg, expected)
        features = safe_load(features_path, _ENCODING)
        # MELD's dev split lives in the RoBERTa file: read it when present even for legacy
        # text, so that validation is the official dev split whenever it can be.
        read_roberta = need_roberta or (cfg.layout == "meld" and roberta_path.is_file())
        roberta = safe_load(roberta_path, _ENCODING) if read_roberta else None
        read = [features_path, roberta_path] if read_roberta else [features_path]
        size = sum(p.stat().st_size for p in read)
        token = ARRAY_BUDGET.set([expansion_budget(size)])
        try:
            corpus = _PARSERS[cfg.layout](features, roberta, cfg, cfg.name)
        finally:
            ARRAY_BUDGET.reset(token)
        corpus.extra["features_file"] = str(features_path)
        if read_roberta:
            corpus.extra["roberta_file"] = str(roberta_path)
    corpus.validate()
    return corpus
