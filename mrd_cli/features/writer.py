"""Write encoded conversations as the two MELD-layout community pickles, a manifest and a
dataset YAML that ``--dataset`` takes as it is.

The files hold exactly the community container types: dicts keyed by int dialogue id, per
dialogue lists with one entry per utterance, int labels, numpy float32 vectors, one-hot
speaker lists. Dialogue ids are 0..D-1 in the order train, dev, test; the manifest maps each
back to its id in the CSV files.

- ``{name}_features.pkl``, the 10-tuple ``(videoIDs, videoSpeakers, videoLabels, videoText,
  videoAudio, videoVisual, videoSentence, trainVid, testVid, sentiment)``; trainVid holds the
  train and dev dialogues, like MELD's. ``videoText`` is the text input mrd computes (the
  layer-normalised mean of roberta1..4). A modality the corpus does not have (visual always;
  audio without --audio-dir) is a *placeholder*: one zero per utterance. It carries no
  signal, the dataset YAML does not declare it, and the manifest lists it.
- ``{name}_features_roberta.pkl``, the 11-tuple ``(speakers, emotion_labels,
  sentiment_labels, roberta1, roberta2, roberta3, roberta4, sentences, trainIds, testIds,
  validIds)``; validIds is the dev split, which mrd uses for validation. Sentiment labels are
  0 neutral, 1 positive, 2 negative, or -1 for every utterance when the CSV has none.

Every file is first written under a temporary name made by ``mkstemp`` (``mrd_cli/io.py``); they replace the targets only once all
are written, the dataset YAML last, so a failure leaves no mix of old and new files.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrd_cli.data.formats import average_roberta_layers
from mrd_cli.errors import MRDError
from mrd_cli.features.layouts import SPLITS, Conversations
from mrd_cli.features.speakers import speaker_slot_of
from mrd_cli.io import atomic_write_many

MANIFEST = "features_manifest.json"
PLACEHOLDER_DIM = 1


@dataclass
class EncodedCorpus:
    """Conversations plus their features, in ``Conversations.utterances()`` order."""

    conv: Conversations
    text_layers: np.ndarray  # [N, 4, d]
    audio: np.ndarray | None  # [N, a] or None (placeholder)
    speaker_names: list[str]  # slot names, last = others
    manifest: dict[str, Any] = field(default_factory=dict)


def file_names(name: str) -> tuple[str, str, str]:
    """(features pickle, roberta pickle, dataset YAML) file names for a corpus name."""
    return f"{name}_features.pkl", f"{name}_features_roberta.pkl", f"{name}.yaml"


def build_tuples(enc: EncodedCorpus) -> tuple[tuple, tuple, dict[int, dict[str, Any]]]:
    """The two community tuples and the map int id -> {split, source dialogue id}."""
    conv = enc.conv
    slots = len(enc.speaker_names)
    eye = np.eye(slots, dtype=np.int64)
    text_input = average_roberta_layers([enc.text_layers[:, k] for k in range(4)])
    n = enc.text_layers.shape[0]
    audio = enc.audio if enc.audio is not None else np.zeros((n, PLACEHOLDER_DIM), np.float32)
    visual = np.zeros((n, PLACEHOLDER_DIM), np.float32)

    ids: dict[str, list[int]] = {s: [] for s in SPLITS}
    source: dict[int, dict[str, Any]] = {}
    vid_ids: dict[int, list[str]] = {}
    speakers: dict[int, list[list[int]]] = {}
    labels: dict[int, list[int]] = {}
    sentiment: dict[int, list[int]] = {}
    sentences: dict[int, list[str]] = {}
    text: dict[int, list[np.ndarray]] = {}
    aud: dict[int, list[np.ndarray]] = {}
    vis: dict[int, list[np.ndarray]] = {}
    layers: list[dict[int, list[np.ndarray]]] = [{} for _ in range(4)]
    row = 0
    for split in SPLITS:
        for key in conv.splits[split]:
            did = len(source)
            utts = conv.dialogues[key]
            a, b = row, row + len(utts)
            row = b
            ids[split].append(did)
            source[did] = {"split": split, "dialogue": conv.source_id(key)}
            vid_ids[did] = [u.uid for u in utts]
            speakers[did] = [
                eye[speaker_slot_of(u.speakers, enc.speaker_names)].tolist() for u in utts
            ]
            labels[did] = [int(u.label) for u in utts]
            sentiment[did] = [int(u.sentiment) for u in utts]
            sentences[did] = [u.text for u in utts]
            text[did] = list(text_input[a:b])
            aud[did] = list(np.ascontiguousarray(audio[a:b], dtype=np.float32))
            vis[did] = list(visual[a:b])
            for k in range(4):
                layers[k][did] = list(np.ascontiguousarray(enc.text_layers[a:b, k]))
    if row != n:
        raise MRDError(f"Internal error: {n} feature rows for {row} utterances.")
    features = (
        vid_ids,
        speakers,
        labels,
        text,
        aud,
        vis,
        sentences,
        ids["train"] + ids["dev"],
        ids["test"],
        sentiment,
    )
    roberta = (
        speakers,
        labels,
        sentiment,
        *layers,
        sentences,
        ids["train"],
        ids["test"],
        ids["dev"],
    )
    return features, roberta, source


def dataset_yaml(enc: EncodedCorpus, modalities: list[str]) -> str:
    """The dataset YAML: comments for people, then the keys ``--dataset`` reads."""
    conv, m = enc.conv, enc.manifest
    feat_file, rob_file, _ = file_names(conv.name)
    placeholders = [x for x in ("audio", "visual") if x not in modalities]
    lines = [
        f"# {conv.name}: written by `mrd features` from the {conv.layout} CSV layout.",
        f"# Text: {m.get('text', {}).get('model', '?')} ({m.get('text', {}).get('dim', '?')}-d, "
        "mean over tokens of the last 4 layers -> roberta1..4).",
    ]
    if "audio" in modalities:
        lines.append(f"# Audio: openSMILE {m.get('audio', {}).get('feature_set')} functionals.")
    if placeholders:
        lines.append(
            f"# {' and '.join(placeholders).capitalize()}: NOT in this corpus. The pickles hold a "
            "placeholder (one zero per utterance) for community loaders;"
        )
        lines.append(
            "# it is not declared below, so mrd never reads it: M_multi sees "
            + (
                "the text alone (the same input as M_text)."
                if modalities == ["text"]
                else f"{' + '.join(modalities)}."
            )
        )
    lines += [
        "# Validation split: the CSV's dev split (validIds). Speakers: "
        f"{len(enc.speaker_names)} one-hot slots, see {MANIFEST}.",
        f"# Use: mrd run --dataset {conv.name}.yaml   (file names resolve against this folder)",
    ]
    body: dict[str, Any] = {
        "dataset": {
            "name": conv.name,
            "layout": "meld",
            "features_file": feat_file,
            "roberta_file": rob_file,
            "label_names": list(conv.label_names),
            "text_features": "roberta",
            "modalities": list(modalities),
        }
    }
    tuned = tuned_defaults(conv.layout, conv.label_names)
    text = "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)
    if tuned:
        text += (
            f"# The tuned defaults of `--dataset {conv.layout}` (configs/{conv.layout}.yaml), "
            "copied so that\n# this corpus trains like the built-in one; edit them here.\n"
            + yaml.safe_dump(tuned, sort_keys=False)
        )
    else:
        text += "# No tuned config for this layout: mrd's generic defaults apply.\n"
    return text


def tuned_defaults(layout: str, label_names: list[str]) -> dict[str, Any]:
    """Every section but ``dataset`` of the built-in config of ``layout`` (none for a layout
    without one); per-class settings only for classes this corpus has."""
    from mrd_cli.config import BUILTIN_DATASETS, builtin_config_path, read_yaml
    from mrd_cli.labels import label_key

    if layout not in BUILTIN_DATASETS:
        return {}
    doc = {k: v for k, v in read_yaml(builtin_config_path(layout)).items() if k != "dataset"}
    thresholds = (doc.get("selftrain") or {}).get("thresholds")
    if isinstance(thresholds, dict):
        keys = {label_key(n) for n in label_names}
        doc["selftrain"]["thresholds"] = {
            k: v for k, v in thresholds.items() if label_key(str(k)) in keys
        }
    return doc


def _pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickle.dump(obj, buffer, protocol=4)
    return buffer.getvalue()


def check_outputs(out: Path, name: str, force: bool) -> None:
    """Refuse an --out that is not a directory (or lies under a file), and (unless ``force``) files there that
    this dataset's `mrd features` did not write: any of its target files without a
    manifest, or a manifest of another dataset (its files would be mixed with ours)."""
    for folder in (out, *out.parents):  # --out, or a folder above it, may be a file
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "is" if folder == out else f"lies under {folder}, which is"
                raise MRDError(
                    f"--out {out} {where} a file, not a directory. Pass a directory (created)."
                )
            break
    if force or not out.is_dir():
        return
    targets = [out / f for f in file_names(name)]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    manifest = out / MANIFEST
    if not (manifest.exists() or manifest.is_symlink()):
        if existing:
            raise MRDError(
                f"{', '.join(str(p) for p in existing)} already exist(s) and were not written "
                "by `mrd features` (no manifest). Choose another --out or pass --force."
            )
        return
    owner = _manifest_name(manifest)
    if owner != name:
        what = f"of the dataset {owner!r}" if owner else "that cannot be read"
        raise MRDError(
            f"{out} holds a features manifest {what}, not of {name!r}: writing here would mix "
            "two datasets' files under one manifest. Choose another --out, or pass --force "
            "to replace it."
        )


def _manifest_name(path: Path) -> str | None:
    from mrd_cli.io import read_limited

    try:
        doc = json.loads(read_limited(path, 64 << 20, "features manifest"))
    except (MRDError, OSError, ValueError, UnicodeDecodeError):
        return None
    value = doc.get("name") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def write_all(out: Path, enc: EncodedCorpus, modalities: list[str]) -> list[Path]:
    """Write both pickles, the manifest and the dataset YAML (see the module docstring)."""
    features, roberta, source = build_tuples(enc)
    feat_file, rob_file, yaml_file = file_names(enc.conv.name)
    enc.manifest["dialogues"] = {str(k): v for k, v in source.items()}
    enc.manifest["files"] = {
        "features": feat_file,
        "roberta": rob_file,
        "dataset_yaml": yaml_file,
    }
    payloads = [
        (out / feat_file, _pickle(features)),
        (out / rob_file, _pickle(roberta)),
        (out / MANIFEST, (json.dumps(enc.manifest, indent=2) + "\n").encode()),
        (out / yaml_file, dataset_yaml(enc, modalities).encode()),
    ]
    atomic_write_many(payloads)
    return [target for target, _ in payloads]
