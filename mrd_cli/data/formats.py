"""Read and write the community feature files (IEMOCAP and MELD).

``parse_iemocap`` / ``parse_meld`` turn the unpickled tuples into a ``Corpus``, checking the
layout as they go; ``load_corpus`` finds the files for a ``DatasetConfig``, reads them with
the restricted unpickler and dispatches on ``cfg.layout`` (the synthetic corpus is generated
in memory and goes through the same parsers). ``write_iemocap`` / ``write_meld`` write tuples
back under the community file names.
"""

from __future__ import annotations

import contextvars
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.config import DatasetConfig
from mrd_cli.data.corpus import Corpus, Dialogue
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
from mrd_cli.data.safe_pickle import expansion_budget, human_size, safe_load
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
# Checking and converting the pieces of a tuple


def _entry(fields: dict[str, Any], name: str, did: str, split: str, layout: TupleLayout) -> Any:
    try:
        return fields[name][did]
    except KeyError:
        raise MRDError(
            f"Dialogue '{did}' of the {split} split is missing from '{name}' in {layout.file}; "
            "the file is incomplete or its dicts and id lists come from different versions. "
            "Use a complete copy of the file."
        ) from None


# Bytes the features read from files may still take when lists become arrays: a pickle can
# list one row a million times (its memo), which costs nothing in the file and everything in
# memory. None: no budget (tuples built in memory).
_ARRAY_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "_ARRAY_BUDGET", default=None
)


def _charge_list(value: Any, did: str, modality: str, source: str) -> None:
    """Refuse a list of rows whose array would exceed what is left of the load's budget."""
    budget = _ARRAY_BUDGET.get()
    if budget is None or not isinstance(value, (list, tuple)):
        return
    first = value[0] if len(value) else None
    width = len(first) if hasattr(first, "__len__") else 1
    need = len(value) * max(width, 1) * 4
    budget[0] -= need
    if budget[0] < 0:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) would expand to "
            f"{human_size(need)}, beyond what the feature files' size allows; the file is "
            "corrupt or crafted (rows repeated by reference). Nothing was allocated. Use the "
            "feature files as distributed."
        )


def _matrix(value: Any, did: str, modality: str, source: str) -> np.ndarray:
    """One dialogue's features as float32 ``[n, d]`` (lists of lists, of arrays, or 2-D)."""
    _charge_list(value, did, modality, source)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) cannot be read as a numeric "
            f"[utterances, dim] array ({exc})."
        ) from None
    if x.ndim != 2:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) have shape {x.shape}, "
            "expected [utterances, dim]."
        )
    return x


def _labels(value: Any, did: str, source: str) -> np.ndarray:
    """One dialogue's labels as int64 (integral floats are accepted; some files store them)."""
    try:
        x = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise MRDError(
            f"Dialogue '{did}': the labels ({source}) are not readable ({exc})."
        ) from None
    integral = x.dtype.kind in "iu" or (
        x.dtype.kind == "f"
        and bool(np.isfinite(x).all())
        and bool((x == np.round(x)).all())
        # Beyond this the cast to int64 is undefined; no class index is that large anyway.
        and bool((np.abs(x) < 2**31).all())
    )
    if x.ndim != 1 or not integral:
        raise MRDError(
            f"Dialogue '{did}': the labels ({source}) must be one integer class index per "
            f"utterance, got {x.dtype} values of shape {x.shape}."
        )
    return x.astype(np.int64)


def _speaker_codes(value: Any, did: str, source: str) -> tuple[str, Any]:
    """Classify one dialogue's speakers: ("symbol", [symbols]) or ("vector", (idx, width)).

    IEMOCAP names speakers with symbols ('M', 'F'); MELD with one-hot vectors.
    """
    if isinstance(value, np.ndarray):
        if value.ndim == 2 and value.dtype.kind in "biuf":
            return "vector", (value.argmax(axis=1).astype(np.int64), value.shape[1])
        if value.ndim == 1:
            value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise MRDError(
            f"Dialogue '{did}': the speakers ({source}) must be a list with one entry per "
            f"utterance, got a {type(value).__name__}."
        )
    if all(_is_symbol(s) for s in value):
        return "symbol", list(value)
    try:
        vec = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        vec = np.zeros(0)
    if vec.ndim != 2 or vec.shape[1] == 0 or not np.isfinite(vec).all():
        raise MRDError(
            f"Dialogue '{did}': the speakers ({source}) must be one symbol (e.g. 'M') or one "
            "one-hot vector per utterance."
        )
    return "vector", (vec.argmax(axis=1).astype(np.int64), vec.shape[1])


def _is_symbol(s: Any) -> bool:
    return isinstance(s, (str, bytes, int, np.integer))


def _speaker_indices(raw: dict[str, tuple[str, Any]]) -> tuple[dict[str, np.ndarray], int, str]:
    """Map every dialogue's speakers to 0..S-1: symbols by their sorted set, vectors by argmax."""
    kinds = {kind for kind, _ in raw.values()}
    if len(kinds) > 1:
        raise MRDError(
            "Some dialogues give speakers as symbols and others as one-hot vectors; the file "
            "mixes two formats."
        )
    if kinds == {"vector"}:
        width = max(w for _, (_, w) in raw.values())
        return {did: idx for did, (_, (idx, _w)) in raw.items()}, width, f"one-hot ({width})"
    symbols = sorted(
        {s for _, syms in raw.values() for s in syms}, key=lambda s: (type(s).__name__, str(s))
    )
    index = {s: i for i, s in enumerate(symbols)}
    out = {
        did: np.array([index[s] for s in syms], dtype=np.int64) for did, (_, syms) in raw.items()
    }
    return out, max(len(symbols), 1), ", ".join(str(s) for s in symbols)


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
            labels = _labels(
                _entry(feats, "videoLabels", did, split, feat_layout), did, "videoLabels"
            )
            if rob is not None and rob_layout is not None:
                other = _labels(
                    _entry(rob, rob_label_field, did, split, rob_layout), did, rob_label_field
                )
                if other.shape != labels.shape or (other != labels).any():
                    raise MRDError(
                        f"Dialogue '{did}': the labels in {feat_layout.file} and "
                        f"{rob_layout.file} disagree; the two files come from different "
                        "sources or versions. Use files released together."
                    )
            raw_speakers[did] = _speaker_codes(
                _entry(feats, "videoSpeakers", did, split, feat_layout), did, "videoSpeakers"
            )
            features: dict[str, np.ndarray] = {}
            for m in wanted:
                if m == "text" and use_roberta:
                    assert rob is not None and rob_layout is not None
                    layers = [
                        _matrix(_entry(rob, f, did, split, rob_layout), did, "text", f)
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
                    features[m] = _matrix(
                        _entry(feats, field, did, split, feat_layout), did, m, field
                    )
            pending[did] = (labels, features)

    speakers, num_speakers, speaker_desc = _speaker_indices(raw_speakers)
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
        token = _ARRAY_BUDGET.set([expansion_budget(size)])
        try:
            corpus = _PARSERS[cfg.layout](features, roberta, cfg, cfg.name)
        finally:
            _ARRAY_BUDGET.reset(token)
        corpus.extra["features_file"] = str(features_path)
        if read_roberta:
            corpus.extra["roberta_file"] = str(roberta_path)
    corpus.validate()
    return corpus
