"""Recipe: run a trained checkpoint on new conversations (``mrd predict``).

The conversations come as CSV transcripts (``features/transcripts.py``; labels optional) or
as a feature file (a dataset YAML). Transcripts are encoded the way the checkpoint's own
corpus was built by ``mrd features``: the text encoder, its token limit, the audio feature
set and the speaker slots are read from that corpus's ``features_manifest.json``, and an
encoder whose files differ from the recorded ones is refused, as is any feature dimension
that does not fit the checkpoint. The model's input standardisation travels in its weights,
so nothing of the training data is needed beyond the manifest and the fingerprint check.

A prediction never reads a true label: labels, where given, only score the predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrd_cli.core.events import OnEvent, items
from mrd_cli.core.metrics import classification_report
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.training import EVAL_BATCH, batch_logits
from mrd_cli.data.corpus import Corpus, Dialogue
from mrd_cli.data.formats import average_roberta_layers
from mrd_cli.data.tensors import pad_dialogues
from mrd_cli.errors import MRDError

MANIFEST = "features_manifest.json"
MADE_BY = {"distill": "mrd distill", "selftrain": "mrd selftrain", "pretrain": "mrd pretrain"}
# A stage-less run directory is searched in this order: the last step's model first.
STAGE_ORDER = ("distill", "selftrain", "pretrain")

# (description, total) -> advance(n): ``core.events.items`` over the caller's on_event.
Progress = Callable[[str, int], Callable[[int], None]]


@dataclass
class CsvInput:
    """New conversations as CSV transcripts, read with ``mrd features``' layouts."""

    paths: list[Path]
    layout: str | None = None  # None: the layout the checkpoint's corpus was read with
    columns: dict[str, Any] = field(default_factory=dict)
    encoding: str = "utf-8"
    text_model: str | None = None  # None: the encoder of the manifest
    audio_dir: Path | None = None
    audio_pattern: str | None = None
    missing: str = "error"
    cache_dir: Path | None = None  # read only: prediction writes nothing but its output
    batch_size: int = 64


@dataclass
class FeatureInput:
    """Conversations of a feature file (a dataset YAML); ``split`` all, train, val or test."""

    dataset: str
    split: str = "all"
    data_dir: Path | None = None


@dataclass
class PredictResult:
    checkpoint: str
    stage: str
    role: str
    backbone: str
    dataset: str
    labels: list[str]
    source: dict[str, Any]
    utterances: list[dict[str, Any]]
    # Scores over the utterances that carry a label (None when none does).
    report: dict[str, Any] | None = None
    labelled: int = 0
    saved_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "stage": self.stage,
            "role": self.role,
            "backbone": self.backbone,
            "dataset": self.dataset,
            "labels": self.labels,
            "source": self.source,
            "num_utterances": len(self.utterances),
            "labelled_utterances": self.labelled,
            "report": self.report,
            "utterances": self.utterances,
            "saved_to": self.saved_to,
        }


def find_checkpoint(run: RunDir, role: str, stage: str | None) -> Path:
    """The checkpoint of ``role`` in a run directory: ``stage``'s, or the last step's."""
    if role not in ROLES:
        raise MRDError(f"--role must be one of {', '.join(ROLES)}, got {role!r}.")
    stages = dict(run.stages())
    order = [stage] if stage else list(STAGE_ORDER)
    for name in order:
        if name not in stages:
            raise MRDError(f"--stage must be one of {', '.join(STAGE_ORDER)}, got {name!r}.")
        path = stages[name](role)
        if path.is_file():
            return path
    wanted = f"{stage}/{role}.pt" if stage else f"{{{','.join(STAGE_ORDER)}}}/{role}.pt"
    raise MRDError(
        f"No checkpoint {wanted} in {run.root}. Train it first, or pass --checkpoint PATH."
    )


def read_manifest(corpus: Corpus) -> dict[str, Any] | None:
    """``features_manifest.json`` beside the corpus's feature file (None: not built by
    ``mrd features``, e.g. the synthetic corpus or community files)."""
    import json

    features = corpus.extra.get("features_file")
    if not features:
        return None
    path = Path(features).parent / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MRDError(
            f"{path} is not readable JSON; rebuild the corpus with `mrd features`."
        ) from None


def predict(
    session: Session,
    checkpoint: Path,
    source: CsvInput | FeatureInput,
    batch_size: int = EVAL_BATCH,
    on_event: OnEvent | None = None,
) -> PredictResult:
    """Predict every utterance of ``source`` with ``checkpoint`` (made from ``session``'s
    corpus: refused otherwise). ``on_event`` gets ``items`` events as texts are encoded,
    audio files read and dialogues predicted."""
    progress = items(on_event)
    stage = _stage_of(session.run, checkpoint)
    model, ckpt = session.load_model(checkpoint, MADE_BY[stage])
    spec = ckpt["model_spec"]
    labels = list(ckpt["label_names"])
    if isinstance(source, CsvInput):
        dialogues, rows, described = _from_csv(session, spec, labels, source, progress)
    else:
        dialogues, rows, described = _from_features(session, spec, labels, source)
    probs = _probabilities(model, dialogues, batch_size, progress)
    utterances = []
    for row, p in zip(rows, probs, strict=True):
        k = int(np.argmax(p))
        utterances.append(
            {
                **row,
                "predicted": labels[k],
                "probabilities": {n: float(v) for n, v in zip(labels, p, strict=True)},
            }
        )
    y = np.array([labels.index(r["label"]) if r["label"] else -1 for r in rows], dtype=np.int64)
    known = y >= 0
    report = None
    if known.any():
        y_pred = probs.argmax(1)
        report = classification_report(y[known], y_pred[known], labels)
    return PredictResult(
        checkpoint=str(checkpoint),
        stage=ckpt["stage"] if stage != "selftrain" else "selftrain",
        role=ckpt["role"],
        backbone=spec["backbone"],
        dataset=session.corpus.name,
        labels=labels,
        source=described,
        utterances=utterances,
        report=report,
        labelled=int(known.sum()),
    )


def _stage_of(run: RunDir, checkpoint: Path) -> str:
    for name, path_of in run.stages():
        if any(Path(checkpoint).resolve() == path_of(r).resolve() for r in ROLES):
            return name
    parent = Path(checkpoint).resolve().parent.name
    return parent if parent in MADE_BY else "pretrain"


@torch.no_grad()
def _probabilities(
    model: torch.nn.Module, dialogues: list[Dialogue], batch_size: int, progress: Progress
) -> np.ndarray:
    """Class probabilities [N, C] of every utterance, in ``dialogues`` order."""
    if batch_size < 1:
        raise MRDError(f"--batch-size must be at least 1, got {batch_size}.")
    device = next(model.parameters()).device
    data = pad_dialogues(dialogues, list(model.modalities)).to(device)
    advance = progress("Predicting", data.num_dialogues)

    def batches():
        for batch in data.batches(batch_size):
            yield batch
            advance(len(batch.index))

    logits = batch_logits(model, batches(), data.labels.shape)
    return torch.softmax(logits[data.mask], dim=-1).cpu().numpy()


# --------------------------------------------------------------------------------------
# CSV transcripts


def _from_csv(
    session: Session,
    spec: dict[str, Any],
    labels: list[str],
    source: CsvInput,
    progress: Progress,
) -> tuple[list[Dialogue], list[dict[str, Any]], dict[str, Any]]:
    from mrd_cli.features import require
    from mrd_cli.features.layouts import SourceSpec, key_id
    from mrd_cli.features.speakers import speaker_slot_of
    from mrd_cli.features.transcripts import UNLABELLED, read_transcripts

    manifest = read_manifest(session.corpus)
    if manifest is None:
        raise MRDError(
            f"The corpus '{session.corpus.name}' was not built by `mrd features` (no "
            f"{MANIFEST} beside its feature files), so how to encode new transcripts for this "
            "checkpoint is unknown. Pass conversations as a feature file (--features "
            "DATASET.yaml) instead."
        )
    require("transformers")
    layout = source.layout or manifest.get("csv_layout") or "generic"
    transcripts = read_transcripts(
        SourceSpec(layout=layout, columns=source.columns, encoding=source.encoding),
        source.paths,
        labels,
    )
    utterances = transcripts.utterances()
    missing = [m for m in spec["input_dims"] if m not in ("text", "audio")]
    if missing:
        raise MRDError(
            f"The checkpoint reads {', '.join(missing)} features, which CSV transcripts do not "
            "give; pass the conversations as a feature file (--features DATASET.yaml)."
        )
    names = list((manifest.get("speakers") or {}).get("names") or [])
    if len(names) != spec["num_speakers"]:
        raise MRDError(
            f"The checkpoint was built for {spec['num_speakers']} speaker slots, the corpus "
            f"manifest records {len(names)}. Rebuild the corpus or use its own checkpoint."
        )
    # Every check on the input before the slow steps (as `mrd features`).
    wavs = _audio_paths(manifest, source, transcripts) if "audio" in spec["input_dims"] else None
    text = _encode_text(manifest, spec, source, [u.text for u in utterances], progress)
    features: dict[str, np.ndarray] = {"text": text}
    if wavs is not None:
        features["audio"] = _extract_audio(manifest, spec, source, wavs, progress)
    dialogues, rows, start = [], [], 0
    for key, utts in transcripts.dialogues.items():
        n = len(utts)
        dialogues.append(
            Dialogue(
                id=key_id(key),
                speakers=np.array([speaker_slot_of(u.speakers, names) for u in utts]),
                labels=np.zeros(n, dtype=np.int64),  # never read: predictions ignore labels
                features={m: x[start : start + n] for m, x in features.items()},
            )
        )
        start += n
        for u in utts:
            rows.append(
                {
                    "dialogue": key_id(key),
                    "utterance": u.uid,
                    "speaker": ", ".join(u.speakers),
                    "text": u.text,
                    "label": labels[u.label] if u.label != UNLABELLED else "",
                }
            )
    described = {
        "kind": "csv",
        "files": transcripts.files,
        "layout": layout,
        "text_model": manifest["text"]["model"],
        "audio_features": (manifest.get("audio") or {}).get("feature_set")
        if "audio" in features
        else None,
    }
    return dialogues, rows, described


def _encode_text(
    manifest: dict[str, Any],
    spec: dict[str, Any],
    source: CsvInput,
    texts: list[str],
    progress: Progress,
) -> np.ndarray:
    """The text input of ``texts`` [N, d], as ``mrd features`` and the reader compute it."""
    from mrd_cli.features.text import EmbeddingCache, TextEncoder

    recorded = manifest["text"]
    model = source.text_model or recorded["model"]
    encoder = TextEncoder(model, int(recorded["max_tokens"]), source.batch_size)
    if encoder.model_hash != recorded["model_files_sha256"]:
        raise MRDError(
            f"The text encoder {model} differs from the one the checkpoint's corpus was built "
            f"with ({recorded['model']}, files sha256 {recorded['model_files_sha256'][:12]}…, "
            f"this one {encoder.model_hash[:12]}…); encode with that encoder (--text-model)."
        )
    dim = int(recorded["dim"])
    if spec["input_dims"].get("text") not in (None, dim):
        raise MRDError(
            f"The checkpoint expects text features of dimension {spec['input_dims']['text']}, "
            f"the encoder gives {dim}."
        )
    cache = None
    if source.cache_dir is not None:
        cache = EmbeddingCache(source.cache_dir, encoder.model_hash, encoder.max_tokens)
    advance = progress("Encoding text", len(set(texts)))
    layers = encoder.encode(texts, cache, advance)  # the cache is read, never saved here
    return average_roberta_layers([layers[:, k] for k in range(layers.shape[1])])


def _audio_paths(manifest: dict[str, Any], source: CsvInput, transcripts: Any) -> list[Path]:
    """The wav file of every utterance, checked to exist (unless ``--missing zeros``)."""
    from mrd_cli.features.audio import check_audio_files

    recorded = manifest.get("audio") or {}
    if not recorded:
        raise MRDError(
            "The checkpoint reads audio features but its corpus manifest records no audio "
            "feature set; rebuild the corpus with `mrd features --audio-dir`."
        )
    pattern = source.audio_pattern if source.audio_pattern is not None else recorded["pattern"]
    paths = []
    for key, u in ((k, u) for k, utts in transcripts.dialogues.items() for u in utts):
        if u.audio:  # as `mrd features`: relative to --audio-dir, else to the CSV's folder
            p = Path(u.audio)
            paths.append(p if p.is_absolute() else (source.audio_dir or transcripts.folders[key]) / p)
            continue
        if source.audio_dir is None or not pattern:
            raise MRDError(
                f"{u.where}: the checkpoint reads audio: give --audio-dir (and --audio-pattern) "
                "or an audio column."
            )
        try:
            name = pattern.format_map({"split": "", **u.fields})
        except (KeyError, IndexError, ValueError) as exc:
            raise MRDError(f"--audio-pattern {pattern!r} names {exc}, not a CSV column.") from None
        paths.append(source.audio_dir / name.strip().lstrip("/"))
    check_audio_files(paths, source.missing)
    return paths


def _extract_audio(
    manifest: dict[str, Any],
    spec: dict[str, Any],
    source: CsvInput,
    paths: list[Path],
    progress: Progress,
) -> np.ndarray:
    """openSMILE functionals of every utterance's wav, with the manifest's feature set."""
    from mrd_cli.features import require
    from mrd_cli.features.audio import extract_audio

    require("opensmile")
    feature_set = manifest["audio"]["feature_set"]
    advance = progress("Audio features", len(paths))
    audio, stats = extract_audio(paths, feature_set, source.missing, advance)
    if stats.dim != spec["input_dims"]["audio"]:
        raise MRDError(
            f"The checkpoint expects audio features of dimension {spec['input_dims']['audio']}, "
            f"openSMILE {feature_set} gives {stats.dim}."
        )
    return audio


# --------------------------------------------------------------------------------------
# Feature files


def _from_features(
    session: Session, spec: dict[str, Any], labels: list[str], source: FeatureInput
) -> tuple[list[Dialogue], list[dict[str, Any]], dict[str, Any]]:
    from mrd_cli.config import load_config
    from mrd_cli.data.formats import load_corpus
    from mrd_cli.features.layouts import key_id

    cfg, yaml_dir = load_config(source.dataset)
    corpus = load_corpus(cfg.dataset, source.data_dir, yaml_dir)
    if list(corpus.label_names) != labels:
        raise MRDError(
            f"{source.dataset} has the classes {', '.join(corpus.label_names)}, the checkpoint "
            f"{', '.join(labels)}."
        )
    dims = corpus.input_dims
    for m, d in spec["input_dims"].items():
        if m not in dims:
            raise MRDError(f"The checkpoint reads {m} features, which {source.dataset} lacks.")
        if dims[m] != d:
            raise MRDError(
                f"The checkpoint expects {m} features of dimension {d}, {source.dataset} has "
                f"{dims[m]}."
            )
    if corpus.num_speakers != spec["num_speakers"]:
        raise MRDError(
            f"The checkpoint was built for {spec['num_speakers']} speakers, {source.dataset} "
            f"has {corpus.num_speakers}."
        )
    theirs, ours = read_manifest(corpus), read_manifest(session.corpus)
    if theirs and ours:
        _same_encoding(theirs, ours, source.dataset)
    splits = ("train", "val", "test") if source.split == "all" else (source.split,)
    if any(s not in corpus.splits for s in splits):
        raise MRDError(f"--split must be all, train, val or test, got {source.split!r}.")
    names = list(((theirs or {}).get("speakers") or {}).get("names") or [])
    original = (theirs or {}).get("dialogues") or {}
    dialogues, rows = [], []
    for split in splits:
        for d in corpus.split(split):
            dialogues.append(d)
            raw = (original.get(d.id) or {}).get("dialogue", d.id)  # the CSV's id values
            key = key_id(tuple(raw)) if isinstance(raw, list) else str(raw)
            for i, (s, y) in enumerate(zip(d.speakers.tolist(), d.labels.tolist(), strict=True)):
                rows.append(
                    {
                        "dialogue": key,
                        "utterance": str(i),
                        "speaker": names[s] if s < len(names) else str(s),
                        "text": "",
                        "label": labels[y],
                        "split": split,
                    }
                )
    described = {"kind": "features", "dataset": source.dataset, "split": source.split}
    return dialogues, rows, described


def _same_encoding(theirs: dict[str, Any], ours: dict[str, Any], where: str) -> None:
    """Refuse a feature file encoded otherwise than the checkpoint's corpus."""
    a, b = theirs.get("text") or {}, ours.get("text") or {}
    if a.get("model_files_sha256") != b.get("model_files_sha256"):
        raise MRDError(
            f"{where} was encoded with the text encoder {a.get('model')}, the checkpoint's "
            f"corpus with {b.get('model')} (other model files); re-encode it with that one."
        )
    fa = (theirs.get("audio") or {}).get("feature_set")
    fb = (ours.get("audio") or {}).get("feature_set")
    if fa != fb:
        raise MRDError(
            f"{where} has the audio feature set {fa}, the checkpoint's corpus {fb}; re-encode "
            "it with the same set."
        )
